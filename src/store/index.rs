//! The in-memory index of notes: one index, shared by every core.
//!
//! Every page shows all notes, so every core must be able to read every
//! note without asking another core. Before issue 20 each core kept its own
//! copy of the index (16 bytes per note per core); now there is one
//! [`SharedIndex`] per process, and each core reads it through its own
//! [`Index`] view. Memory per note no longer depends on the core count:
//! - the record bytes (`length | crc | payload`, the log's own framing), in
//!   reference-counted chunks: a whole recovered segment, or one record per
//!   note written since start-up; kept alive by the index's owner list;
//! - one thin pointer (8 bytes) in the time order (`order.rs`): chunks of
//!   entries sorted by (creation time, id), newest last;
//! - one thin pointer (8 bytes) in its origin stream's slot array
//!   (`streams.rs`), indexed by sequence number (streams are dense), which
//!   answers lookups by id and replication's "notes of this origin after
//!   seq N".
//!
//! **Readers** (any core, any number) take no lock and write nothing
//! shared: a core's [`Index`] holds an `Arc` of one immutable [`Version`]
//! (the spine of the order, the open chunk, the map of origins) and reads
//! through it: slots are loaded with `Acquire` and bounded by fill counts,
//! never by anything a reader stores. A reader sees a version's notes plus
//! any appended in place since (below). [`Index::refresh`] moves a view to
//! the newest version: one `Acquire` load of `current_number` when nothing
//! changed, an `ArcSwap` load otherwise. A shard refreshes its view after
//! it inserts a note and whenever it takes notes out of its inbox (before
//! it routes the next request), which is what keeps the promise that a note
//! acknowledged on any core is visible to the next request on every core.
//!
//! **Writers** (whichever core made a note durable: its own notes, core 0
//! for replicated ones, a restarted shard for its rescan) serialize on one
//! `Mutex`, held for the insert only (no await, no I/O inside). An insert
//! checks the id against the streams (duplicates are ignored), stores the
//! entry in its stream's slot, and
//! - for a note newer than every note held (nearly all of them): appends
//!   it to the open chunk in place: a slot store and a `Release` store of
//!   the fill. No new version: every view already holding the current
//!   version sees it at once;
//! - for a late note, a full open chunk, a new origin or a far-out
//!   sequence number: builds a new version by copy-on-write of the affected
//!   chunk, group, spine or origin map (`order.rs`) and publishes it
//!   (`ArcSwap` store, then `current_number` with `Release`). Views still
//!   holding the old version keep reading it unchanged until they refresh.
//!
//! Invariants: an entry points into a record chunk held by the index's
//! owner list, and record chunks are never mutated, so an entry is valid as
//! long as the `SharedIndex` is (every [`Index`] view holds it); a slot that
//! a published version lets readers see is never written again (slots of
//! the order are written only past the fill, slots of a stream only from
//! null); every note is in exactly one order slot of the current version
//! and one stream slot (or sparse map entry).
//!
//! Recovery builds the index in bulk ([`IndexBuilder`]): entries collected
//! in log order, sorted once if the log was not already in time order, then
//! cut into full chunks.

mod order;
mod streams;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;

use self::order::Order;
use self::streams::Stream;
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

/// The order of notes: (creation time, id).
type Key = (u64, NoteId);

/// A thin pointer to a validated record owned by the index holding it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Entry(NonNull<u8>);

// SAFETY: an entry points at immutable, validated bytes that the
// `SharedIndex` holding the entry keeps alive (its owner list); reading them
// from any thread is sound while that index lives, which every holder of an
// entry guarantees (see the module doc).
unsafe impl Send for Entry {}
unsafe impl Sync for Entry {}

impl Entry {
    #[inline]
    fn view<'a>(self) -> NoteView<'a> {
        NoteView {
            record: self.0,
            _index: std::marker::PhantomData,
        }
    }

    #[inline]
    fn key(self) -> Key {
        self.view().key()
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

    fn key(&self) -> Key {
        let n = self.note();
        (n.created_at_us(), n.id())
    }
}

/// One origin's notes by sequence number, as of one version: the slot array
/// (shared by every version, see `streams.rs`) and the far-out numbers.
#[derive(Clone)]
struct OriginStreams {
    dense: Arc<Stream>,
    /// Sequence numbers that do not fit the slot array (rare: only after a
    /// huge gap); immutable, replaced by a copy when one is added.
    sparse: Option<Arc<BTreeMap<u64, Entry>>>,
}

impl OriginStreams {
    fn new() -> OriginStreams {
        OriginStreams {
            dense: Arc::new(Stream::new()),
            sparse: None,
        }
    }

    #[inline]
    fn get(&self, seq: u64) -> Option<Entry> {
        match self.dense.get(seq) {
            Some(e) => Some(e),
            None => self.sparse.as_ref()?.get(&seq).copied(),
        }
    }

    /// Entries with a sequence number at or above `from`, in order (a
    /// number is in the slots or in the sparse map, never both).
    fn starting_at(&self, from: u64) -> impl Iterator<Item = (u64, Entry)> + '_ {
        let sparse = self
            .sparse
            .iter()
            .flat_map(move |m| m.range(from..))
            .map(|(s, e)| (*s, *e));
        MergeBySeq {
            a: self.dense.dense_range(from, u64::MAX).peekable(),
            b: sparse.peekable(),
        }
    }

    /// Entries with a sequence number above `seq`, in order.
    fn after(&self, seq: u64) -> impl Iterator<Item = (u64, Entry)> + '_ {
        let dense_from = seq.saturating_add(1);
        let dense_end = if seq == u64::MAX { 0 } else { u64::MAX };
        let sparse = self
            .sparse
            .iter()
            .flat_map(move |m| m.range((Bound::Excluded(seq), Bound::Unbounded)))
            .map(|(s, e)| (*s, *e));
        MergeBySeq {
            a: self.dense.dense_range(dense_from, dense_end).peekable(),
            b: sparse.peekable(),
        }
    }
}

/// Two runs of (sequence number, entry), each in order, merged.
struct MergeBySeq<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<A, B> Iterator for MergeBySeq<A, B>
where
    A: Iterator<Item = (u64, Entry)>,
    B: Iterator<Item = (u64, Entry)>,
{
    type Item = (u64, Entry);

    fn next(&mut self) -> Option<(u64, Entry)> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) if y.0 < x.0 => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

type Origins = FxHashMap<Origin, OriginStreams>;

/// One immutable version of the index's structure: what a reader holds.
/// Appends in place to `order`'s open chunk and stores into the streams'
/// slot arrays are the only changes a reader of a version may see (both
/// only make notes appear).
pub struct Version {
    /// Increases by one per published version.
    number: u64,
    order: Order,
    origins: Arc<Origins>,
}

/// The one index of a process (see the module doc).
pub struct SharedIndex {
    /// The writers' side; readers never touch it.
    writer: Mutex<Writer>,
    /// The newest version, for views to refresh to.
    current: ArcSwap<Version>,
    /// `current`'s number, stored after it: a view compares this before it
    /// touches `current`.
    current_number: AtomicU64,
    /// Total UTF-8 bytes of all note texts.
    text_bytes: AtomicU64,
    /// Which notes are held; stored after they are visible.
    digest: DigestCell,
}

struct Writer {
    /// Equal to `current` (the writer's own reference).
    version: Arc<Version>,
    /// The record chunks every entry points into (kept alive here).
    owners: Vec<Arc<[u8]>>,
    /// Scratch: the late notes of one insert call.
    late: Vec<Entry>,
    /// What `SharedIndex::digest` will say once this insert call is done.
    digest: Digest,
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

/// The shared index's [`Digest`], written by the writer (under its lock)
/// and read by any core without one: a sequence lock, so a reader never
/// sees the count of one set with the sum of another.
#[derive(Default)]
struct DigestCell {
    /// Odd while a write is under way.
    seq: AtomicU64,
    notes: AtomicU64,
    id_sum: AtomicU64,
}

impl DigestCell {
    fn new(digest: Digest) -> DigestCell {
        DigestCell {
            seq: AtomicU64::new(0),
            notes: AtomicU64::new(digest.notes),
            id_sum: AtomicU64::new(digest.id_sum),
        }
    }

    /// Only under the writer lock (one writer at a time).
    fn store(&self, digest: Digest) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.notes.store(digest.notes, Ordering::Relaxed);
        self.id_sum.store(digest.id_sum, Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    fn load(&self) -> Digest {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            let digest = Digest {
                notes: self.notes.load(Ordering::Relaxed),
                id_sum: self.id_sum.load(Ordering::Relaxed),
            };
            fence(Ordering::Acquire);
            if before % 2 == 0 && self.seq.load(Ordering::Relaxed) == before {
                return digest;
            }
            std::hint::spin_loop();
        }
    }
}

/// What one insert call changed that needs a new version.
#[derive(Default)]
struct Changes {
    order: Option<Order>,
    origins: Option<Origins>,
}

impl SharedIndex {
    /// An empty index.
    pub fn new() -> Arc<SharedIndex> {
        SharedIndex::from_parts(
            Order::new(),
            Origins::default(),
            Vec::new(),
            0,
            Digest::default(),
        )
    }

    fn from_parts(
        order: Order,
        origins: Origins,
        owners: Vec<Arc<[u8]>>,
        text_bytes: u64,
        digest: Digest,
    ) -> Arc<SharedIndex> {
        let version = Arc::new(Version {
            number: 0,
            order,
            origins: Arc::new(origins),
        });
        Arc::new(SharedIndex {
            current: ArcSwap::new(Arc::clone(&version)),
            writer: Mutex::new(Writer {
                version,
                owners,
                late: Vec::new(),
                digest,
            }),
            current_number: AtomicU64::new(0),
            text_bytes: AtomicU64::new(text_bytes),
            digest: DigestCell::new(digest),
        })
    }

    /// A view of the newest version, for one core.
    pub fn view(self: &Arc<SharedIndex>) -> Index {
        Index {
            version: self.current.load_full(),
            shared: Arc::clone(self),
        }
    }

    /// Notes held (in the newest version).
    pub fn len(&self) -> usize {
        self.current.load().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a durable note; returns false (and changes nothing) if its id
    /// is known. Visible to every view once this returns (after a refresh
    /// for a view of an older version).
    pub fn insert(&self, note_ref: &NoteRef) -> bool {
        self.insert_all(std::slice::from_ref(note_ref), |_| {}) == 1
    }

    /// Adds durable notes in one go (one lock, at most one new version);
    /// calls `inserted` for each that was new. Returns how many were.
    pub fn insert_all(&self, notes: &[NoteRef], mut inserted: impl FnMut(&NoteRef)) -> usize {
        // A panic under the lock is a bug in this file; the state it leaves
        // is still readable (every store is a whole entry), so carry on.
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let writer = &mut *writer;
        let mut changes = Changes::default();
        let mut added = 0;
        for note_ref in notes {
            if self.add(writer, &mut changes, note_ref) {
                inserted(note_ref);
                added += 1;
            }
        }
        if !writer.late.is_empty() {
            writer.late.sort_unstable_by_key(|e| e.key());
            let order = changes.order.as_ref().unwrap_or(&writer.version.order);
            changes.order = Some(order.with_late(&writer.late));
            writer.late.clear();
        }
        if changes.order.is_some() || changes.origins.is_some() {
            let version = Arc::new(Version {
                number: writer.version.number + 1,
                order: changes
                    .order
                    .unwrap_or_else(|| writer.version.order.clone()),
                origins: changes
                    .origins
                    .map_or_else(|| Arc::clone(&writer.version.origins), Arc::new),
            });
            self.current.store(Arc::clone(&version));
            self.current_number.store(version.number, Ordering::Release);
            writer.version = version;
        }
        if added > 0 {
            // After the notes are visible (see the module doc).
            self.digest.store(writer.digest);
        }
        added
    }

    /// One note of an insert call (see `insert_all`).
    fn add(&self, writer: &mut Writer, changes: &mut Changes, note_ref: &NoteRef) -> bool {
        let note = note_ref.note();
        let id = note.id();
        let entry = note_ref.entry();
        let origins = changes.origins.as_ref().unwrap_or(&writer.version.origins);
        match origins.get(&id.origin) {
            Some(streams) if streams.get(id.seq).is_some() => return false,
            Some(streams) if streams.dense.fits_dense(id.seq) => {
                streams.dense.put(id.seq, entry);
            }
            _ => {
                // A new origin or a far-out number: the origin map changes.
                let origins = changes
                    .origins
                    .get_or_insert_with(|| (*writer.version.origins).clone());
                put_stream(origins, id, entry);
            }
        }
        if !writer
            .owners
            .last()
            .is_some_and(|o| Arc::ptr_eq(o, &note_ref.chunk))
        {
            writer.owners.push(Arc::clone(&note_ref.chunk));
        }
        self.text_bytes
            .fetch_add(note.text().len() as u64, Ordering::Relaxed);
        writer.digest.notes += 1;
        writer.digest.id_sum = writer.digest.id_sum.wrapping_add(id_hash(&id));
        let order = changes.order.as_ref().unwrap_or(&writer.version.order);
        let key = (note.created_at_us(), id);
        if order.last().is_none_or(|last| last.key() < key) {
            if order.append(entry) {
                changes.order = Some(order.sealed());
            }
        } else {
            writer.late.push(entry);
        }
        true
    }
}

/// Stores `entry` in its origin's streams, adding the origin if new (the
/// slow path: `origins` is the caller's own copy).
fn put_stream(origins: &mut Origins, id: NoteId, entry: Entry) {
    let streams = origins.entry(id.origin).or_insert_with(OriginStreams::new);
    debug_assert!(streams.get(id.seq).is_none());
    if streams.dense.fits_dense(id.seq) {
        streams.dense.put(id.seq, entry);
    } else {
        Arc::make_mut(streams.sparse.get_or_insert_default()).insert(id.seq, entry);
        streams.dense.raise_seq_max(id.seq);
    }
}

/// One core's view of all notes: the shared index, read through the
/// version this core last refreshed to (see the module doc). Cloning a
/// view is cheap and gives another view of the same index.
#[derive(Clone)]
pub struct Index {
    shared: Arc<SharedIndex>,
    version: Arc<Version>,
}

impl Default for Index {
    fn default() -> Index {
        Index::new()
    }
}

impl Index {
    /// A view of a new, empty index of its own.
    pub fn new() -> Index {
        SharedIndex::new().view()
    }

    /// The index this is a view of.
    pub fn shared(&self) -> &Arc<SharedIndex> {
        &self.shared
    }

    /// Moves this view to the newest version; true if it changed. One
    /// `Acquire` load when nothing did.
    #[inline]
    pub fn refresh(&mut self) -> bool {
        if self.shared.current_number.load(Ordering::Acquire) == self.version.number {
            return false;
        }
        self.version = self.shared.current.load_full();
        true
    }

    /// Adds a note to the shared index and refreshes this view; returns
    /// false (and changes nothing) if its id is known.
    pub fn insert(&mut self, note_ref: NoteRef) -> bool {
        let inserted = self.shared.insert(&note_ref);
        self.refresh();
        inserted
    }

    #[inline]
    pub fn get(&self, id: &NoteId) -> Option<NoteView<'_>> {
        self.version
            .origins
            .get(&id.origin)?
            .get(id.seq)
            .map(Entry::view)
    }

    pub fn contains(&self, id: &NoteId) -> bool {
        self.get(id).is_some()
    }

    /// Notes in this view's time order.
    #[inline]
    pub fn len(&self) -> usize {
        self.version.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total UTF-8 bytes of all note texts.
    pub fn text_bytes(&self) -> u64 {
        self.shared.text_bytes.load(Ordering::Relaxed)
    }

    /// Which notes the index holds (see [`Digest`]), then this view moved
    /// to the newest version. In that order: the writer stores the digest
    /// after the version holding its notes is published, so the view then
    /// shows at least the notes the digest names, and a response made from
    /// it may carry a tag made from the digest. (A view that is not
    /// refreshed may lag the digest by the notes of a new version: late
    /// notes, a new origin, a sealed chunk.)
    pub fn refresh_digest(&mut self) -> Digest {
        let digest = self.shared.digest.load();
        self.refresh();
        digest
    }

    /// The highest sequence number seen from an origin stream (0 if none).
    pub fn seq_max(&self, origin: Origin) -> u64 {
        self.version
            .origins
            .get(&origin)
            .map_or(0, |s| s.dense.seq_max())
    }

    /// The version vector: the highest sequence number held per origin.
    pub fn vector(&self) -> Vec<(Origin, u64)> {
        let mut v: Vec<(Origin, u64)> = self
            .version
            .origins
            .iter()
            .map(|(o, s)| (*o, s.dense.seq_max()))
            .collect();
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
        self.version
            .origins
            .get(&origin)
            .into_iter()
            .flat_map(move |s| s.after(seq))
            .map(|(_, e)| e.view())
    }

    /// The sequence numbers of one origin stream below its highest that
    /// this index lacks, as inclusive ranges in order, the lowest
    /// `ranges_max` of them. Holes come from damaged records skipped by
    /// recovery and from numbers whose write failed; a peer may have the
    /// notes (see `cluster::Cluster::send_holes`). O(notes of that origin):
    /// run on connect only, never on the request path.
    pub fn holes(&self, origin: Origin, ranges_max: usize) -> Vec<(u64, u64)> {
        let mut holes = Vec::new();
        let Some(streams) = self.version.origins.get(&origin) else {
            return holes;
        };
        let mut expected = 1u64;
        for (seq, _) in streams.starting_at(0) {
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
        let key = match before {
            Some(id) => Some(self.get(id)?.key()),
            None => None,
        };
        Some(self.version.order.newest(key.as_ref()).map(Entry::view))
    }
}

/// Builds an index in bulk from the log at start-up: entries are collected
/// in log order and sorted once at the end, if the log was not in time
/// order already (a log written by several cores interleaves their
/// streams). Inserting them one by one would copy chunks for every note
/// that arrives late.
#[derive(Default)]
pub struct IndexBuilder {
    entries: Vec<Entry>,
    origins: Origins,
    owners: Vec<Arc<[u8]>>,
    text_bytes: u64,
    id_sum: u64,
    /// The newest key so far, while `entries` is in key order.
    last_key: Option<Key>,
    sorted: bool,
}

impl IndexBuilder {
    pub fn new() -> IndexBuilder {
        IndexBuilder {
            sorted: true,
            ..IndexBuilder::default()
        }
    }

    /// Adds a note; returns false (and changes nothing) if its id is known.
    pub fn insert(&mut self, note_ref: NoteRef) -> bool {
        let note = note_ref.note();
        let id = note.id();
        if self
            .origins
            .get(&id.origin)
            .is_some_and(|s| s.get(id.seq).is_some())
        {
            return false;
        }
        let entry = note_ref.entry();
        put_stream(&mut self.origins, id, entry);
        self.text_bytes += note.text().len() as u64;
        self.id_sum = self.id_sum.wrapping_add(id_hash(&id));
        let key = (note.created_at_us(), id);
        if self.sorted {
            if self.last_key.is_some_and(|last| last > key) {
                self.sorted = false;
            } else {
                self.last_key = Some(key);
            }
        }
        self.entries.push(entry);
        if !self
            .owners
            .last()
            .is_some_and(|o| Arc::ptr_eq(o, &note_ref.chunk))
        {
            self.owners.push(note_ref.chunk);
        }
        true
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The index, and a first view of it.
    pub fn finish(mut self) -> Index {
        if !self.sorted {
            // Sort by creation time alone (a plain integer key, no reads of
            // the notes), then break ties by id: 16 bytes per note, freed here.
            let entries = &self.entries;
            let mut keyed: Vec<(u64, usize)> = entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.view().note().created_at_us(), i))
                .collect();
            keyed.sort_unstable_by(|a, b| {
                a.0.cmp(&b.0).then_with(|| {
                    entries[a.1]
                        .view()
                        .note()
                        .id()
                        .cmp(&entries[b.1].view().note().id())
                })
            });
            let sorted: Vec<Entry> = keyed.into_iter().map(|(_, i)| entries[i]).collect();
            self.entries = sorted;
        }
        debug_assert!(self.entries.windows(2).all(|w| w[0].key() < w[1].key()));
        let order = Order::from_sorted(&self.entries);
        let digest = Digest {
            notes: self.entries.len() as u64,
            id_sum: self.id_sum,
        };
        SharedIndex::from_parts(order, self.origins, self.owners, self.text_bytes, digest).view()
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
        assert_eq!(one.refresh_digest(), Digest::default());
        for n in &notes {
            let before = one.refresh_digest();
            one.insert(n.clone());
            assert_ne!(one.refresh_digest(), before, "a new note changes it");
        }
        for n in notes.iter().rev() {
            other.insert(n.clone());
        }
        assert_eq!(
            one.refresh_digest(),
            other.refresh_digest(),
            "same notes, other order"
        );
        assert!(!one.insert(notes[0].clone()));
        assert_eq!(
            one.refresh_digest(),
            other.refresh_digest(),
            "a duplicate changes nothing"
        );
        // Same count, different notes.
        let mut third = Index::new();
        third.insert(notes[0].clone());
        third.insert(notes[1].clone());
        third.insert(note_ref(0, 3, 40, "d"));
        assert_ne!(third.refresh_digest(), one.refresh_digest());
        let mut built = IndexBuilder::new();
        for n in &notes {
            built.insert(n.clone());
        }
        assert_eq!(
            built.finish().refresh_digest(),
            one.refresh_digest(),
            "recovery's bulk build agrees"
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

    /// The notes of `index`, newest first, by id.
    fn ids(index: &Index) -> Vec<NoteId> {
        index.newest(None).unwrap().map(|v| v.note().id()).collect()
    }

    /// A deterministic pseudo-random sequence (no dependency for tests).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    #[test]
    fn late_notes_at_every_depth_keep_order_and_lookups_against_a_model() {
        // Tests use 4-entry chunks and 3-chunk groups, so a few hundred
        // notes cross every seal, chunk split and group split.
        let mut index = Index::new();
        let mut model: std::collections::BTreeMap<(u64, NoteId), ()> = Default::default();
        let mut rng = Lcg(7);
        let mut seq_by_core = [0u64; 3];
        for step in 0..600u64 {
            let core = (rng.next() % 3) as u16;
            seq_by_core[core as usize] += 1;
            let seq = seq_by_core[core as usize];
            // Mostly in order, sometimes far back.
            let back = match rng.next() % 10 {
                0 => rng.next() % (step + 1),
                1..=3 => rng.next() % 8,
                _ => 0,
            };
            let created = step.saturating_sub(back) * 10 + u64::from(core);
            let r = note_ref(core, seq, created, "x");
            let id = r.note().id();
            assert!(index.insert(r));
            model.insert((created, id), ());
            if step % 37 == 0 {
                let expected: Vec<NoteId> = model.keys().rev().map(|(_, id)| *id).collect();
                assert_eq!(ids(&index), expected, "after {step} notes");
                // Paging from any note gives the model's suffix.
                let mid = expected[expected.len() / 2];
                let after_mid: Vec<NoteId> = index
                    .newest(Some(&mid))
                    .unwrap()
                    .map(|v| v.note().id())
                    .collect();
                assert_eq!(after_mid, expected[expected.len() / 2 + 1..]);
            }
        }
        assert_eq!(index.len(), 600);
        let expected: Vec<NoteId> = model.keys().rev().map(|(_, id)| *id).collect();
        assert_eq!(ids(&index), expected);
        for (_, id) in model.keys() {
            assert_eq!(index.get(id).map(|v| v.note().id()), Some(*id));
        }
    }

    #[test]
    fn a_batch_with_late_notes_is_merged_once() {
        let shared = SharedIndex::new();
        let mut view = shared.view();
        let first: Vec<NoteRef> = (1..=20).map(|s| note_ref(0, s, s * 10, "a")).collect();
        assert_eq!(shared.insert_all(&first, |_| {}), 20);
        // Another core's notes from the same time, and one duplicate.
        let mut batch: Vec<NoteRef> = (1..=20).map(|s| note_ref(1, s, s * 10 + 5, "b")).collect();
        batch.push(note_ref(0, 3, 30, "a"));
        let mut new = Vec::new();
        assert_eq!(shared.insert_all(&batch, |r| new.push(r.note().id())), 20);
        assert_eq!(new.len(), 20);
        assert!(view.refresh());
        let created: Vec<u64> = view
            .newest(None)
            .unwrap()
            .map(|v| v.note().created_at_us())
            .collect();
        let mut expected = created.clone();
        expected.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(created, expected);
        assert_eq!(view.len(), 40);
    }

    #[test]
    fn an_old_view_stays_consistent_and_a_refresh_sees_everything() {
        let shared = SharedIndex::new();
        for s in 1..=10 {
            assert!(shared.insert(&note_ref(0, s, s * 10, "x")));
        }
        let old = shared.view();
        let before = ids(&old);
        // Late notes replace chunks by copies; in-order ones may be appended
        // in place to a chunk the old view can also see.
        for s in 1..=10 {
            shared.insert(&note_ref(1, s, s * 10 - 5, "y"));
            shared.insert(&note_ref(2, s, 1000 + s, "z"));
        }
        let seen = ids(&old);
        assert!(seen.len() >= before.len());
        let mut dedup = seen.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(dedup.len(), seen.len(), "no note twice");
        for id in &before {
            assert!(seen.contains(id), "an old view loses nothing");
        }
        let created: Vec<u64> = old
            .newest(None)
            .unwrap()
            .map(|v| v.note().created_at_us())
            .collect();
        assert!(created.windows(2).all(|w| w[0] > w[1]), "still in order");
        let mut fresh = old.clone();
        fresh.refresh();
        assert_eq!(fresh.len(), 30);
        // Lookups by id see a known origin's new notes before a refresh (a
        // new origin comes with a new version).
        assert!(shared.insert(&note_ref(0, 11, 2000, "w")));
        assert!(old.get(&note_ref(0, 11, 2000, "w").note().id()).is_some());
        assert!(old.get(&note_ref(2, 1, 1001, "z").note().id()).is_none());
        assert!(fresh.get(&note_ref(2, 1, 1001, "z").note().id()).is_some());
    }

    #[test]
    fn the_builder_sorts_an_interleaved_log_and_skips_duplicates() {
        let mut builder = IndexBuilder::new();
        // Core 0's segment, then core 1's: the second interleaves in time.
        for s in 1..=50 {
            assert!(builder.insert(note_ref(0, s, s * 2, "a")));
        }
        for s in 1..=50 {
            assert!(builder.insert(note_ref(1, s, s * 2 + 1, "b")));
        }
        assert!(!builder.insert(note_ref(1, 7, 15, "b")));
        assert_eq!(builder.len(), 100);
        let mut index = builder.finish();
        assert_eq!(index.len(), 100);
        let created: Vec<u64> = index
            .newest(None)
            .unwrap()
            .map(|v| v.note().created_at_us())
            .collect();
        assert_eq!(created, (2..=101).rev().collect::<Vec<u64>>());
        assert_eq!(index.text_bytes(), 100);
        // And it goes on taking notes like any index.
        assert!(index.insert(note_ref(0, 51, 1, "late")));
        assert_eq!(
            index.newest(None).unwrap().last().unwrap().note().text(),
            "late"
        );
    }

    #[test]
    fn writers_and_readers_on_many_threads() {
        // Four writers (each its own stream, times interleaved, so many
        // notes are late) and two readers that check every view they see.
        const PER_WRITER: u64 = 500;
        let shared = SharedIndex::new();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for core in 0..4u16 {
                let shared = &shared;
                s.spawn(move || {
                    for seq in 1..=PER_WRITER {
                        let created = seq * 4 + u64::from(core);
                        assert!(shared.insert(&note_ref(core, seq, created, "t")));
                    }
                });
            }
            for _ in 0..2 {
                let (shared, done) = (&shared, &done);
                s.spawn(move || {
                    let mut view = shared.view();
                    let mut last_len = 0;
                    while !done.load(Ordering::Acquire) {
                        view.refresh();
                        let created: Vec<u64> = view
                            .newest(None)
                            .unwrap()
                            .map(|v| v.note().created_at_us())
                            .collect();
                        assert!(created.windows(2).all(|w| w[0] > w[1]));
                        assert!(created.len() >= last_len, "a view never shrinks");
                        last_len = created.len();
                    }
                });
            }
            while shared.len() < 4 * PER_WRITER as usize {
                std::thread::yield_now();
            }
            done.store(true, Ordering::Release);
        });
        let view = shared.view();
        assert_eq!(view.len(), 2000);
        let created: Vec<u64> = view
            .newest(None)
            .unwrap()
            .map(|v| v.note().created_at_us())
            .collect();
        assert_eq!(created, (4..2004).rev().collect::<Vec<u64>>());
    }
}
