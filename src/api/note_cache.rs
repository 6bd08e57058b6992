//! Each core's cache of notes as rendered JSON, for `GET /notes/{id}`.
//!
//! A note never changes once written (its `Cache-Control` says
//! `immutable`), so the JSON it renders to never changes either: formatting
//! its time (RFC 3339), its id and escaping its text cost about 950
//! instructions per request, more than a third of the handler, and
//! redoing them for a note that was just served buys nothing.
//!
//! Invariants:
//! - an entry is the exact output of `render::write_note_json` for its id,
//!   plus the trailing newline the handler sends; it is only ever filled from
//!   the stored note, so it can never disagree with the index;
//! - the cache answers nothing on its own: the handler looks the note up in
//!   the index first (a note the index does not have is a 404 whether or not
//!   it is cached);
//! - memory is bounded: [`NOTE_JSON_CACHE_SLOTS`] slots, direct-mapped by a
//!   hash of the id, each holding at most [`NOTE_JSON_CACHED_BYTES_MAX`]
//!   bytes (longer notes are rendered per request). A slot keeps its
//!   buffer when a new note replaces the old one, so a miss allocates only
//!   while the slot's buffer grows.
//!
//! Per core (in [`super::ApiState`]), so it needs no lock; cores that
//! serve the same note each keep a copy, which the bound keeps small.

use crate::store::index::id_hash;
use crate::store::note::{ArchivedNote, NoteId};

use super::render::write_note_json;

/// Slots per core. A power of two (the slot is the hash's low bits).
pub const NOTE_JSON_CACHE_SLOTS: usize = 256;

/// Longest rendered note kept (bytes). A typical note renders to 200-600
/// bytes; at most this times [`NOTE_JSON_CACHE_SLOTS`] (512 KiB) per core.
pub const NOTE_JSON_CACHED_BYTES_MAX: usize = 2048;

const _: () = assert!(NOTE_JSON_CACHE_SLOTS.is_power_of_two());

#[derive(Default)]
struct Slot {
    id: Option<NoteId>,
    json: Vec<u8>,
}

/// Direct-mapped cache of rendered notes (see the module documentation).
pub struct NoteJsonCache {
    slots: Box<[Slot]>,
}

impl Default for NoteJsonCache {
    fn default() -> Self {
        NoteJsonCache {
            slots: (0..NOTE_JSON_CACHE_SLOTS)
                .map(|_| Slot::default())
                .collect(),
        }
    }
}

impl NoteJsonCache {
    /// `note` as JSON followed by a newline: from the cache, or rendered
    /// into it (or, for a note too long to keep, into `scratch`).
    pub fn rendered<'a>(&'a mut self, note: &ArchivedNote, scratch: &'a mut Vec<u8>) -> &'a [u8] {
        let id = note.id();
        let slot = &mut self.slots[slot_of(&id)];
        if slot.id == Some(id) {
            return &slot.json;
        }
        scratch.clear();
        write_note_json(scratch, note);
        scratch.push(b'\n');
        if scratch.len() > NOTE_JSON_CACHED_BYTES_MAX {
            return scratch;
        }
        slot.json.clear();
        slot.json.extend_from_slice(scratch);
        slot.id = Some(id);
        &slot.json
    }
}

/// The slot for an id: the low bits of the index's hash of it.
fn slot_of(id: &NoteId) -> usize {
    (id_hash(id) as usize) & (NOTE_JSON_CACHE_SLOTS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::note::{self, Note, Origin};

    fn archived(seq: u64, text: &str) -> Vec<u8> {
        let n = Note {
            id: NoteId {
                origin: Origin { node: 7, core: 1 },
                seq,
            },
            created_at_us: 1_795_602_063_021_880 + seq,
            text: text.to_string(),
        };
        note::archive(&n)
    }

    fn rendered_fresh(note: &ArchivedNote) -> Vec<u8> {
        let mut out = Vec::new();
        write_note_json(&mut out, note);
        out.push(b'\n');
        out
    }

    #[test]
    fn answers_what_rendering_gives_for_every_note_even_when_slots_collide() {
        let mut cache = NoteJsonCache::default();
        let mut scratch = Vec::new();
        // More notes than slots, twice over: every slot is replaced, and a
        // note served again after its slot was taken is rendered again.
        let notes: Vec<Vec<u8>> = (0..(NOTE_JSON_CACHE_SLOTS as u64 * 2))
            .map(|seq| archived(seq, &format!("note {seq} \"quoted\"")))
            .collect();
        for _ in 0..2 {
            for bytes in &notes {
                let note = note::access(bytes).expect("valid archive");
                let expected = rendered_fresh(note);
                assert_eq!(cache.rendered(note, &mut scratch), &expected[..]);
                // A hit straight after gives the same bytes.
                assert_eq!(cache.rendered(note, &mut scratch), &expected[..]);
            }
        }
    }

    #[test]
    fn a_note_too_long_to_keep_is_rendered_every_time_and_not_kept() {
        let mut cache = NoteJsonCache::default();
        let mut scratch = Vec::new();
        let bytes = archived(1, &"x".repeat(NOTE_JSON_CACHED_BYTES_MAX));
        let note = note::access(&bytes).expect("valid archive");
        let expected = rendered_fresh(note);
        assert_eq!(cache.rendered(note, &mut scratch), &expected[..]);
        assert!(cache.slots.iter().all(|s| s.id.is_none()));
    }
}
