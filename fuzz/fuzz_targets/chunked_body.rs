//! The chunked request body decoder (`http/body.rs`) on its own, where the
//! HTTP target reaches it only behind a complete chunked head. Properties:
//! - never a panic, never more output than the body limit;
//! - the outcome does not depend on how the input is split into reads (the
//!   connection feeds the decoder whatever each `recv` returned);
//! - any body, chunked with any chunk sizes, decodes back to itself and
//!   stops exactly at its end (the bytes of a pipelined request are left);
//! - skipping a body (the bench client's role, `BodyDecoder` without an
//!   output buffer) consumes exactly what keeping it does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uringnotes::http::body::{BodyDecoder, ChunkedDecoder};

const BODY_BYTES_MAX: usize = 4096;

/// Feeds `input` in pieces of `step` bytes; (result, output) like one call.
fn decode_in_pieces(input: &[u8], step: usize) -> (Result<usize, u16>, Vec<u8>, bool) {
    let mut d = ChunkedDecoder::new(BODY_BYTES_MAX);
    let mut out = Vec::new();
    let mut consumed = 0;
    for piece in input.chunks(step) {
        if d.is_done() {
            break;
        }
        match d.decode(piece, &mut out) {
            Ok(n) => {
                assert!(n <= piece.len());
                consumed += n;
                if n < piece.len() {
                    // Stopped early: only once the body is complete.
                    assert!(d.is_done(), "consumed {n} of {} without finishing", piece.len());
                }
            }
            Err(e) => return (Err(e.status()), out, false),
        }
        assert!(out.len() <= BODY_BYTES_MAX);
    }
    (Ok(consumed), out, d.is_done())
}

/// Skips `input` (no output kept, no limit) like the bench client does:
/// bytes consumed and whether the body is complete, or the error status.
fn skip(input: &[u8]) -> Result<(usize, bool), u16> {
    let mut d = BodyDecoder::Chunked(ChunkedDecoder::new(usize::MAX));
    let n = d.decode(input, None).map_err(|e| e.status())?;
    Ok((n, d.is_done()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    // Arbitrary bytes: whole, byte by byte, and in pieces of a chosen size
    // must agree on the outcome, the body and whether it is complete.
    let whole = decode_in_pieces(rest, rest.len().max(1));
    for step in [1, (ctl as usize % 61) + 2] {
        let split = decode_in_pieces(rest, step);
        match (&whole.0, &split.0) {
            (Ok(a), Ok(b)) => {
                assert_eq!(whole.2, split.2, "done differs at step {step}");
                assert_eq!(whole.1, split.1, "body differs at step {step}");
                if whole.2 {
                    assert_eq!(a, b, "consumed differs at step {step}");
                }
            }
            (Err(a), Err(b)) => assert_eq!(a, b, "status differs at step {step}"),
            (a, b) => panic!("whole {a:?} but split by {step} {b:?}"),
        }
    }

    // The skipping role agrees with the keeping one wherever the body limit
    // does not decide (a refusal at 413 is the keeping role's alone).
    match (&whole.0, skip(rest)) {
        (Ok(kept), Ok((skipped, done))) => {
            assert_eq!(whole.2, done, "done differs when skipping");
            if done {
                assert_eq!(*kept, skipped, "consumed differs when skipping");
            }
        }
        (Err(413), _) => {}
        (Err(a), Err(b)) if *a == b => {}
        (a, b) => panic!("keeping {a:?} but skipping {b:?}"),
    }

    // Round trip: `rest` as a body (cut to the limit), chunked with chunk
    // sizes from `ctl`, an extension now and then, then a pipelined request.
    let body = &rest[..rest.len().min(BODY_BYTES_MAX)];
    let chunk_bytes = (ctl as usize % 37) + 1;
    let mut wire = Vec::new();
    for (i, c) in body.chunks(chunk_bytes).enumerate() {
        if ctl & 0x80 != 0 && i % 3 == 0 {
            wire.extend_from_slice(format!("{:X};ext=v{i}\r\n", c.len()).as_bytes());
        } else {
            wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        }
        wire.extend_from_slice(c);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n");
    if ctl & 0x40 != 0 {
        wire.extend_from_slice(b"X-Trailer: 1\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    let body_end = wire.len();
    wire.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    for step in [wire.len(), 1, chunk_bytes + 1] {
        let (result, out, done) = decode_in_pieces(&wire, step);
        assert_eq!(result, Ok(body_end), "step {step}");
        assert!(done);
        assert_eq!(out, body, "step {step}");
    }
    assert_eq!(skip(&wire), Ok((body_end, true)));
});
