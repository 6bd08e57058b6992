//! The in-memory index of notes, one copy per core.
//!
//! Each core owns an [`Index`] and is the only thread that touches it, so the
//! read path takes no lock and shares no cache line with another core. The
//! note bytes themselves are not copied per core: every index entry is a
//! [`NoteRef`], a counted reference to immutable, checksummed, validated
//! archive bytes that all cores share.
//!
//! Order is newest first by (creation time, id); the id breaks ties so the
//! order is total and the same on every core and every node.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::note::{self, ArchivedNote, NoteId, Origin};

/// A reference to one note's archived bytes (the payload of its record).
///
/// Invariant: the referenced bytes passed [`note::access`] validation when
/// the `NoteRef` was made, and are never mutated afterwards.
#[derive(Clone)]
pub struct NoteRef {
    chunk: Arc<[u8]>,
    start: u32,
    len: u32,
}

impl NoteRef {
    /// Wraps a payload that has not been validated yet.
    pub fn from_payload(payload: Vec<u8>) -> Result<NoteRef, rkyv::rancor::Error> {
        note::access(&payload)?;
        let len = payload.len() as u32;
        Ok(NoteRef {
            chunk: payload.into(),
            start: 0,
            len,
        })
    }

    /// Refers to `chunk[start..start + len]`, validating it.
    pub fn in_chunk(
        chunk: &Arc<[u8]>,
        start: usize,
        len: usize,
    ) -> Result<NoteRef, rkyv::rancor::Error> {
        note::access(&chunk[start..start + len])?;
        Ok(NoteRef {
            chunk: Arc::clone(chunk),
            start: start as u32,
            len: len as u32,
        })
    }

    /// The archived bytes.
    pub fn payload(&self) -> &[u8] {
        &self.chunk[self.start as usize..(self.start + self.len) as usize]
    }

    /// The note, read in place.
    pub fn note(&self) -> &ArchivedNote {
        // SAFETY: the constructors validated exactly these bytes, and a
        // `NoteRef` gives no way to mutate them.
        unsafe { note::access_trusted(self.payload()) }
    }
}

impl std::fmt::Debug for NoteRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteRef")
            .field("id", &self.note().id())
            .finish()
    }
}

/// Sort key: creation time, then id (a total order, identical everywhere).
type OrderKey = (u64, NoteId);

/// One core's view of all notes.
///
/// `created_by_id` is ordered by id, which sorts by origin stream and then
/// sequence: replication reads one stream's notes after a given sequence
/// number with a range query.
#[derive(Default, Clone)]
pub struct Index {
    by_order: BTreeMap<OrderKey, NoteRef>,
    created_by_id: BTreeMap<NoteId, u64>,
    /// Highest sequence seen per origin stream.
    seq_max_by_origin: FxHashMap<Origin, u64>,
    text_bytes: u64,
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// Adds a note; returns false (and changes nothing) if its id is known.
    pub fn insert(&mut self, note_ref: NoteRef) -> bool {
        let note = note_ref.note();
        let id = note.id();
        let created = note.created_at_us();
        if self.created_by_id.contains_key(&id) {
            return false;
        }
        self.text_bytes += note.text().len() as u64;
        let seq_max = self.seq_max_by_origin.entry(id.origin).or_insert(0);
        *seq_max = (*seq_max).max(id.seq);
        self.created_by_id.insert(id, created);
        let previous = self.by_order.insert((created, id), note_ref);
        debug_assert!(previous.is_none(), "by_order and created_by_id disagree");
        true
    }

    pub fn get(&self, id: &NoteId) -> Option<&NoteRef> {
        let created = self.created_by_id.get(id)?;
        self.by_order.get(&(*created, *id))
    }

    pub fn contains(&self, id: &NoteId) -> bool {
        self.created_by_id.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.created_by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.created_by_id.is_empty()
    }

    /// Total UTF-8 bytes of all note texts.
    pub fn text_bytes(&self) -> u64 {
        self.text_bytes
    }

    /// The highest sequence number seen from an origin stream (0 if none).
    pub fn seq_max(&self, origin: Origin) -> u64 {
        self.seq_max_by_origin.get(&origin).copied().unwrap_or(0)
    }

    /// The version vector: the highest sequence number held per origin.
    pub fn vector(&self) -> Vec<(Origin, u64)> {
        let mut v: Vec<(Origin, u64)> = self
            .seq_max_by_origin
            .iter()
            .map(|(o, s)| (*o, *s))
            .collect();
        v.sort_unstable();
        v
    }

    /// Notes of one origin stream with a sequence number above `seq`, in
    /// sequence order.
    pub fn stream_after(&self, origin: Origin, seq: u64) -> impl Iterator<Item = &NoteRef> + '_ {
        let from = NoteId {
            origin,
            seq: seq.saturating_add(1),
        };
        let to = NoteId {
            origin,
            seq: u64::MAX,
        };
        self.created_by_id
            .range(from..=to)
            .filter_map(move |(id, created)| self.by_order.get(&(*created, *id)))
    }

    /// The sequence numbers of one origin stream below its highest that
    /// this index lacks, as inclusive ranges in order, the lowest
    /// `ranges_max` of them. Holes come from damaged records skipped by
    /// recovery and from numbers whose write failed; a peer may have the
    /// notes (see `cluster::Cluster::send_holes`). O(notes of that origin):
    /// run on connect only, never on the request path.
    pub fn holes(&self, origin: Origin, ranges_max: usize) -> Vec<(u64, u64)> {
        let mut holes = Vec::new();
        let mut expected = 1u64;
        let all = NoteId { origin, seq: 0 }..=NoteId {
            origin,
            seq: u64::MAX,
        };
        for id in self.created_by_id.range(all).map(|(id, _)| id) {
            if holes.len() >= ranges_max {
                break;
            }
            if id.seq > expected {
                holes.push((expected, id.seq - 1));
            }
            expected = id.seq.saturating_add(1);
        }
        holes
    }

    /// Notes newest first, starting after `before` (exclusive) if given.
    /// Returns `None` if `before` names an unknown note.
    pub fn newest(&self, before: Option<&NoteId>) -> Option<impl Iterator<Item = &NoteRef> + '_> {
        let upper = match before {
            Some(id) => Bound::Excluded((*self.created_by_id.get(id)?, *id)),
            None => Bound::Unbounded,
        };
        Some(
            self.by_order
                .range((Bound::Unbounded, upper))
                .rev()
                .map(|(_, r)| r),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::note::Note;

    fn note_ref(core: u16, seq: u64, created: u64, text: &str) -> NoteRef {
        let note = Note {
            id: NoteId {
                origin: Origin { node: 7, core },
                seq,
            },
            created_at_us: created,
            text: text.into(),
        };
        NoteRef::from_payload(note::archive(&note)).unwrap()
    }

    #[test]
    fn newest_first_and_paged() {
        let mut index = Index::new();
        assert!(index.insert(note_ref(0, 1, 10, "a")));
        assert!(index.insert(note_ref(1, 1, 30, "c")));
        assert!(index.insert(note_ref(0, 2, 20, "b")));
        let texts: Vec<_> = index
            .newest(None)
            .unwrap()
            .map(|r| r.note().text())
            .collect();
        assert_eq!(texts, ["c", "b", "a"]);
        let b = note_ref(0, 2, 20, "b").note().id();
        let texts: Vec<_> = index
            .newest(Some(&b))
            .unwrap()
            .map(|r| r.note().text())
            .collect();
        assert_eq!(texts, ["a"]);
    }

    #[test]
    fn duplicates_are_ignored() {
        let mut index = Index::new();
        assert!(index.insert(note_ref(0, 1, 10, "a")));
        assert!(!index.insert(note_ref(0, 1, 10, "a")));
        assert_eq!(index.len(), 1);
        assert_eq!(index.text_bytes(), 1);
        assert_eq!(index.seq_max(Origin { node: 7, core: 0 }), 1);
    }

    #[test]
    fn streams_and_vectors() {
        let mut index = Index::new();
        for (core, seq, created) in [(0, 1, 10), (1, 1, 11), (0, 2, 12), (0, 3, 13), (1, 2, 14)] {
            index.insert(note_ref(core, seq, created, "x"));
        }
        let o0 = Origin { node: 7, core: 0 };
        let o1 = Origin { node: 7, core: 1 };
        assert_eq!(index.vector(), vec![(o0, 3), (o1, 2)]);
        let seqs: Vec<u64> = index
            .stream_after(o0, 1)
            .map(|r| r.note().id().seq)
            .collect();
        assert_eq!(seqs, [2, 3]);
        assert_eq!(index.stream_after(o1, 2).count(), 0);
        assert_eq!(
            index.stream_after(Origin { node: 9, core: 0 }, 0).count(),
            0
        );
    }

    #[test]
    fn holes_are_the_missing_numbers_below_the_highest() {
        let mut index = Index::new();
        let o0 = Origin { node: 7, core: 0 };
        assert!(index.holes(o0, 10).is_empty(), "an unknown stream has none");
        for seq in [2, 3, 5, 9, 10] {
            index.insert(note_ref(0, seq, seq, "x"));
        }
        index.insert(note_ref(1, 1, 1, "y"));
        assert_eq!(index.holes(o0, 10), [(1, 1), (4, 4), (6, 8)]);
        assert_eq!(index.holes(o0, 2), [(1, 1), (4, 4)], "the lowest first");
        assert!(index.holes(Origin { node: 7, core: 1 }, 10).is_empty());
        index.insert(note_ref(0, 1, 1, "x"));
        assert_eq!(index.holes(o0, 10), [(4, 4), (6, 8)]);
    }

    #[test]
    fn unknown_cursor_is_none() {
        let index = Index::new();
        let id = note_ref(0, 1, 10, "a").note().id();
        assert!(index.newest(Some(&id)).is_none());
    }
}
