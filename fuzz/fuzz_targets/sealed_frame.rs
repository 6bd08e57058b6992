//! The sealed transport's decoder (`cluster/seal.rs`, `Opener::open`) on
//! bytes off the wire. Two properties:
//! - raw bytes: it never panics, never takes more than it was given, and
//!   never delivers a frame (nobody without the keys can make one);
//! - a valid sealed stream damaged as the input says (a byte flipped, a
//!   record replayed or dropped, the stream cut, read in pieces of any
//!   size): every frame it delivers is one that was sealed, in order, and
//!   an undamaged stream delivers all of them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uringnotes::cluster::auth::Cookie;
use uringnotes::cluster::frame::FrameKind;
use uringnotes::cluster::seal::{self, Opener, Session};

const KINDS: [FrameKind; 5] = [
    FrameKind::Vector,
    FrameKind::Notes,
    FrameKind::DispatchRequest,
    FrameKind::DispatchResponse,
    FrameKind::Holes,
];

fn handshake() -> (Session, Session) {
    seal::session_pair(&Cookie::from_bytes(b"fuzz-cookie-0123456789abcdef")).expect("handshake")
}

/// A sender and a receiver at record 0: under `cargo fuzz`, the halves of
/// one handshake rewound (a handshake per input is most of the time spent).
#[cfg(fuzzing)]
fn sessions() -> (Session, Session) {
    thread_local! {
        static PAIR: (Session, Session) = handshake();
    }
    PAIR.with(|(a, b)| (a.rewound(), b.rewound()))
}

#[cfg(not(fuzzing))]
fn sessions() -> (Session, Session) {
    handshake()
}

/// Feeds `wire` in pieces of `step` bytes; returns the frames delivered
/// and whether the opener refused the stream.
fn open_all(opener: &mut Opener, wire: &[u8], step: usize) -> (Vec<(FrameKind, Vec<u8>)>, bool) {
    let mut frames = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    for piece in wire.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match opener.open(&buf) {
                Err(_) => return (frames, true),
                Ok(o) => {
                    assert!(o.consumed <= buf.len());
                    buf.drain(..o.consumed);
                    match o.frame {
                        Some(f) => frames.push(f),
                        None => break,
                    }
                }
            }
        }
    }
    (frames, false)
}

/// Splits a sealed stream into its records.
fn records(wire: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 2 <= wire.len() {
        let n = 2 + u16::from_le_bytes([wire[at], wire[at + 1]]) as usize;
        out.push(&wire[at..at + n]);
        at += n;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (mut tx, mut rx) = sessions();
    if mode % 4 == 3 {
        // Raw bytes off the wire.
        let (frames, _) = open_all(&mut rx.opener, rest, (1 + rest.len() % 97).max(rest.len() / 256));
        assert!(frames.is_empty(), "a frame opened from bytes nobody sealed");
        return;
    }
    // Build a stream of a few frames whose kinds and sizes come from the input.
    let mut sealed = Vec::new();
    let mut wire = Vec::new();
    let mut it = rest.iter().copied();
    let count = 1 + it.next().unwrap_or(0) as usize % 4;
    for i in 0..count {
        let kind = KINDS[it.next().unwrap_or(0) as usize % KINDS.len()];
        let size_hint = it.next().unwrap_or(0) as usize;
        // Mostly small, sometimes spanning several records.
        let size = if size_hint > 250 { 65_500 + size_hint * 10 } else { size_hint * 3 };
        let payload: Vec<u8> = (0..size).map(|b| (b + i) as u8).collect();
        tx.sealer.seal(kind, &payload, &mut wire).expect("seal");
        sealed.push((kind, payload));
    }
    // Read sizes from one byte up; at most 256 reads per stream, so big
    // frames do not cost a call per byte.
    let step = (1 + it.next().unwrap_or(0) as usize * 61).max(wire.len() / 256);
    let damaged = match mode % 4 {
        0 => false,
        1 => {
            // Flip a bit somewhere.
            let at = (it.next().unwrap_or(0) as usize * 7919 + it.next().unwrap_or(0) as usize) % wire.len();
            wire[at] ^= 1 << (it.next().unwrap_or(0) % 8);
            true
        }
        _ => {
            // Replay, drop or cut at a record.
            let recs: Vec<Vec<u8>> = records(&wire).into_iter().map(<[u8]>::to_vec).collect();
            let r = it.next().unwrap_or(0) as usize % recs.len();
            let mut out: Vec<u8> = Vec::new();
            match it.next().unwrap_or(0) % 3 {
                0 => {
                    for (i, rec) in recs.iter().enumerate() {
                        out.extend_from_slice(rec);
                        if i == r {
                            out.extend_from_slice(rec);
                        }
                    }
                }
                1 => {
                    for (i, rec) in recs.iter().enumerate() {
                        if i != r {
                            out.extend_from_slice(rec);
                        }
                    }
                }
                _ => {
                    for rec in &recs[..r] {
                        out.extend_from_slice(rec);
                    }
                }
            }
            wire = out;
            true
        }
    };
    let (frames, refused) = open_all(&mut rx.opener, &wire, step);
    assert!(frames.len() <= sealed.len());
    for (got, want) in frames.iter().zip(&sealed) {
        assert_eq!(got, want, "a delivered frame differs from the one sealed");
    }
    if !damaged {
        assert!(!refused);
        assert_eq!(frames.len(), sealed.len(), "an undamaged stream delivers every frame");
    }
});
