//! The in-memory index of notes, one copy per core.
//!
//! Each core owns an [`Index`] and is the only thread that touches it, so the
//! read path takes no lock and shares no cache line with another core. The
//! note bytes themselves are not copied per core: they live in reference-
//! counted chunks (a whole recovered segment, or one record written since
//! start-up) that every core's index shares.
//!
//! Memory is the design constraint: an index holds millions of notes, once
//! per core. An entry is one thin pointer (8 bytes) to a record in memory
//! (`length | crc | payload`, the log's own framing, so the length is found
//! next to the bytes), kept twice:
//! - `by_order`: a vector sorted by (creation time, id), newest last; notes
//!   nearly always arrive in order, so an insert is usually a push;
//! - `streams`: per origin stream, a vector indexed by sequence number
//!   (streams are dense: each is written by one core in order), which
//!   answers lookups by id and replication's "notes of this origin after
//!   seq N" in O(1).
//!
//! That is 16 bytes per note per core, plus the shared record bytes.
//!
//! The index also keeps a [`Digest`] of the set of notes it holds (their
//! count and a sum of a hash of each id), updated on every insert: equal on
//! every core and every node that holds the same notes, whatever order they
//! arrived in, and different as soon as one holds a note the other lacks.
//! The HTTP layer derives its entity tags from it (`api/representation.rs`).
//!
//! Safety: an [`Entry`] points into a chunk that the same index keeps alive
//! in `owners`, and chunks are never mutated, so an entry is valid for as
//! long as the index that holds it (clones hold the owners too).

use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::note::{self, ArchivedNote, Note, NoteId, Origin};
use super::record::{self, RECORD_HEADER_BYTES};

/// A note's record (`length | crc | payload`) in a shared chunk, owned.
///
/// Invariant: the payload passed [`note::access`] validation when the
/// `NoteRef` was made, and the chunk is never mutated afterwards.
#[derive(Clone)]
pub struct NoteRef {
    chunk: Arc<[u8]>,
    /// Offset of the record (its length field) in `chunk`.
    start: u32,
}

impl NoteRef {
    /// Wraps a payload that has not been validated yet (framing it as a record).
    pub fn from_payload(payload: Vec<u8>) -> Result<NoteRef, rkyv::rancor::Error> {
        note::access(&payload)?;
        let mut rec = Vec::with_capacity(RECORD_HEADER_BYTES + payload.len());
        record::encode_into(&mut rec, &payload);
        Ok(NoteRef {
            chunk: rec.into(),
            start: 0,
        })
    }

    /// Archives and frames a note this process creates, into the one
    /// allocation that memory keeps and the log's batch is copied from.
    ///
    /// Archiving and framing reuse this thread's scratch buffers: a fresh
    /// archive buffer is an aligned allocation (glibc's slow path) that grows
    /// by reallocation and is then copied into a plain vector, which was
    /// most of a POST's allocator time (perf, 2026-11-25). No need to
    /// validate what we archived ourselves.
    pub(crate) fn from_new_note(new: &Note) -> NoteRef {
        thread_local! {
            static SCRATCH: RefCell<(rkyv::util::AlignedVec, Vec<u8>)> =
                RefCell::new((rkyv::util::AlignedVec::new(), Vec::new()));
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let (archived, framed) = &mut *scratch;
            let mut buffer = std::mem::take(archived);
            buffer.clear();
            *archived = note::archive_into(new, buffer);
            framed.clear();
            record::encode_into(framed, archived);
            debug_assert!(note::access(&framed[RECORD_HEADER_BYTES..]).is_ok());
            NoteRef {
                chunk: Arc::from(&framed[..]),
                start: 0,
            }
        })
    }

    /// The whole record: `length | crc | payload`, as the log stores it.
    pub fn record(&self) -> &[u8] {
        let s = self.start as usize;
        &self.chunk[s..s + RECORD_HEADER_BYTES + self.payload().len()]
    }

    /// Refers to the record at `start` of `chunk`, validating its payload.
    pub fn in_chunk(chunk: &Arc<[u8]>, start: usize) -> Result<NoteRef, rkyv::rancor::Error> {
        let r = NoteRef {
            chunk: Arc::clone(chunk),
            start: start as u32,
        };
        note::access(r.payload())?;
        Ok(r)
    }

    /// Like [`NoteRef::in_chunk`] for a record the caller has validated.
    pub(crate) fn in_chunk_validated(chunk: &Arc<[u8]>, start: usize) -> NoteRef {
        NoteRef {
            chunk: Arc::clone(chunk),
            start: start as u32,
        }
    }

    /// The archived bytes.
    pub fn payload(&self) -> &[u8] {
        let s = self.start as usize;
        let len = u32::from_le_bytes([
            self.chunk[s],
            self.chunk[s + 1],
            self.chunk[s + 2],
            self.chunk[s + 3],
        ]) as usize;
        &self.chunk[s + RECORD_HEADER_BYTES..s + RECORD_HEADER_BYTES + len]
    }

    /// The note, read in place.
    pub fn note(&self) -> &ArchivedNote {
        // SAFETY: the constructors validated exactly these bytes, and a
        // `NoteRef` gives no way to mutate them.
        unsafe { note::access_trusted(self.payload()) }
    }

    fn entry(&self) -> Entry {
        // The pointer stays valid while `self.chunk` (kept in the index's
        // owners) is alive.
        Entry(NonNull::from(&self.chunk[self.start as usize]))
    }
}

impl std::fmt::Debug for NoteRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteRef")
            .field("id", &self.note().id())
            .finish()
    }
}

/// A thin pointer to a validated record owned by the index holding it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Entry(NonNull<u8>);

impl Entry {
    fn view<'a>(self) -> NoteView<'a> {
        NoteView {
            record: self.0,
            _index: std::marker::PhantomData,
        }
    }
}

/// A note in an index, borrowed for as long as the index is.
#[derive(Clone, Copy)]
pub struct NoteView<'a> {
    record: NonNull<u8>,
    _index: std::marker::PhantomData<&'a Index>,
}

impl<'a> NoteView<'a> {
    /// The archived bytes.
    pub fn payload(&self) -> &'a [u8] {
        // SAFETY: `record` points at a record header inside a chunk owned by
        // the index this view borrows; the header's length was checked when
        // the record was validated, so header and payload are in bounds.
        unsafe {
            let header = std::slice::from_raw_parts(self.record.as_ptr(), RECORD_HEADER_BYTES);
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            std::slice::from_raw_parts(self.record.as_ptr().add(RECORD_HEADER_BYTES), len)
        }
    }

    /// The note, read in place.
    pub fn note(&self) -> &'a ArchivedNote {
        // SAFETY: every entry's payload was validated before it was indexed.
        unsafe { note::access_trusted(self.payload()) }
    }

    fn key(&self) -> (u64, NoteId) {
        let n = self.note();
        (n.created_at_us(), n.id())
    }
}

/// Sequence gaps a stream vector may open before far-out sequence numbers
/// go to the sparse map instead (bounds memory against absurd sequences).
const STREAM_GAP_MAX: u64 = 1 << 16;

/// One origin's notes by sequence number.
#[derive(Clone, Default)]
struct Stream {
    /// Sequence number of `dense[0]`.
    base: u64,
    dense: Vec<Option<Entry>>,
    /// Notes too far beyond `dense` (only after a huge gap).
    sparse: std::collections::BTreeMap<u64, Entry>,
    seq_max: u64,
}

impl Stream {
    fn get(&self, seq: u64) -> Option<Entry> {
        if seq >= self.base && seq - self.base < self.dense.len() as u64 {
            return self.dense[(seq - self.base) as usize];
        }
        self.sparse.get(&seq).copied()
    }

    fn dense_end(&self) -> u64 {
        self.base + self.dense.len() as u64
    }

    fn put(&mut self, seq: u64, e: Entry) {
        self.seq_max = self.seq_max.max(seq);
        if self.dense.is_empty() {
            self.base = seq;
        }
        if seq < self.base {
            if self.base - seq > STREAM_GAP_MAX {
                self.sparse.insert(seq, e);
                return;
            }
            let mut v = vec![None; (self.base - seq) as usize];
            v.append(&mut self.dense);
            self.dense = v;
            self.base = seq;
        } else if seq >= self.dense_end() {
            if seq - self.dense_end() > STREAM_GAP_MAX {
                self.sparse.insert(seq, e);
                return;
            }
            self.dense.resize((seq - self.base) as usize + 1, None);
        }
        self.dense[(seq - self.base) as usize] = Some(e);
        self.absorb_sparse();
    }

    /// Keeps the invariant that `sparse` holds nothing inside the dense range.
    fn absorb_sparse(&mut self) {
        if self.sparse.is_empty() {
            return;
        }
        let inside: Vec<u64> = self
            .sparse
            .range(self.base..self.dense_end())
            .map(|(s, _)| *s)
            .collect();
        for seq in inside {
            if let Some(e) = self.sparse.remove(&seq) {
                self.dense[(seq - self.base) as usize] = Some(e);
            }
        }
    }

    /// The sequence numbers present, in order (for `Index::holes`).
    fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        let below = self.sparse.range(..self.base).map(|(s, _)| *s);
        let dense = (self.base..)
            .zip(&self.dense)
            .filter(|(_, e)| e.is_some())
            .map(|(s, _)| s);
        let beyond = self.sparse.range(self.dense_end()..).map(|(s, _)| *s);
        below.chain(dense).chain(beyond)
    }

    /// Entries with a sequence number above `seq`, in sequence order.
    fn after(&self, seq: u64) -> impl Iterator<Item = Entry> + '_ {
        let lo = seq.saturating_add(1);
        let below = self.sparse.range(lo..self.base.max(lo)).map(|(_, e)| *e);
        let start = (lo.max(self.base) - self.base).min(self.dense.len() as u64) as usize;
        let dense = self.dense[start..].iter().flatten().copied();
        let beyond = self
            .sparse
            .range(self.dense_end().max(lo)..)
            .map(|(_, e)| *e);
        below.chain(dense).chain(beyond)
    }
}

/// One core's view of all notes.
#[derive(Clone, Default)]
pub struct Index {
    /// Sorted by (creation time, id), oldest first.
    by_order: Vec<Entry>,
    streams: FxHashMap<Origin, Stream>,
    /// The chunks every entry points into (kept alive here).
    owners: Vec<Arc<[u8]>>,
    len: usize,
    text_bytes: u64,
    /// Sum (wrapping) of [`id_hash`] over every note held.
    id_sum: u64,
}

/// What set of notes an index holds, in 16 bytes.
///
/// Not a counter: a node's notes arrive in different orders on different
/// cores and nodes (written here, through another core, replicated, repaired),
/// so no single counter is comparable between them. Two indexes with the same
/// notes have the same digest; adding a note changes it (the count grows).
/// Two different sets of the same size collide only if their id hashes sum
/// to the same 64-bit value: about 2^-64 for ids the server assigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digest {
    pub notes: u64,
    pub id_sum: u64,
}

/// A 64-bit hash of a note id (splitmix64's finalizer over its fields): the
/// summands of [`Digest::id_sum`].
pub fn id_hash(id: &NoteId) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let origin = (u64::from(id.origin.node) << 16) | u64::from(id.origin.core);
    mix(mix(origin.wrapping_add(0x9e37_79b9_7f4a_7c15)) ^ id.seq)
}

// SAFETY: entries are pointers into immutable chunks owned (through `Arc`)
// by the same index; moving or sharing the index moves or shares those
// owners with it, and nothing mutates the pointed-to bytes.
unsafe impl Send for Index {}
unsafe impl Sync for Index {}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// Adds a note; returns false (and changes nothing) if its id is known.
    pub fn insert(&mut self, note_ref: NoteRef) -> bool {
        let note = note_ref.note();
        let id = note.id();
        if self.contains(&id) {
            return false;
        }
        let key = (note.created_at_us(), id);
        self.text_bytes += note.text().len() as u64;
        let entry = note_ref.entry();
        if !self
            .owners
            .last()
            .is_some_and(|o| Arc::ptr_eq(o, &note_ref.chunk))
        {
            self.owners.push(Arc::clone(&note_ref.chunk));
        }
        self.streams
            .entry(id.origin)
            .or_default()
            .put(id.seq, entry);
        match self.by_order.last() {
            Some(last) if last.view().key() > key => {
                let at = insertion_point_near_end(&self.by_order, &key);
                self.by_order.insert(at, entry);
            }
            _ => self.by_order.push(entry),
        }
        self.len += 1;
        self.id_sum = self.id_sum.wrapping_add(id_hash(&id));
        true
    }

    /// Which notes this index holds (see [`Digest`]).
    pub fn digest(&self) -> Digest {
        Digest {
            notes: self.len as u64,
            id_sum: self.id_sum,
        }
    }

    pub fn get(&self, id: &NoteId) -> Option<NoteView<'_>> {
        self.streams.get(&id.origin)?.get(id.seq).map(Entry::view)
    }

    pub fn contains(&self, id: &NoteId) -> bool {
        self.get(id).is_some()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Total UTF-8 bytes of all note texts.
    pub fn text_bytes(&self) -> u64 {
        self.text_bytes
    }

    /// The highest sequence number seen from an origin stream (0 if none).
    pub fn seq_max(&self, origin: Origin) -> u64 {
        self.streams.get(&origin).map_or(0, |s| s.seq_max)
    }

    /// The version vector: the highest sequence number held per origin.
    pub fn vector(&self) -> Vec<(Origin, u64)> {
        let mut v: Vec<(Origin, u64)> = self.streams.iter().map(|(o, s)| (*o, s.seq_max)).collect();
        v.sort_unstable();
        v
    }

    /// Notes of one origin stream with a sequence number above `seq`, in
    /// sequence order.
    pub fn stream_after(
        &self,
        origin: Origin,
        seq: u64,
    ) -> impl Iterator<Item = NoteView<'_>> + '_ {
        self.streams
            .get(&origin)
            .into_iter()
            .flat_map(move |s| s.after(seq))
            .map(Entry::view)
    }

    /// The sequence numbers of one origin stream below its highest that
    /// this index lacks, as inclusive ranges in order, the lowest
    /// `ranges_max` of them. Holes come from damaged records skipped by
    /// recovery and from numbers whose write failed; a peer may have the
    /// notes (see `cluster::Cluster::send_holes`). O(notes of that origin):
    /// run on connect only, never on the request path.
    pub fn holes(&self, origin: Origin, ranges_max: usize) -> Vec<(u64, u64)> {
        let mut holes = Vec::new();
        let Some(stream) = self.streams.get(&origin) else {
            return holes;
        };
        let mut expected = 1u64;
        for seq in stream.seqs() {
            if holes.len() >= ranges_max {
                break;
            }
            if seq > expected {
                holes.push((expected, seq - 1));
            }
            expected = seq.saturating_add(1);
        }
        holes
    }

    /// Notes newest first, starting after `before` (exclusive) if given.
    /// Returns `None` if `before` names an unknown note.
    pub fn newest(
        &self,
        before: Option<&NoteId>,
    ) -> Option<impl Iterator<Item = NoteView<'_>> + '_> {
        let end = match before {
            Some(id) => {
                let key = self.get(id)?.key();
                self.by_order.partition_point(|e| e.view().key() < key)
            }
            None => self.by_order.len(),
        };
        Some(self.by_order[..end].iter().rev().map(|e| e.view()))
    }
}

/// An index reduced to what rebuilding it takes: the notes in order and the
/// chunks they live in, 8 bytes per note instead of 16.
///
/// The server keeps the index recovered at start-up for as long as it runs,
/// so that a restarted shard starts from it without reading the whole log
/// again; every shard's own index is a [`FrozenIndex::thaw`]ed copy. Kept
/// whole, that copy cost as much memory as a shard's index (measured:
/// 186 bytes per note of 100-byte text with 2 cores, 16 of them this copy).
pub struct FrozenIndex {
    by_order: Box<[Entry]>,
    owners: Box<[Arc<[u8]>]>,
    text_bytes: u64,
    id_sum: u64,
}

// SAFETY: as for `Index`: the entries point into the chunks in `owners`,
// which are immutable and kept alive by this value.
unsafe impl Send for FrozenIndex {}
unsafe impl Sync for FrozenIndex {}

impl Index {
    /// Drops the per-stream vectors, keeping the order and the chunks.
    pub fn freeze(self) -> FrozenIndex {
        FrozenIndex {
            by_order: self.by_order.into_boxed_slice(),
            owners: self.owners.into_boxed_slice(),
            text_bytes: self.text_bytes,
            id_sum: self.id_sum,
        }
    }
}

impl FrozenIndex {
    pub fn len(&self) -> usize {
        self.by_order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_order.is_empty()
    }

    /// A full index again: the order copied, the per-stream vectors rebuilt
    /// in one pass over it (every entry is a distinct note: `insert` made
    /// sure of that before freezing).
    pub fn thaw(&self) -> Index {
        let mut streams: FxHashMap<Origin, Stream> = FxHashMap::default();
        for entry in self.by_order.iter() {
            let id = entry.view().note().id();
            streams.entry(id.origin).or_default().put(id.seq, *entry);
        }
        Index {
            by_order: self.by_order.to_vec(),
            streams,
            owners: self.owners.to_vec(),
            len: self.by_order.len(),
            text_bytes: self.text_bytes,
            id_sum: self.id_sum,
        }
    }
}

/// Where `key` goes in `order` (sorted; its last key is greater than `key`).
///
/// A note that arrives out of order (written through another core or node
/// a moment ago) belongs among the newest entries: gallop back from the end
/// (1, 2, 4, ... entries) and binary-search only the last step. A plain
/// binary search over the whole index reads about log2(n) notes scattered
/// through memory, one cache miss each; measured in perf/scaling, that made
/// the other core's insert of each note cost microseconds.
fn insertion_point_near_end(order: &[Entry], key: &(u64, NoteId)) -> usize {
    let below = |e: &Entry| e.view().key() < *key;
    // Invariant: every key in order[hi..] is greater than `key`.
    let mut hi = order.len() - 1;
    let mut step = 1;
    loop {
        let probe = hi.saturating_sub(step);
        if probe == 0 {
            return order[..hi].partition_point(below);
        }
        if below(&order[probe]) {
            return probe + 1 + order[probe + 1..hi].partition_point(below);
        }
        hi = probe;
        step *= 2;
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
    fn the_digest_names_the_set_not_the_arrival_order() {
        let notes = [
            note_ref(0, 1, 10, "a"),
            note_ref(1, 1, 30, "c"),
            note_ref(0, 2, 20, "b"),
        ];
        let mut one = Index::new();
        let mut other = Index::new();
        assert_eq!(one.digest(), Digest::default());
        for n in &notes {
            let before = one.digest();
            one.insert(n.clone());
            assert_ne!(one.digest(), before, "a new note changes it");
        }
        for n in notes.iter().rev() {
            other.insert(n.clone());
        }
        assert_eq!(one.digest(), other.digest(), "same notes, other order");
        assert!(!one.insert(notes[0].clone()));
        assert_eq!(one.digest(), other.digest(), "a duplicate changes nothing");
        // Same count, different notes.
        let mut third = Index::new();
        third.insert(notes[0].clone());
        third.insert(notes[1].clone());
        third.insert(note_ref(0, 3, 40, "d"));
        assert_ne!(third.digest(), one.digest());
        let thawed = one.clone().freeze().thaw();
        assert_eq!(
            thawed.digest(),
            one.digest(),
            "kept through freeze and thaw"
        );
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
    fn a_thawed_index_equals_the_frozen_one() {
        let mut index = Index::new();
        for (core, seq, created) in [(0, 1, 10), (1, 1, 11), (0, 2, 12), (0, 4, 13), (1, 2, 9)] {
            index.insert(note_ref(core, seq, created, "xy"));
        }
        let expected_order: Vec<_> = index.newest(None).unwrap().map(|v| v.note().id()).collect();
        let o0 = Origin { node: 7, core: 0 };
        let frozen = index.freeze();
        assert_eq!(frozen.len(), 5);
        let thawed = frozen.thaw();
        let order: Vec<_> = thawed
            .newest(None)
            .unwrap()
            .map(|v| v.note().id())
            .collect();
        assert_eq!(order, expected_order);
        assert_eq!(thawed.len(), 5);
        assert_eq!(thawed.text_bytes(), 10);
        assert_eq!(thawed.seq_max(o0), 4);
        assert_eq!(thawed.holes(o0, 10), [(3, 3)]);
        let id = NoteId { origin: o0, seq: 2 };
        assert_eq!(thawed.get(&id).map(|v| v.note().created_at_us()), Some(12));
        // The frozen one stays usable: a second thaw (a second restart).
        assert_eq!(frozen.thaw().len(), 5);
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
        // Far-out numbers (kept apart from the dense run) bound holes too.
        index.insert(note_ref(0, 1 << 40, 11, "far"));
        assert_eq!(index.holes(o0, 10), [(4, 4), (6, 8), (11, (1 << 40) - 1)]);
    }

    #[test]
    fn out_of_order_inserts_land_in_order_at_any_depth() {
        // Inserts that go 0, 1, 2, 3, ... 300 entries back from the end (the
        // gallop's every step and both of its exits), checked against a sort.
        let mut index = Index::new();
        let mut created: Vec<u64> = Vec::new();
        let mut state = 12345u64;
        for seq in 1..=2000u64 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let back = (state >> 33) % 300;
            let t = (seq * 1000).saturating_sub(back * 1000) + seq % 7;
            created.push(t);
            assert!(index.insert(note_ref(0, seq, t, "x")));
        }
        created.sort_unstable();
        let order: Vec<u64> = index
            .newest(None)
            .unwrap()
            .map(|r| r.note().created_at_us())
            .collect();
        created.reverse();
        assert_eq!(order, created);
    }

    #[test]
    fn out_of_order_inserts_keep_both_orders() {
        let mut index = Index::new();
        // Sequence and time both arrive shuffled (replication after a split).
        for (seq, created) in [(5, 50), (2, 20), (9, 90), (1, 10), (3, 30)] {
            assert!(index.insert(note_ref(0, seq, created, &format!("n{seq}"))));
        }
        let order: Vec<u64> = index
            .newest(None)
            .unwrap()
            .map(|r| r.note().id().seq)
            .collect();
        assert_eq!(order, [9, 5, 3, 2, 1]);
        let o0 = Origin { node: 7, core: 0 };
        let seqs: Vec<u64> = index
            .stream_after(o0, 1)
            .map(|r| r.note().id().seq)
            .collect();
        assert_eq!(seqs, [2, 3, 5, 9]);
        assert_eq!(index.seq_max(o0), 9);
        assert!(index.get(&NoteId { origin: o0, seq: 4 }).is_none());
        assert_eq!(
            index
                .get(&NoteId { origin: o0, seq: 9 })
                .unwrap()
                .note()
                .text(),
            "n9"
        );
    }

    #[test]
    fn far_out_sequence_numbers_do_not_allocate_the_gap() {
        let mut index = Index::new();
        let o0 = Origin { node: 7, core: 0 };
        assert!(index.insert(note_ref(0, 3, 1, "a")));
        assert!(index.insert(note_ref(0, u64::MAX - 1, 2, "far")));
        assert!(index.insert(note_ref(0, 1, 3, "before")));
        assert!(index.insert(note_ref(0, 1 << 40, 4, "mid")));
        let seqs: Vec<u64> = index
            .stream_after(o0, 0)
            .map(|r| r.note().id().seq)
            .collect();
        assert_eq!(seqs, [1, 3, 1 << 40, u64::MAX - 1]);
        assert!(index.contains(&NoteId {
            origin: o0,
            seq: u64::MAX - 1
        }));
        assert_eq!(index.seq_max(o0), u64::MAX - 1);
    }

    #[test]
    fn clones_outlive_the_original() {
        let mut index = Index::new();
        index.insert(note_ref(0, 1, 10, "kept"));
        let copy = index.clone();
        drop(index);
        assert_eq!(
            copy.newest(None).unwrap().next().unwrap().note().text(),
            "kept"
        );
    }

    #[test]
    fn unknown_cursor_is_none() {
        let index = Index::new();
        let id = note_ref(0, 1, 10, "a").note().id();
        assert!(index.newest(Some(&id)).is_none());
    }
}
