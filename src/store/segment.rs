//! Segment files: naming, the file header, and the data directory layout.
//!
//! ```text
//! DATA_DIR/
//!   LOCK                       flock(2)ed by the running server
//!   node.id                    this node's random 32-bit id, 8 hex digits
//!   log/seg-CCC-NNNNNNNN.log   segment NNNNNNNN written by core CCC
//! ```
//!
//! Each core appends to its own segments only, so appends need no
//! coordination between cores. A segment starts with a 16-byte header
//! (magic, format version, checksum of both) followed by records
//! (`record.rs`). A server never appends to a segment it did not create in
//! this run: after a restart every core starts a new segment, so recovery
//! only ever has to repair the *last* bytes of old files.

use std::path::{Path, PathBuf};

/// Magic bytes at the start of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"UNOTESEG";
/// The record format version this build reads and writes.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
/// Bytes of the segment header.
pub const SEGMENT_HEADER_BYTES: usize = 16;

/// The directory holding the segments.
pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("log")
}

/// The file name of segment `number` of core `core`.
pub fn file_name(core: u16, number: u32) -> String {
    format!("seg-{core:03}-{number:08}.log")
}

/// Parses a segment file name back into (core, number).
pub fn parse_file_name(name: &str) -> Option<(u16, u32)> {
    let rest = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    let (core, number) = rest.split_once('-')?;
    if core.len() != 3 || number.len() != 8 {
        return None;
    }
    if !core
        .bytes()
        .chain(number.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((core.parse().ok()?, number.parse().ok()?))
}

/// The header every segment starts with.
pub fn header() -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    let crc = crc32c::crc32c(&h[..12]);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What is wrong with a segment header.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("file is shorter than a segment header")]
    Short,
    #[error("not a uringnotes segment (bad magic or header checksum)")]
    NotASegment,
    #[error("segment format version {0} is not supported by this build (supports {SEGMENT_FORMAT_VERSION})")]
    UnsupportedVersion(u32),
}

/// Checks the header at the start of a segment's bytes.
pub fn check_header(bytes: &[u8]) -> Result<(), HeaderError> {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return Err(HeaderError::Short);
    }
    let crc = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    if bytes[..8] != SEGMENT_MAGIC || crc != crc32c::crc32c(&bytes[..12]) {
        return Err(HeaderError::NotASegment);
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != SEGMENT_FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name(1, 42), "seg-001-00000042.log");
        assert_eq!(parse_file_name("seg-001-00000042.log"), Some((1, 42)));
        assert_eq!(parse_file_name("seg-1-42.log"), None);
        assert_eq!(parse_file_name("seg-001-0000004x.log"), None);
        assert_eq!(parse_file_name("LOCK"), None);
    }

    #[test]
    fn header_checks() {
        assert_eq!(check_header(&header()), Ok(()));
        assert_eq!(check_header(&header()[..10]), Err(HeaderError::Short));
        let mut bad = header();
        bad[0] ^= 1;
        assert_eq!(check_header(&bad), Err(HeaderError::NotASegment));
    }
}
