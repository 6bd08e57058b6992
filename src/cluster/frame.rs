//! Peer protocol framing: how every message between nodes is delimited.
//!
//! ```text
//! +-------+---------+------+----------------+-----------------+---------------+
//! | magic | version | kind | length: u32 LE | payload         | crc32c: u32 LE |
//! | "UN"  | u8      | u8   | payload bytes  | `length` bytes  | over all before|
//! +-------+---------+------+----------------+-----------------+---------------+
//! ```
//!
//! A frame is at most [`FRAME_PAYLOAD_BYTES_MAX`] of payload. Parsing is two
//! passes, like the HTTP side: [`decode`] says whether a whole frame is in
//! the buffer (`Incomplete` is not an error) and checks magic, version,
//! kind, size and checksum before anything looks at the payload. Any
//! violation is a [`FrameError`], and the connection that sent it is
//! dropped: a peer that sends garbage is not trusted to resynchronise.

/// First two bytes of every frame.
pub const FRAME_MAGIC: [u8; 2] = *b"UN";
/// Peer protocol version spoken by this build. Carried in every frame and
/// negotiated in the handshake.
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes before the payload.
pub const FRAME_HEADER_BYTES: usize = 8;
/// Bytes after the payload.
pub const FRAME_TRAILER_BYTES: usize = 4;
/// Largest payload of one frame. Replication batches stay well below it.
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 4 * 1024 * 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Initiator's opening: identity, versions, nonce.
    Hello = 1,
    /// Acceptor's answer: identity, nonce, proof of the cookie.
    Challenge = 2,
    /// Initiator's proof of the cookie.
    Auth = 3,
    /// Handshake accepted.
    Welcome = 4,
    /// Handshake refused, with a reason (then the connection closes).
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
    fn from_u8(b: u8) -> Option<FrameKind> {
        Some(match b {
            1 => FrameKind::Hello,
            2 => FrameKind::Challenge,
            3 => FrameKind::Auth,
            4 => FrameKind::Welcome,
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
    #[error("frame payload of {0} bytes exceeds the {FRAME_PAYLOAD_BYTES_MAX}-byte limit")]
    TooLarge(usize),
    #[error("frame checksum mismatch")]
    BadChecksum,
}

/// The result of looking for a frame at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    Frame {
        kind: FrameKind,
        payload: &'a [u8],
        /// Bytes the frame occupies, header and trailer included.
        total_bytes: usize,
    },
    Incomplete,
}

/// Appends a frame to `out`.
pub fn encode_into(out: &mut Vec<u8>, kind: FrameKind, payload: &[u8]) {
    assert!(
        payload.len() <= FRAME_PAYLOAD_BYTES_MAX,
        "frame payload of {} bytes exceeds the limit",
        payload.len()
    );
    let start = out.len();
    out.extend_from_slice(&FRAME_MAGIC);
    out.push(PROTOCOL_VERSION);
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

/// Looks for one whole frame at the start of `buf`.
pub fn decode(buf: &[u8]) -> Result<Decoded<'_>, FrameError> {
    // Check what we can as soon as the bytes are there, so garbage is
    // refused without waiting for a "length" worth of it.
    if !buf.is_empty() && buf[0] != FRAME_MAGIC[0] || buf.len() >= 2 && buf[1] != FRAME_MAGIC[1] {
        return Err(FrameError::BadMagic);
    }
    if buf.len() >= 3 && buf[2] != PROTOCOL_VERSION {
        return Err(FrameError::BadVersion(buf[2]));
    }
    if buf.len() < FRAME_HEADER_BYTES {
        return Ok(Decoded::Incomplete);
    }
    let kind = FrameKind::from_u8(buf[3]).ok_or(FrameError::UnknownKind(buf[3]))?;
    let len = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if len > FRAME_PAYLOAD_BYTES_MAX {
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
        let f = encode(FrameKind::Notes, b"payload");
        match decode(&f).unwrap() {
            Decoded::Frame {
                kind,
                payload,
                total_bytes,
            } => {
                assert_eq!(kind, FrameKind::Notes);
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
    fn violations_are_errors() {
        let f = encode(FrameKind::Vector, b"abc");
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
        huge[4..8].copy_from_slice(&(FRAME_PAYLOAD_BYTES_MAX as u32 + 1).to_le_bytes());
        assert_eq!(
            decode(&huge),
            Err(FrameError::TooLarge(FRAME_PAYLOAD_BYTES_MAX + 1))
        );
        assert_eq!(decode(b"GET / HTTP/1.1\r\n"), Err(FrameError::BadMagic));
    }
}
