//! The note: the one record type uringnotes stores, and its identity.
//!
//! A note is written once and never changed. Its bytes on disk are the rkyv
//! archive of [`Note`]; the server reads fields straight out of those bytes
//! ([`ArchivedNote`]) and never deserializes a note to serve it.
//!
//! Identity is cluster-ready from the first write: a [`NoteId`] names the
//! *stream* that created the note (a node and one of its cores) and the
//! position in that stream. Each stream is written by exactly one core of one
//! node, so its sequence numbers are dense and ordered, and a per-stream
//! high-water mark says exactly which notes a node has.

use std::fmt;
use std::str::FromStr;

use rkyv::{Archive, Deserialize, Serialize};

/// Where a note was created: a node (random id chosen when its data
/// directory was first initialised) and the core on that node.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
pub struct Origin {
    /// Random 32-bit node id, persisted in the data directory (`node.id`).
    pub node: u32,
    /// The core (shard index) on that node that created the note.
    pub core: u16,
}

/// A note's identity: its origin stream and its sequence within it (from 1).
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
pub struct NoteId {
    pub origin: Origin,
    pub seq: u64,
}

/// The stored note.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Note {
    pub id: NoteId,
    /// Creation time, microseconds since the Unix epoch, by the origin's clock.
    pub created_at_us: u64,
    /// The note's text: valid UTF-8, never empty, at most the configured limit.
    pub text: String,
}

impl ArchivedNoteId {
    /// The native form of an archived id (a copy of three integers).
    pub fn to_native(&self) -> NoteId {
        NoteId {
            origin: Origin {
                node: self.origin.node.to_native(),
                core: self.origin.core.to_native(),
            },
            seq: self.seq.to_native(),
        }
    }
}

impl ArchivedNote {
    pub fn id(&self) -> NoteId {
        self.id.to_native()
    }

    pub fn created_at_us(&self) -> u64 {
        self.created_at_us.to_native()
    }

    pub fn text(&self) -> &str {
        self.text.as_str()
    }
}

/// The text form of a note id, used in URLs and JSON:
/// `{node as 8 hex digits}-{core}-{seq}`, for example `3fa2c1d0-1-42`.
impl fmt::Display for NoteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:08x}-{}-{}",
            self.origin.node, self.origin.core, self.seq
        )
    }
}

/// Why a string is not a note id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a note id (expected NODE-CORE-SEQ, e.g. 3fa2c1d0-1-42)")]
pub struct ParseNoteIdError;

impl FromStr for NoteId {
    type Err = ParseNoteIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NoteId::parse_bytes(s.as_bytes())
    }
}

impl NoteId {
    /// Parses `NODE-CORE-SEQ` strictly: 8 hex digits, then 1-5 and 1-20
    /// decimal digits, no signs, no spaces. From bytes (a URL path), so the
    /// caller need not check UTF-8 first: this runs on every
    /// `GET /notes/{id}`.
    pub fn parse_bytes(b: &[u8]) -> Result<Self, ParseNoteIdError> {
        if b.len() < 12 || b[8] != b'-' {
            return Err(ParseNoteIdError);
        }
        let mut node: u32 = 0;
        for &c in &b[..8] {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(ParseNoteIdError),
            };
            node = node << 4 | u32::from(d);
        }
        let rest = &b[9..];
        let dash = rest
            .iter()
            .position(|&c| c == b'-')
            .ok_or(ParseNoteIdError)?;
        let decimal = |digits: &[u8], max: u64| -> Result<u64, ParseNoteIdError> {
            if digits.is_empty() || digits.len() > 20 {
                return Err(ParseNoteIdError);
            }
            let mut v: u64 = 0;
            for &c in digits {
                if !c.is_ascii_digit() {
                    return Err(ParseNoteIdError);
                }
                v = v
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(c - b'0')))
                    .ok_or(ParseNoteIdError)?;
            }
            if v > max {
                return Err(ParseNoteIdError);
            }
            Ok(v)
        };
        let core = decimal(&rest[..dash], u64::from(u16::MAX))? as u16;
        let seq = decimal(&rest[dash + 1..], u64::MAX)?;
        Ok(NoteId {
            origin: Origin { node, core },
            seq,
        })
    }
}

/// Serializes a note into its archived bytes (the payload of a log record).
pub fn archive(note: &Note) -> Vec<u8> {
    // Archiving a plain struct of integers and a String cannot fail; the
    // error type is only there for the generic API.
    rkyv::to_bytes::<rkyv::rancor::Error>(note)
        .map(|bytes| bytes.into_vec())
        .unwrap_or_else(|e| unreachable!("archiving a note cannot fail: {e}"))
}

/// Archives a note into `buffer` (expected empty), returning it: lets a
/// caller reuse one buffer for every note it writes.
pub fn archive_into(note: &Note, buffer: rkyv::util::AlignedVec) -> rkyv::util::AlignedVec {
    rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(note, buffer)
        .unwrap_or_else(|e| unreachable!("archiving a note cannot fail: {e}"))
}

/// Checks archived bytes and returns the note inside them.
///
/// Used by recovery on every record (after its checksum passed), so a record
/// that is checksummed but structurally wrong is still never served.
pub fn access(bytes: &[u8]) -> Result<&ArchivedNote, rkyv::rancor::Error> {
    rkyv::access::<ArchivedNote, rkyv::rancor::Error>(bytes)
}

/// Returns the note inside bytes that [`access`] has already validated.
///
/// # Safety
/// `bytes` must be exactly a payload that passed [`access`] (the store only
/// keeps such payloads, and never mutates them).
pub unsafe fn access_trusted(bytes: &[u8]) -> &ArchivedNote {
    // SAFETY: forwarded from the caller's contract.
    unsafe { rkyv::access_unchecked::<ArchivedNote>(bytes) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Note {
        Note {
            id: NoteId {
                origin: Origin {
                    node: 0x3fa2c1d0,
                    core: 1,
                },
                seq: 42,
            },
            created_at_us: 1_700_000_000_000_000,
            text: "hello <world>".into(),
        }
    }

    #[test]
    fn archive_round_trips_without_deserializing() {
        let note = sample();
        let bytes = archive(&note);
        let archived = access(&bytes).expect("valid archive");
        assert_eq!(archived.id(), note.id);
        assert_eq!(archived.created_at_us(), note.created_at_us);
        assert_eq!(archived.text(), note.text);
    }

    #[test]
    fn archive_is_usable_at_any_alignment() {
        // The log stores payloads at arbitrary offsets: the format must not
        // need alignment (rkyv feature "unaligned").
        let bytes = archive(&sample());
        let mut shifted = vec![0u8; 1];
        shifted.extend_from_slice(&bytes);
        let archived = access(&shifted[1..]).expect("valid at odd offset");
        assert_eq!(archived.text(), "hello <world>");
    }

    #[test]
    fn id_text_form_round_trips() {
        let id = sample().id;
        assert_eq!(id.to_string(), "3fa2c1d0-1-42");
        assert_eq!("3fa2c1d0-1-42".parse::<NoteId>(), Ok(id));
    }

    #[test]
    fn bad_ids_are_rejected() {
        for bad in [
            "",
            "3fa2c1d0-1",
            "3fa2c1d0-1-42-1",
            "3fa2c1d-1-42",
            "3fa2c1dz-1-42",
            "3fa2c1d0--42",
            "3fa2c1d0-1-",
            "3fa2c1d0-70000-1",
            "3fa2c1d0-1-99999999999999999999999",
            "3fa2c1d0-+1-4",
        ] {
            assert_eq!(bad.parse::<NoteId>(), Err(ParseNoteIdError), "{bad:?}");
        }
    }
}
