//! The HTTP request path: head parsing and body framing on arbitrary bytes.
//! Must never panic; a complete head's spans must lie inside the head, and
//! a chunked body must decode the same however the input is split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uringnotes::http::body::ChunkedDecoder;
use uringnotes::http::request::{parse_head, BodyFraming, HeadLimits, HeadStatus};

const LIMITS: HeadLimits = HeadLimits {
    header_bytes_max: 16 * 1024,
    uri_bytes_max: 8 * 1024,
    body_bytes_max: 64 * 1024,
};

fuzz_target!(|data: &[u8]| {
    let Ok(HeadStatus::Complete(head)) = parse_head(data, &LIMITS) else {
        return;
    };
    assert!(head.head_bytes <= data.len());
    let raw = &data[..head.head_bytes];
    let _ = head.path.get(raw);
    if let Some(q) = head.query {
        let _ = q.get(raw);
    }
    let rest = &data[head.head_bytes..];
    match head.body {
        BodyFraming::Length(n) => assert!(n <= LIMITS.body_bytes_max),
        BodyFraming::Chunked => {
            let mut whole = ChunkedDecoder::new(LIMITS.body_bytes_max);
            let mut out_whole = Vec::new();
            let whole_result = whole.decode(rest, &mut out_whole);
            // The same bytes one at a time must give the same outcome.
            let mut split = ChunkedDecoder::new(LIMITS.body_bytes_max);
            let mut out_split = Vec::new();
            let mut consumed = 0;
            let mut failed = false;
            for b in rest {
                if split.is_done() {
                    break;
                }
                match split.decode(std::slice::from_ref(b), &mut out_split) {
                    Ok(n) => consumed += n,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            match whole_result {
                Ok(n) => {
                    assert!(!failed);
                    assert_eq!(whole.is_done(), split.is_done());
                    assert_eq!(out_whole, out_split);
                    if whole.is_done() {
                        assert_eq!(n, consumed);
                    }
                }
                Err(_) => assert!(failed),
            }
            assert!(out_whole.len() <= LIMITS.body_bytes_max);
        }
        BodyFraming::None => {}
    }
});
