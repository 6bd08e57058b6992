//! The sealed transport: how every frame after the handshake travels,
//! encrypted and authenticated.
//!
//! The handshake (`handshake.rs`) ends with a Noise transport state: one
//! ChaCha20-Poly1305 key per direction, fresh for the connection. A frame
//! (kind, payload) is sealed as one or more *records*:
//!
//! ```text
//! record:    | length: u16 LE | Noise transport message: ciphertext + 16-byte tag |
//! plaintext of a frame's records, concatenated:
//!            | kind: u8 | payload length: u32 LE | payload |
//! ```
//!
//! A Noise message is at most 65,535 bytes, so a frame longer than one
//! record's [`RECORD_PLAINTEXT_BYTES_MAX`] continues in the next records;
//! every frame starts a new record. Record `n` of a direction is sealed
//! under nonce `n` (0, 1, 2, ...), which both sides count, so a record
//! that was altered, injected, replayed, reordered or dropped fails to open
//! ([`SealError::Forged`]) and the connection ends there. The frame header
//! (kind, length) is inside the authenticated plaintext, so a stream cut
//! between records leaves an incomplete frame, which is never delivered.
//!
//! [`Opener::open`] is two-pass in the house style: it consumes whole
//! records only, returns a frame only once all of it has been opened, and
//! checks the kind and the length (at most the opener's limit) in the first
//! record, before buffering the rest. Nothing it is given can make it panic
//! or allocate beyond one frame of its limit.

use std::rc::Rc;

use snow::StatelessTransportState;

use super::auth::{Cookie, KEY_BYTES};
use super::frame::{FrameKind, FRAME_PAYLOAD_BYTES_MAX};

/// The Noise protocol of peer connections (see ARCHITECTURE.md, "Peer
/// protocol", for why this one): no static keys, the pre-shared key mixed
/// in before the first message, ephemeral X25519, ChaCha20-Poly1305, SHA-256.
pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_SHA256";
/// Mixed into the handshake hash: a transcript of another protocol or
/// version can never complete as this one.
pub const NOISE_PROLOGUE: &[u8] = b"uringnotes peer protocol 2";
/// Bytes of the authentication tag of every Noise message.
pub const TAG_BYTES: usize = 16;
/// Largest Noise message (the Noise specification's limit).
pub const NOISE_MESSAGE_BYTES_MAX: usize = 65_535;
/// Bytes of a record's length prefix.
pub const RECORD_LENGTH_BYTES: usize = 2;
/// Largest plaintext one record carries.
pub const RECORD_PLAINTEXT_BYTES_MAX: usize = NOISE_MESSAGE_BYTES_MAX - TAG_BYTES;
/// Largest record on the wire, prefix included: the read buffer's bound.
pub const RECORD_BYTES_MAX: usize = RECORD_LENGTH_BYTES + NOISE_MESSAGE_BYTES_MAX;
/// Bytes of the frame header at the start of a frame's first record.
pub const SEALED_HEADER_BYTES: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("record {record} failed authentication (altered, injected, replayed, reordered or after a lost record)")]
    Forged { record: u64 },
    #[error("record {record} of {bytes} bytes is shorter than its {TAG_BYTES}-byte tag")]
    RecordTooShort { record: u64, bytes: usize },
    #[error("record {record} starts a frame but holds only {bytes} of the {SEALED_HEADER_BYTES} header bytes")]
    ShortHeader { record: u64, bytes: usize },
    #[error("record {record} continues a frame with no bytes")]
    EmptyRecord { record: u64 },
    #[error("sealed frame of unknown kind {0}")]
    UnknownKind(u8),
    #[error("{0:?} frame inside the sealed stream")]
    NotSealedKind(FrameKind),
    #[error("sealed frame of {bytes} bytes exceeds the {limit}-byte limit")]
    TooLarge { bytes: usize, limit: usize },
    #[error("record {record} runs {bytes} bytes past the end of its frame")]
    Trailing { record: u64, bytes: usize },
    #[error("the connection's nonces are exhausted")]
    Exhausted,
}

/// The sending half: seals frames under consecutive nonces.
pub struct Sealer {
    transport: Rc<StatelessTransportState>,
    /// Nonce of the next record (= records sealed so far).
    nonce: u64,
    /// The first record's plaintext (frame header and the payload's start).
    scratch: Vec<u8>,
}

impl Sealer {
    /// Appends `kind` and `payload` to `out` as sealed records.
    ///
    /// Panics if `payload` exceeds [`FRAME_PAYLOAD_BYTES_MAX`]: every
    /// message built here stays below it by construction (its own limits).
    pub fn seal(
        &mut self,
        kind: FrameKind,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SealError> {
        assert!(
            payload.len() <= FRAME_PAYLOAD_BYTES_MAX,
            "sealed frame payload of {} bytes exceeds the limit",
            payload.len()
        );
        debug_assert!(kind.is_sealed(), "{kind:?} is a handshake frame");
        let first = payload
            .len()
            .min(RECORD_PLAINTEXT_BYTES_MAX - SEALED_HEADER_BYTES);
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.push(kind as u8);
        scratch.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        scratch.extend_from_slice(&payload[..first]);
        let sealed = self.record(&scratch, out);
        self.scratch = scratch;
        sealed?;
        for chunk in payload[first..].chunks(RECORD_PLAINTEXT_BYTES_MAX) {
            self.record(chunk, out)?;
        }
        Ok(())
    }

    fn record(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        debug_assert!(plaintext.len() <= RECORD_PLAINTEXT_BYTES_MAX);
        if self.nonce == u64::MAX {
            return Err(SealError::Exhausted);
        }
        let sealed_bytes = plaintext.len() + TAG_BYTES;
        out.extend_from_slice(&(sealed_bytes as u16).to_le_bytes());
        let start = out.len();
        out.resize(start + sealed_bytes, 0);
        let written = self
            .transport
            .write_message(self.nonce, plaintext, &mut out[start..])
            .map_err(|_| SealError::Exhausted)?;
        debug_assert_eq!(written, sealed_bytes);
        self.nonce += 1;
        Ok(())
    }

    /// Records sealed so far.
    pub fn records(&self) -> u64 {
        self.nonce
    }
}

/// A frame being opened: its first record has arrived, not all of it yet.
struct Pending {
    kind: FrameKind,
    payload_bytes: usize,
    payload: Vec<u8>,
}

/// The receiving half: opens records under consecutive nonces and
/// reassembles frames.
pub struct Opener {
    transport: Rc<StatelessTransportState>,
    /// Nonce the next record must have been sealed under.
    nonce: u64,
    pending: Option<Pending>,
    /// Largest frame payload accepted now (lower during the handshake).
    payload_bytes_max: usize,
    /// One record's plaintext.
    scratch: Vec<u8>,
}

/// What [`Opener::open`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    /// Bytes of the input taken (whole records only).
    pub consumed: usize,
    /// A complete frame, if one was finished.
    pub frame: Option<(FrameKind, Vec<u8>)>,
}

impl Opener {
    /// Opens the whole records at the start of `buf` until one frame is
    /// complete or no whole record is left. After an error the opener
    /// must not be used again (the connection is dropped).
    pub fn open(&mut self, buf: &[u8]) -> Result<Opened, SealError> {
        let mut consumed = 0;
        loop {
            let rest = &buf[consumed..];
            if rest.len() < RECORD_LENGTH_BYTES {
                return Ok(Opened {
                    consumed,
                    frame: None,
                });
            }
            let sealed_bytes = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
            let record = self.nonce;
            if sealed_bytes < TAG_BYTES {
                return Err(SealError::RecordTooShort {
                    record,
                    bytes: sealed_bytes,
                });
            }
            let Some(sealed) = rest.get(RECORD_LENGTH_BYTES..RECORD_LENGTH_BYTES + sealed_bytes)
            else {
                return Ok(Opened {
                    consumed,
                    frame: None,
                });
            };
            if self.nonce == u64::MAX {
                return Err(SealError::Exhausted);
            }
            self.scratch.resize(sealed_bytes - TAG_BYTES, 0);
            let plain_bytes = self
                .transport
                .read_message(self.nonce, sealed, &mut self.scratch)
                .map_err(|_| SealError::Forged { record })?;
            self.nonce += 1;
            consumed += RECORD_LENGTH_BYTES + sealed_bytes;
            let scratch = std::mem::take(&mut self.scratch);
            let taken = self.take_record(record, &scratch[..plain_bytes]);
            self.scratch = scratch;
            if let Some(frame) = taken? {
                return Ok(Opened {
                    consumed,
                    frame: Some(frame),
                });
            }
        }
    }

    /// Adds one opened record to the frame it belongs to.
    fn take_record(
        &mut self,
        record: u64,
        plain: &[u8],
    ) -> Result<Option<(FrameKind, Vec<u8>)>, SealError> {
        let mut pending = match self.pending.take() {
            Some(p) => {
                if plain.is_empty() {
                    return Err(SealError::EmptyRecord { record });
                }
                let mut p = p;
                p.payload.extend_from_slice(plain);
                p
            }
            None => {
                if plain.len() < SEALED_HEADER_BYTES {
                    return Err(SealError::ShortHeader {
                        record,
                        bytes: plain.len(),
                    });
                }
                let kind = FrameKind::from_u8(plain[0]).ok_or(SealError::UnknownKind(plain[0]))?;
                if !kind.is_sealed() {
                    return Err(SealError::NotSealedKind(kind));
                }
                let payload_bytes =
                    u32::from_le_bytes([plain[1], plain[2], plain[3], plain[4]]) as usize;
                if payload_bytes > self.payload_bytes_max {
                    return Err(SealError::TooLarge {
                        bytes: payload_bytes,
                        limit: self.payload_bytes_max,
                    });
                }
                let body = &plain[SEALED_HEADER_BYTES..];
                // The claim is authenticated (it opened under the
                // connection's key) and within the limit: room for all of
                // it at once, instead of growing once per record.
                let mut payload = Vec::with_capacity(payload_bytes);
                payload.extend_from_slice(body);
                Pending {
                    kind,
                    payload_bytes,
                    payload,
                }
            }
        };
        if pending.payload.len() > pending.payload_bytes {
            return Err(SealError::Trailing {
                record,
                bytes: pending.payload.len() - pending.payload_bytes,
            });
        }
        if pending.payload.len() == pending.payload_bytes {
            return Ok(Some((pending.kind, std::mem::take(&mut pending.payload))));
        }
        self.pending = Some(pending);
        Ok(None)
    }

    /// True while part of a frame has been opened and the rest is missing
    /// (the stream ending now cuts a frame).
    pub fn in_frame(&self) -> bool {
        self.pending.is_some()
    }

    /// Sets the largest frame payload accepted from now on.
    pub fn limit_payload(&mut self, bytes: usize) {
        self.payload_bytes_max = bytes.min(FRAME_PAYLOAD_BYTES_MAX);
    }

    /// Records opened so far.
    pub fn records(&self) -> u64 {
        self.nonce
    }
}

/// Both halves of one side of a connection.
pub struct Session {
    pub sealer: Sealer,
    pub opener: Opener,
}

impl Session {
    /// Splits a finished handshake's transport state into its two halves.
    pub fn new(transport: StatelessTransportState) -> Session {
        Session::from_shared(Rc::new(transport))
    }
}

impl Session {
    /// Both halves again at record 0, over the same keys: one handshake for
    /// millions of fuzz inputs. Built only for fuzzing (`cargo fuzz` sets
    /// `cfg(fuzzing)`): in a real connection a rewound half would reuse
    /// nonces (the sender) or take replays (the receiver).
    #[cfg(fuzzing)]
    #[doc(hidden)]
    pub fn rewound(&self) -> Session {
        Session::from_shared(Rc::clone(&self.sealer.transport))
    }

    fn from_shared(transport: Rc<StatelessTransportState>) -> Session {
        Session {
            sealer: Sealer {
                transport: Rc::clone(&transport),
                nonce: 0,
                scratch: Vec::new(),
            },
            opener: Opener {
                transport,
                nonce: 0,
                pending: None,
                payload_bytes_max: FRAME_PAYLOAD_BYTES_MAX,
                scratch: Vec::new(),
            },
        }
    }
}

/// Runs the Noise handshake between two in-memory parties with `cookie`
/// and returns (initiator, acceptor) sessions: for tests, fuzzing and
/// benchmarks of the sealed transport without sockets.
pub fn session_pair(cookie: &Cookie) -> Result<(Session, Session), snow::Error> {
    fn builder(psk: &[u8; KEY_BYTES]) -> Result<snow::Builder<'_>, snow::Error> {
        let params: snow::params::NoiseParams = NOISE_PARAMS.parse()?;
        snow::Builder::new(params)
            .prologue(NOISE_PROLOGUE)?
            .psk(0, psk)
    }
    let psk = *cookie.peer_psk();
    let mut initiator = builder(&psk)?.build_initiator()?;
    let mut acceptor = builder(&psk)?.build_responder()?;
    let mut msg = vec![0u8; NOISE_MESSAGE_BYTES_MAX];
    let mut payload = vec![0u8; NOISE_MESSAGE_BYTES_MAX];
    let n = initiator.write_message(&[], &mut msg)?;
    acceptor.read_message(&msg[..n], &mut payload)?;
    let n = acceptor.write_message(&[], &mut msg)?;
    initiator.read_message(&msg[..n], &mut payload)?;
    Ok((
        Session::new(initiator.into_stateless_transport_mode()?),
        Session::new(acceptor.into_stateless_transport_mode()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Session, Session) {
        session_pair(&Cookie::from_bytes(b"seal-test-cookie-0123456789")).unwrap()
    }

    /// Feeds `wire` to `opener` in pieces of `step` bytes, as reads would.
    fn open_all(
        opener: &mut Opener,
        wire: &[u8],
        step: usize,
    ) -> Result<Vec<(FrameKind, Vec<u8>)>, SealError> {
        let mut frames = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        for piece in wire.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                let opened = opener.open(&buf)?;
                buf.drain(..opened.consumed);
                match opened.frame {
                    Some(f) => frames.push(f),
                    None => break,
                }
            }
        }
        Ok(frames)
    }

    /// An opener at record 0 for the same direction as `s.opener`.
    fn fresh_opener(s: &Session) -> Opener {
        Opener {
            transport: Rc::clone(&s.opener.transport),
            nonce: 0,
            pending: None,
            payload_bytes_max: FRAME_PAYLOAD_BYTES_MAX,
            scratch: Vec::new(),
        }
    }

    fn big(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn frames_of_every_size_round_trip_in_any_read_pattern() {
        let sizes = [
            0,
            1,
            100,
            RECORD_PLAINTEXT_BYTES_MAX - SEALED_HEADER_BYTES,
            RECORD_PLAINTEXT_BYTES_MAX - SEALED_HEADER_BYTES + 1,
            3 * RECORD_PLAINTEXT_BYTES_MAX,
            300_000,
        ];
        for step in [1, 7, 4096, 1 << 20] {
            let (mut a, mut b) = pair();
            let mut wire = Vec::new();
            for (i, n) in sizes.iter().enumerate() {
                let kind = if i % 2 == 0 {
                    FrameKind::Notes
                } else {
                    FrameKind::Vector
                };
                a.sealer.seal(kind, &big(*n), &mut wire).unwrap();
            }
            let frames = open_all(&mut b.opener, &wire, step).unwrap();
            assert_eq!(frames.len(), sizes.len(), "step {step}");
            for (i, (kind, payload)) in frames.iter().enumerate() {
                assert_eq!(payload, &big(sizes[i]), "frame {i}, step {step}");
                assert_eq!(*kind == FrameKind::Notes, i % 2 == 0);
            }
            assert!(!b.opener.in_frame());
            assert_eq!(b.opener.records(), a.sealer.records());
        }
    }

    #[test]
    fn the_plaintext_is_not_on_the_wire() {
        let (mut a, _) = pair();
        let mut wire = Vec::new();
        let text = b"a secret note that must not be readable on the wire";
        a.sealer.seal(FrameKind::Notes, text, &mut wire).unwrap();
        assert!(!wire.windows(text.len()).any(|w| w == text));
        assert!(!wire.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn both_directions_have_their_own_keys() {
        let (mut a, mut b) = pair();
        let mut from_a = Vec::new();
        a.sealer.seal(FrameKind::Vector, b"x", &mut from_a).unwrap();
        let mut from_b = Vec::new();
        b.sealer.seal(FrameKind::Vector, b"x", &mut from_b).unwrap();
        assert_ne!(from_a, from_b, "same nonce, same plaintext, different keys");
        // A record reflected back to its sender does not open.
        assert!(matches!(
            a.opener.open(&from_a),
            Err(SealError::Forged { record: 0 })
        ));
    }

    #[test]
    fn a_flipped_bit_anywhere_is_detected_and_nothing_is_delivered() {
        let (mut a, b) = pair();
        let mut wire = Vec::new();
        a.sealer
            .seal(FrameKind::Notes, &big(200), &mut wire)
            .unwrap();
        for i in 0..wire.len() {
            for bit in [0, 3, 7] {
                let mut bad = wire.clone();
                bad[i] ^= 1 << bit;
                // A changed length prefix may leave the record incomplete
                // (waiting for bytes that never come): nothing delivered.
                match open_all(&mut fresh_opener(&b), &bad, bad.len()) {
                    Err(_) => {}
                    Ok(frames) => assert!(frames.is_empty(), "byte {i} bit {bit}"),
                }
            }
        }
    }

    #[test]
    fn replayed_reordered_dropped_and_injected_records_are_detected() {
        let (mut a, b) = pair();
        let mut r = Vec::new();
        for i in 0..3u8 {
            let mut one = Vec::new();
            a.sealer
                .seal(FrameKind::Vector, &[i; 10], &mut one)
                .unwrap();
            r.push(one);
        }
        let opener = fresh_opener;
        // In order: fine.
        let wire: Vec<u8> = r.concat();
        assert_eq!(open_all(&mut opener(&b), &wire, 1000).unwrap().len(), 3);
        // Replayed: record 0 again in place of record 1.
        let wire = [r[0].clone(), r[0].clone()].concat();
        assert_eq!(
            open_all(&mut opener(&b), &wire, 1000),
            Err(SealError::Forged { record: 1 })
        );
        // Reordered.
        let wire = [r[1].clone(), r[0].clone()].concat();
        assert_eq!(
            open_all(&mut opener(&b), &wire, 1000),
            Err(SealError::Forged { record: 0 })
        );
        // Dropped (record 1 missing).
        let wire = [r[0].clone(), r[2].clone()].concat();
        assert_eq!(
            open_all(&mut opener(&b), &wire, 1000),
            Err(SealError::Forged { record: 1 })
        );
        // Injected: a record sealed under another connection's keys.
        let (mut x, _) = pair();
        let mut forged = Vec::new();
        x.sealer
            .seal(FrameKind::Vector, &[9; 10], &mut forged)
            .unwrap();
        let wire = [r[0].clone(), forged].concat();
        assert_eq!(
            open_all(&mut opener(&b), &wire, 1000),
            Err(SealError::Forged { record: 1 })
        );
    }

    #[test]
    fn a_frame_cut_between_its_records_is_never_delivered() {
        let (mut a, mut b) = pair();
        let mut wire = Vec::new();
        a.sealer
            .seal(
                FrameKind::Notes,
                &big(3 * RECORD_PLAINTEXT_BYTES_MAX),
                &mut wire,
            )
            .unwrap();
        let first_two = 2 * (RECORD_LENGTH_BYTES + NOISE_MESSAGE_BYTES_MAX);
        let frames = open_all(&mut b.opener, &wire[..first_two], 1 << 20).unwrap();
        assert!(frames.is_empty());
        assert!(b.opener.in_frame(), "the cut is visible");
    }

    #[test]
    fn limits_are_checked_in_the_first_record() {
        let (mut a, mut b) = pair();
        b.opener.limit_payload(10);
        let mut wire = Vec::new();
        a.sealer
            .seal(FrameKind::Confirm, &[0; 11], &mut wire)
            .unwrap();
        assert_eq!(
            b.opener.open(&wire),
            Err(SealError::TooLarge {
                bytes: 11,
                limit: 10
            })
        );
    }

    #[test]
    fn random_bytes_never_panic_the_opener() {
        // xorshift: deterministic, no dependency.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (_, b) = pair();
        for round in 0..2000 {
            let len = (next() % 300) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Half the time, a plausible length prefix.
            if round % 2 == 0 && bytes.len() >= 2 {
                let n = (bytes.len() - 2) as u16;
                bytes[..2].copy_from_slice(&n.to_le_bytes());
            }
            let mut opener = fresh_opener(&b);
            if let Ok(o) = opener.open(&bytes) {
                assert!(o.frame.is_none(), "random bytes opened as a frame");
                assert!(o.consumed <= bytes.len());
            }
        }
    }
}
