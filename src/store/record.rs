//! Record framing in the log: how one note's bytes sit in a segment file.
//!
//! ```text
//! +----------------+----------------+----------------------------+
//! | length: u32 LE | crc32c: u32 LE | payload: `length` bytes     |
//! +----------------+----------------+----------------------------+
//! ```
//!
//! The checksum covers the length field and the payload, so a torn length
//! (a write that stopped inside the header) cannot point at a plausible
//! record. A length of zero or above [`RECORD_PAYLOAD_BYTES_MAX`] is corrupt
//! by definition, which also rejects the zero-filled tail that a crash can
//! leave after a file was extended.

/// Bytes of framing before each payload.
pub const RECORD_HEADER_BYTES: usize = 8;

/// Largest payload a record may carry. A note's text is capped well below
/// this (see `config::NOTE_TEXT_BYTES_MAX_LIMIT`); the margin is for the
/// archived fields around the text.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 1 << 20;

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, checksummed record: its payload is `buf[RECORD_HEADER_BYTES..total_bytes]`.
    Record { total_bytes: usize },
    /// The buffer ends inside a record whose header is plausible: more bytes
    /// are needed (or, at the end of a file, the record was torn).
    Incomplete,
    /// The bytes here are not a valid record.
    Corrupt(Corruption),
}

/// Why bytes are not a record.
#[derive(Debug, PartialEq, Eq, Clone, Copy, thiserror::Error)]
pub enum Corruption {
    #[error("record length {0} is out of range")]
    BadLength(u32),
    #[error("record checksum mismatch")]
    BadChecksum,
}

fn checksum(length_le: [u8; 4], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&length_le), payload)
}

/// Appends one framed record holding `payload` to `out`.
pub fn encode_into(out: &mut Vec<u8>, payload: &[u8]) {
    assert!(
        !payload.is_empty() && payload.len() <= RECORD_PAYLOAD_BYTES_MAX,
        "record payload of {} bytes is outside 1..={RECORD_PAYLOAD_BYTES_MAX}",
        payload.len()
    );
    let length_le = (payload.len() as u32).to_le_bytes();
    out.extend_from_slice(&length_le);
    out.extend_from_slice(&checksum(length_le, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Decodes the record at the start of `buf`, verifying its checksum.
pub fn decode(buf: &[u8]) -> Decoded {
    if buf.len() < RECORD_HEADER_BYTES {
        return Decoded::Incomplete;
    }
    let length_le: [u8; 4] = [buf[0], buf[1], buf[2], buf[3]];
    let length = u32::from_le_bytes(length_le);
    if length == 0 || length as usize > RECORD_PAYLOAD_BYTES_MAX {
        return Decoded::Corrupt(Corruption::BadLength(length));
    }
    let total_bytes = RECORD_HEADER_BYTES + length as usize;
    if buf.len() < total_bytes {
        return Decoded::Incomplete;
    }
    let stored = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if stored != checksum(length_le, &buf[RECORD_HEADER_BYTES..total_bytes]) {
        return Decoded::Corrupt(Corruption::BadChecksum);
    }
    Decoded::Record { total_bytes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips() {
        let mut buf = Vec::new();
        encode_into(&mut buf, b"payload");
        assert_eq!(decode(&buf), Decoded::Record { total_bytes: 15 });
        assert_eq!(&buf[RECORD_HEADER_BYTES..], b"payload");
    }

    #[test]
    fn every_truncation_is_incomplete_or_corrupt_never_a_record() {
        let mut buf = Vec::new();
        encode_into(&mut buf, b"some payload bytes");
        for cut in 0..buf.len() {
            assert_ne!(
                std::mem::discriminant(&decode(&buf[..cut])),
                std::mem::discriminant(&Decoded::Record { total_bytes: 0 }),
                "a record cut at {cut} bytes must not decode"
            );
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_into(&mut buf, b"flip me");
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    !matches!(decode(&bad), Decoded::Record { total_bytes } if total_bytes == buf.len()),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn zero_fill_is_corrupt() {
        assert_eq!(
            decode(&[0u8; 64]),
            Decoded::Corrupt(Corruption::BadLength(0))
        );
    }
}
