//! Peer protocol framing in the clear: the handshake's frames (and the
//! `Refuse` that ends a failed one). Everything after the handshake travels
//! sealed (`seal.rs`), never in these frames.
//!
//! ```text
//! +-------+---------+------+----------------+-----------------+---------------+
//! | magic | version | kind | length: u32 LE | payload         | crc32c: u32 LE |
//! | "UN"  | u8      | u8   | payload bytes  | `length` bytes  | over all before|
//! +-------+---------+------+----------------+-----------------+---------------+
//! ```
//!
//! A clear frame is at most [`HANDSHAKE_PAYLOAD_BYTES_MAX`] of payload (a
//! sealed one at most [`FRAME_PAYLOAD_BYTES_MAX`]). Parsing is two passes,
//! like the HTTP side: [`decode`] says whether a whole frame is in the
//! buffer (`Incomplete` is not an error) and checks magic, version, kind,
//! size and checksum before anything looks at the payload. Any violation is
//! a [`FrameError`], and the connection that sent it is dropped: a peer
//! that sends garbage is not trusted to resynchronise.
//!
//! The layout is frozen across versions, so [`decode`] also reads frames
//! of [`LEGACY_PROTOCOL_VERSION`] (the unencrypted protocol of earlier
//! builds): a node of that version is recognised, told in its own framing
//! why it is refused ([`encode_versioned`]), and named in the log.

/// First two bytes of every frame.
pub const FRAME_MAGIC: [u8; 2] = *b"UN";
/// Peer protocol version spoken by this build. Carried in every clear frame
/// and negotiated in the handshake. Version 2: everything after the
/// handshake is encrypted and authenticated (`seal.rs`).
pub const PROTOCOL_VERSION: u8 = 2;
/// The previous version (cookie proofs, then every frame in the clear). Its
/// frames are recognised only to refuse them with a reason.
pub const LEGACY_PROTOCOL_VERSION: u8 = 1;
/// Bytes before the payload.
pub const FRAME_HEADER_BYTES: usize = 8;
/// Bytes after the payload.
pub const FRAME_TRAILER_BYTES: usize = 4;
/// Largest payload of one sealed frame (`seal.rs`). Replication batches
/// stay well below it (`NOTES_FRAME_BYTES_TARGET`).
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Largest payload of one clear (handshake) frame: a Noise message with a
/// node identity (its name is at most `wire::STRING_BYTES_MAX`), or a
/// refusal's reason. Anything larger is refused before it is read.
pub const HANDSHAKE_PAYLOAD_BYTES_MAX: usize = 4 * 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Initiator's opening, in the clear frame: Noise message 1
    /// (`-> psk, e`), whose encrypted payload is its identity and versions.
    Hello = 1,
    /// Acceptor's answer, in the clear frame: Noise message 2 (`<- e, ee`),
    /// whose encrypted payload is its identity and the chosen version.
    Answer = 2,
    /// The initiator's first sealed frame (empty): proves to the acceptor
    /// that it holds the connection's keys, i.e. that Hello was not replayed.
    Confirm = 3,
    /// Handshake refused, with a reason (then the connection closes). In
    /// the clear; the same kind number in every protocol version.
    Refuse = 5,
    /// Version vector: per-origin high-water marks. Sent on connect, after
    /// applying notes (it is the acknowledgement), and as a heartbeat.
    Vector = 6,
    /// A batch of archived notes.
    Notes = 7,
    /// An HTTP request to execute on the receiving node.
    DispatchRequest = 8,
    /// The full HTTP response to a `DispatchRequest`.
    DispatchResponse = 9,
    /// Sequence ranges the sender lacks below its high-water marks (after
    /// damage or failed writes); answered with `Notes` frames. Sent once
    /// per connection, after the first `Vector`.
    Holes = 10,
}

impl FrameKind {
    /// True for the kinds that travel sealed, after the handshake.
    pub fn is_sealed(self) -> bool {
        !matches!(
            self,
            FrameKind::Hello | FrameKind::Answer | FrameKind::Refuse
        )
    }

    pub fn from_u8(b: u8) -> Option<FrameKind> {
        Some(match b {
            1 => FrameKind::Hello,
            2 => FrameKind::Answer,
            3 => FrameKind::Confirm,
            5 => FrameKind::Refuse,
            6 => FrameKind::Vector,
            7 => FrameKind::Notes,
            8 => FrameKind::DispatchRequest,
            9 => FrameKind::DispatchResponse,
            10 => FrameKind::Holes,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad frame magic (not a uringnotes peer?)")]
    BadMagic,
    #[error("frame of protocol version {0}, this node speaks {PROTOCOL_VERSION}")]
    BadVersion(u8),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error(
        "handshake frame payload of {0} bytes exceeds the {HANDSHAKE_PAYLOAD_BYTES_MAX}-byte limit"
    )]
    TooLarge(usize),
    #[error("frame checksum mismatch")]
    BadChecksum,
}

/// The result of looking for a frame at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    Frame {
        /// [`PROTOCOL_VERSION`] or [`LEGACY_PROTOCOL_VERSION`].
        version: u8,
        kind: FrameKind,
        payload: &'a [u8],
        /// Bytes the frame occupies, header and trailer included.
        total_bytes: usize,
    },
    Incomplete,
}

/// Appends a frame of this version to `out`.
pub fn encode_into(out: &mut Vec<u8>, kind: FrameKind, payload: &[u8]) {
    encode_versioned_into(out, PROTOCOL_VERSION, kind, payload);
}

/// A frame in another version's framing (the layout is frozen): how a
/// peer of another version is told why it is refused.
pub fn encode_versioned(version: u8, kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len() + FRAME_TRAILER_BYTES);
    encode_versioned_into(&mut out, version, kind, payload);
    out
}

fn encode_versioned_into(out: &mut Vec<u8>, version: u8, kind: FrameKind, payload: &[u8]) {
    assert!(
        payload.len() <= HANDSHAKE_PAYLOAD_BYTES_MAX,
        "handshake frame payload of {} bytes exceeds the limit",
        payload.len()
    );
    let start = out.len();
    out.extend_from_slice(&FRAME_MAGIC);
    out.push(version);
    out.push(kind as u8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Returns a new buffer holding one frame.
pub fn encode(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len() + FRAME_TRAILER_BYTES);
    encode_into(&mut out, kind, payload);
    out
}

/// Looks for one whole clear frame, of this or the legacy version, at the
/// start of `buf`.
pub fn decode(buf: &[u8]) -> Result<Decoded<'_>, FrameError> {
    // Check what we can as soon as the bytes are there, so garbage is
    // refused without waiting for a "length" worth of it.
    if !buf.is_empty() && buf[0] != FRAME_MAGIC[0] || buf.len() >= 2 && buf[1] != FRAME_MAGIC[1] {
        return Err(FrameError::BadMagic);
    }
    if buf.len() >= 3 && buf[2] != PROTOCOL_VERSION && buf[2] != LEGACY_PROTOCOL_VERSION {
        return Err(FrameError::BadVersion(buf[2]));
    }
    if buf.len() < FRAME_HEADER_BYTES {
        return Ok(Decoded::Incomplete);
    }
    let kind = FrameKind::from_u8(buf[3]).ok_or(FrameError::UnknownKind(buf[3]))?;
    let len = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if len > HANDSHAKE_PAYLOAD_BYTES_MAX {
        return Err(FrameError::TooLarge(len));
    }
    let total_bytes = FRAME_HEADER_BYTES + len + FRAME_TRAILER_BYTES;
    if buf.len() < total_bytes {
        return Ok(Decoded::Incomplete);
    }
    let body_end = FRAME_HEADER_BYTES + len;
    let stored = u32::from_le_bytes([
        buf[body_end],
        buf[body_end + 1],
        buf[body_end + 2],
        buf[body_end + 3],
    ]);
    if stored != crc32c::crc32c(&buf[..body_end]) {
        return Err(FrameError::BadChecksum);
    }
    Ok(Decoded::Frame {
        version: buf[2],
        kind,
        payload: &buf[FRAME_HEADER_BYTES..body_end],
        total_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_incomplete_prefixes() {
        let f = encode(FrameKind::Hello, b"payload");
        match decode(&f).unwrap() {
            Decoded::Frame {
                version,
                kind,
                payload,
                total_bytes,
            } => {
                assert_eq!(version, PROTOCOL_VERSION);
                assert_eq!(kind, FrameKind::Hello);
                assert_eq!(payload, b"payload");
                assert_eq!(total_bytes, f.len());
            }
            Decoded::Incomplete => panic!("whole frame not decoded"),
        }
        for cut in 0..f.len() {
            assert_eq!(
                decode(&f[..cut]),
                Ok(Decoded::Incomplete),
                "prefix of {cut} bytes"
            );
        }
    }

    #[test]
    fn a_legacy_frame_is_read_with_its_version() {
        let f = encode_versioned(LEGACY_PROTOCOL_VERSION, FrameKind::Refuse, b"why");
        assert!(matches!(
            decode(&f),
            Ok(Decoded::Frame {
                version: LEGACY_PROTOCOL_VERSION,
                kind: FrameKind::Refuse,
                payload: b"why",
                ..
            })
        ));
    }

    #[test]
    fn violations_are_errors() {
        let f = encode(FrameKind::Refuse, b"abc");
        let mut bad = f.clone();
        bad[0] = b'G';
        assert_eq!(decode(&bad), Err(FrameError::BadMagic));
        let mut bad = f.clone();
        bad[2] = 9;
        assert_eq!(decode(&bad), Err(FrameError::BadVersion(9)));
        let mut bad = f.clone();
        bad[3] = 200;
        assert_eq!(decode(&bad), Err(FrameError::UnknownKind(200)));
        let mut bad = f.clone();
        bad[9] ^= 1;
        assert_eq!(decode(&bad), Err(FrameError::BadChecksum));
        let mut huge = f[..8].to_vec();
        huge[4..8].copy_from_slice(&(HANDSHAKE_PAYLOAD_BYTES_MAX as u32 + 1).to_le_bytes());
        assert_eq!(
            decode(&huge),
            Err(FrameError::TooLarge(HANDSHAKE_PAYLOAD_BYTES_MAX + 1))
        );
        assert_eq!(decode(b"GET / HTTP/1.1\r\n"), Err(FrameError::BadMagic));
    }
}
