//! The peer protocol's clear framing (the handshake's) and every message
//! payload, on arbitrary bytes. Must never panic or allocate without bound.
//! (The sealed transport has its own target, `sealed_frame`.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use uringnotes::cluster::frame::{self, Decoded, FrameKind};
use uringnotes::cluster::wire;

fn payloads(kind: FrameKind, payload: &[u8]) {
    match kind {
        FrameKind::Hello => {
            if let Ok(h) = wire::Hello::decode(payload) {
                assert_eq!(wire::Hello::decode(&h.encode()).unwrap(), h);
            }
        }
        FrameKind::Answer => {
            if let Ok(a) = wire::Answer::decode(payload) {
                assert_eq!(wire::Answer::decode(&a.encode()).unwrap(), a);
            }
        }
        FrameKind::Vector => {
            if let Ok(v) = wire::Vector::decode(payload) {
                assert_eq!(wire::Vector::decode(&v.encode()).unwrap(), v);
            }
        }
        FrameKind::Notes => {
            if let Ok(notes) = wire::decode_notes(payload) {
                for n in notes {
                    let _ = uringnotes::store::note::access(n);
                }
            }
        }
        FrameKind::DispatchRequest => {
            let _ = wire::DispatchRequest::decode(payload);
        }
        FrameKind::DispatchResponse => {
            let _ = wire::DispatchResponse::decode(payload);
        }
        FrameKind::Holes => {
            if let Ok(h) = wire::Holes::decode(payload) {
                assert!(h.ranges.iter().all(|r| 1 <= r.first && r.first <= r.last));
                assert_eq!(wire::Holes::decode(&h.encode()).unwrap(), h);
            }
        }
        FrameKind::Confirm | FrameKind::Refuse => {}
    }
}

fuzz_target!(|data: &[u8]| {
    // As a stream of frames.
    let mut rest = data;
    while let Ok(Decoded::Frame { kind, payload, total_bytes, .. }) = frame::decode(rest) {
        payloads(kind, payload);
        rest = &rest[total_bytes..];
    }
    // And as bare payloads of each kind, so the decoders see raw input too.
    if let Some((&k, body)) = data.split_first() {
        let kinds = [
            FrameKind::Hello,
            FrameKind::Answer,
            FrameKind::Vector,
            FrameKind::Notes,
            FrameKind::DispatchRequest,
            FrameKind::DispatchResponse,
            FrameKind::Holes,
        ];
        payloads(kinds[k as usize % kinds.len()], body);
    }
});
