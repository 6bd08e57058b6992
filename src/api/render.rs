//! Rendering notes: the JSON of one note and the text form of its id,
//! shared by the JSON API, the page and the event stream. Both read the
//! archived note in place (no deserialization) and are hand-formatted,
//! without the `fmt` machinery: this is the hot path of the API.

use crate::encoding::{self, json_string_into};
use crate::store::note::{ArchivedNote, NoteId};

/// Appends one note as a JSON object, read straight from its archive.
pub fn write_note_json(out: &mut Vec<u8>, note: &ArchivedNote) {
    let id = note.id();
    let created = note.created_at_us();
    out.extend_from_slice(b"{\"id\":\"");
    write_id(out, &id);
    out.extend_from_slice(b"\",\"node\":\"");
    encoding::hex8_into(out, id.origin.node);
    out.extend_from_slice(b"\",\"created_at\":\"");
    encoding::rfc3339_into(out, created, true);
    out.extend_from_slice(b"\",\"created_at_us\":");
    encoding::decimal_into(out, created);
    out.extend_from_slice(b",\"text\":");
    json_string_into(out, note.text());
    out.push(b'}');
}

/// Appends a note id in its text form (`NODE-CORE-SEQ`).
pub fn write_id(out: &mut Vec<u8>, id: &NoteId) {
    encoding::hex8_into(out, id.origin.node);
    out.push(b'-');
    encoding::decimal_into(out, u64::from(id.origin.core));
    out.push(b'-');
    encoding::decimal_into(out, id.seq);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_json_is_valid_and_complete() {
        use crate::store::note::{self, Note, Origin};
        let n = Note {
            id: NoteId {
                origin: Origin {
                    node: 0x0a0b0c0d,
                    core: 3,
                },
                seq: 77,
            },
            created_at_us: 1_795_602_063_021_880,
            text: "a \"quoted\" <b>\n".into(),
        };
        let bytes = note::archive(&n);
        let mut out = Vec::new();
        write_note_json(&mut out, note::access(&bytes).unwrap());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], "0a0b0c0d-3-77");
        assert_eq!(v["node"], "0a0b0c0d");
        assert_eq!(v["created_at"], "2026-11-25T10:21:03.021880Z");
        assert_eq!(v["created_at_us"], 1_795_602_063_021_880u64);
        assert_eq!(v["text"], "a \"quoted\" <b>\n");
    }
}
