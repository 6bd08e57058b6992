//! The time order of all notes, shared by every core: entries sorted by
//! (creation time, id), in chunks that are never changed once a reader may
//! see them, except by appending past what readers were told.
//!
//! Layout: an [`Order`] is a spine of [`Group`]s (at most [`GROUP_CHUNKS`]
//! sealed chunks each) plus one *open* [`Chunk`] at the end. A chunk holds
//! up to [`CHUNK_ENTRIES`] thin entries (8 bytes each) and a fill count.
//!
//! How it changes (the index's writer, under its lock, is the only one):
//! - **append** (the common case: a note newer than every note held): the
//!   entry is stored in the open chunk's next slot, then the fill count is
//!   raised with `Release`. Readers load the fill with `Acquire` and read
//!   only slots below it, so they see the new entry whole or not at all,
//!   and no slot they may read is ever written again;
//! - **seal**: a full open chunk joins the last group (or a new one) and a
//!   new, empty open chunk takes its place: a new `Order` value whose spine
//!   and last group are copies of the old (pointers only);
//! - **late** notes (older than the newest held: written through another
//!   core or node a moment ago, or replicated after a split) are merged in
//!   by copy-on-write: each chunk that receives some is replaced by new
//!   chunk(s) (split when over [`CHUNK_ENTRIES`]), its group by a copy
//!   (split when over [`GROUP_CHUNKS`]), and the spine by a copy. The old
//!   chunks stay untouched for readers still holding the old `Order`.
//!
//! Invariants (checked by `debug_assert!` and the tests): every sealed
//! chunk and every group is non-empty; entries are sorted across the
//! whole order, sealed chunks first, then the open chunk; `sealed` is the
//! number of entries in the groups; a chunk's fill never decreases and only
//! the open chunk of the writer's current version ever grows.
//!
//! Cost: an append is two stores; a seal copies the last group and the
//! spine (about `notes / (CHUNK_ENTRIES * GROUP_CHUNKS)` pointers: 31 at a
//! million notes); a late note copies one chunk (4 KiB), its group and the
//! spine. Memory: 8 bytes per note plus, per chunk, its fill count; chunks
//! split by late notes may be half full.

use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Entry, Key};

/// Entries per chunk: a 4 KiB array of pointers. Small enough that copying
/// one for a late note is cheap, large enough that the spine stays short.
pub(super) const CHUNK_ENTRIES: usize = if cfg!(test) { 4 } else { 512 };

/// Chunks per group: a seal or a late note copies one group's pointers.
pub(super) const GROUP_CHUNKS: usize = if cfg!(test) { 3 } else { 64 };

/// Up to [`CHUNK_ENTRIES`] entries, sorted; see the module doc for who may
/// write what.
pub(super) struct Chunk {
    /// Entries readers may read: `slots[..fill]`.
    fill: AtomicUsize,
    slots: [AtomicPtr<u8>; CHUNK_ENTRIES],
}

impl Chunk {
    fn new(entries: &[Entry]) -> Arc<Chunk> {
        debug_assert!(entries.len() <= CHUNK_ENTRIES);
        let chunk = Arc::new(Chunk {
            fill: AtomicUsize::new(0),
            slots: [const { AtomicPtr::new(ptr::null_mut()) }; CHUNK_ENTRIES],
        });
        for (slot, e) in chunk.slots.iter().zip(entries) {
            slot.store(e.0.as_ptr(), Ordering::Relaxed);
        }
        // Published with the `Order` that holds it (an `ArcSwap` store,
        // which releases these writes).
        chunk.fill.store(entries.len(), Ordering::Release);
        chunk
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        self.fill.load(Ordering::Acquire)
    }

    /// Entry `i` (`i < len()` as loaded by the caller).
    #[inline]
    fn entry(&self, i: usize) -> Entry {
        let p = self.slots[i].load(Ordering::Relaxed);
        debug_assert!(!p.is_null(), "a slot below the fill holds an entry");
        // SAFETY: slots below the fill were stored non-null before the fill
        // was raised (`Release`), and the caller loaded the fill (`Acquire`).
        Entry(unsafe { NonNull::new_unchecked(p) })
    }

    fn entries(&self) -> Vec<Entry> {
        (0..self.len()).map(|i| self.entry(i)).collect()
    }

    fn first(&self) -> Entry {
        self.entry(0)
    }

    /// Index of the first entry whose key is not below `key`.
    fn partition(&self, len: usize, key: &Key) -> usize {
        let (mut lo, mut hi) = (0, len);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.entry(mid).key() < *key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// Sealed chunks, oldest first.
pub(super) struct Group {
    chunks: Box<[Arc<Chunk>]>,
}

impl Group {
    fn first(&self) -> Entry {
        self.chunks[0].first()
    }
}

/// One version of the order (see the module doc). Cloning copies three
/// pointers.
#[derive(Clone)]
pub(super) struct Order {
    groups: Arc<[Arc<Group>]>,
    /// Entries in `groups`.
    sealed: usize,
    open: Arc<Chunk>,
}

/// Where an entry is, or goes: `group == groups.len()` is the open chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    group: usize,
    chunk: usize,
    offset: usize,
}

impl Order {
    pub(super) fn new() -> Order {
        Order {
            groups: Arc::from(Vec::new()),
            sealed: 0,
            open: Chunk::new(&[]),
        }
    }

    /// An order of `sorted` (already in key order), chunks filled.
    pub(super) fn from_sorted(sorted: &[Entry]) -> Order {
        let full = sorted.len() / CHUNK_ENTRIES * CHUNK_ENTRIES;
        let chunks: Vec<Arc<Chunk>> = sorted[..full]
            .chunks(CHUNK_ENTRIES)
            .map(Chunk::new)
            .collect();
        let groups: Vec<Arc<Group>> = chunks
            .chunks(GROUP_CHUNKS)
            .map(|c| Arc::new(Group { chunks: c.into() }))
            .collect();
        let order = Order {
            groups: groups.into(),
            sealed: full,
            open: Chunk::new(&sorted[full..]),
        };
        order.debug_check();
        order
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        self.sealed + self.open.len()
    }

    /// The newest entry.
    pub(super) fn last(&self) -> Option<Entry> {
        match self.open.len() {
            0 => {
                let group = self.groups.last()?;
                let chunk = group.chunks.last()?;
                Some(chunk.entry(chunk.len() - 1))
            }
            n => Some(self.open.entry(n - 1)),
        }
    }

    fn chunk(&self, group: usize, chunk: usize) -> &Chunk {
        if group == self.groups.len() {
            &self.open
        } else {
            &self.groups[group].chunks[chunk]
        }
    }

    /// The position of the first entry whose key is not below `key`.
    fn locate(&self, key: &Key) -> Pos {
        let open_len = self.open.len();
        if open_len > 0 && self.open.first().key() < *key {
            return Pos {
                group: self.groups.len(),
                chunk: 0,
                offset: self.open.partition(open_len, key),
            };
        }
        let groups_below = self.groups.partition_point(|g| g.first().key() < *key);
        if groups_below == 0 {
            // Before everything (or nothing sealed: the open chunk's start).
            return Pos {
                group: 0,
                chunk: 0,
                offset: 0,
            };
        }
        let group = groups_below - 1;
        let chunks = &self.groups[group].chunks;
        let chunk = chunks.partition_point(|c| c.first().key() < *key) - 1;
        let c = &chunks[chunk];
        Pos {
            group,
            chunk,
            offset: c.partition(c.len(), key),
        }
    }

    /// Entries newest first, starting below `key` (every entry if `None`).
    pub(super) fn newest(&self, key: Option<&Key>) -> Newest<'_> {
        let pos = match key {
            Some(key) => self.locate(key),
            None => Pos {
                group: self.groups.len(),
                chunk: 0,
                offset: self.open.len(),
            },
        };
        Newest {
            order: self,
            group: pos.group,
            chunk: pos.chunk,
            current: self.chunk(pos.group, pos.chunk),
            pos: pos.offset,
        }
    }

    /// Appends `entry` (newer than every entry held) to the open chunk in
    /// place. Writer only; the open chunk must have room. Returns true when
    /// the open chunk is now full (the caller seals it).
    pub(super) fn append(&self, entry: Entry) -> bool {
        let fill = self.open.fill.load(Ordering::Relaxed);
        debug_assert!(fill < CHUNK_ENTRIES, "the open chunk is sealed when full");
        debug_assert!(self.last().is_none_or(|l| l.key() < entry.key()));
        self.open.slots[fill].store(entry.0.as_ptr(), Ordering::Relaxed);
        self.open.fill.store(fill + 1, Ordering::Release);
        fill + 1 == CHUNK_ENTRIES
    }

    /// This order with its (full) open chunk sealed and a new one opened.
    pub(super) fn sealed(&self) -> Order {
        let mut groups: Vec<Arc<Group>> = self.groups.to_vec();
        push_sealed(&mut groups, Arc::clone(&self.open));
        let order = Order {
            groups: groups.into(),
            sealed: self.sealed + self.open.len(),
            open: Chunk::new(&[]),
        };
        order.debug_check();
        order
    }

    /// This order with `late` merged in: `late` is sorted, every key in it
    /// is below the newest entry's, and none is held already.
    pub(super) fn with_late(&self, late: &[Entry]) -> Order {
        debug_assert!(late.windows(2).all(|w| w[0].key() < w[1].key()));
        if late.is_empty() {
            return self.clone();
        }
        // Which chunk each late entry goes to (positions only grow: `late`
        // is sorted), as runs of `late` per chunk.
        let mut runs: Vec<(usize, usize, std::ops::Range<usize>)> = Vec::new();
        for (i, e) in late.iter().enumerate() {
            let pos = self.locate(&e.key());
            match runs.last_mut() {
                Some((g, c, r)) if *g == pos.group && *c == pos.chunk => r.end = i + 1,
                _ => runs.push((pos.group, pos.chunk, i..i + 1)),
            }
        }
        let open_group = self.groups.len();
        let mut groups: Vec<Arc<Group>> = Vec::with_capacity(self.groups.len() + 1);
        let mut runs = runs.into_iter().peekable();
        for (g, group) in self.groups.iter().enumerate() {
            if runs.peek().is_none_or(|(rg, _, _)| *rg != g) {
                groups.push(Arc::clone(group));
                continue;
            }
            let mut chunks: Vec<Arc<Chunk>> = Vec::with_capacity(group.chunks.len() + 1);
            for (c, chunk) in group.chunks.iter().enumerate() {
                match runs.next_if(|(rg, rc, _)| *rg == g && *rc == c) {
                    Some((_, _, run)) => {
                        let merged = merge(&chunk.entries(), &late[run]);
                        split_evenly(&merged, CHUNK_ENTRIES, |part| chunks.push(Chunk::new(part)));
                    }
                    None => chunks.push(Arc::clone(chunk)),
                }
            }
            split_evenly(&chunks, GROUP_CHUNKS, |part| {
                groups.push(Arc::new(Group {
                    chunks: part.into(),
                }))
            });
        }
        let open = match runs.next() {
            Some((g, _, run)) => {
                debug_assert_eq!(g, open_group);
                let merged = merge(&self.open.entries(), &late[run]);
                let full = merged.len() / CHUNK_ENTRIES * CHUNK_ENTRIES;
                for part in merged[..full].chunks(CHUNK_ENTRIES) {
                    push_sealed(&mut groups, Chunk::new(part));
                }
                Chunk::new(&merged[full..])
            }
            None => Arc::clone(&self.open),
        };
        debug_assert!(runs.next().is_none());
        let open_len = open.len();
        let order = Order {
            groups: groups.into(),
            sealed: self.len() + late.len() - open_len,
            open,
        };
        order.debug_check();
        order
    }

    /// Checks the invariants (debug builds, O(chunks)).
    fn debug_check(&self) {
        if cfg!(debug_assertions) {
            let mut sealed = 0;
            for group in self.groups.iter() {
                assert!(!group.chunks.is_empty(), "no empty group");
                assert!(group.chunks.len() <= GROUP_CHUNKS);
                for chunk in group.chunks.iter() {
                    let n = chunk.len();
                    assert!((1..=CHUNK_ENTRIES).contains(&n), "no empty chunk");
                    sealed += n;
                }
            }
            assert_eq!(sealed, self.sealed);
            assert!(
                self.open.len() < CHUNK_ENTRIES,
                "a full open chunk is sealed"
            );
        }
    }
}

/// Adds a sealed chunk at the end: to the last group if it has room (a
/// copy of it), else as a new group.
fn push_sealed(groups: &mut Vec<Arc<Group>>, chunk: Arc<Chunk>) {
    debug_assert!(chunk.len() > 0);
    match groups.last_mut() {
        Some(last) if last.chunks.len() < GROUP_CHUNKS => {
            let mut chunks = last.chunks.to_vec();
            chunks.push(chunk);
            *last = Arc::new(Group {
                chunks: chunks.into(),
            });
        }
        _ => groups.push(Arc::new(Group {
            chunks: Box::new([chunk]),
        })),
    }
}

/// Calls `f` with consecutive parts of `items`, as few as keep each at most
/// `max` long, of nearly equal lengths.
fn split_evenly<T>(items: &[T], max: usize, mut f: impl FnMut(&[T])) {
    let parts = items.len().div_ceil(max);
    let mut start = 0;
    for part in 0..parts {
        let end = items.len() * (part + 1) / parts;
        f(&items[start..end]);
        start = end;
    }
}

/// The merge of two sorted runs of distinct keys.
fn merge(a: &[Entry], b: &[Entry]) -> Vec<Entry> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].key() < b[j].key() {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// Entries newest first (see [`Order::newest`]).
pub(super) struct Newest<'a> {
    order: &'a Order,
    /// The chunk being read: its entries `[..pos]` are still to come.
    group: usize,
    chunk: usize,
    current: &'a Chunk,
    pos: usize,
}

impl Iterator for Newest<'_> {
    type Item = Entry;

    #[inline]
    fn next(&mut self) -> Option<Entry> {
        loop {
            if self.pos > 0 {
                self.pos -= 1;
                return Some(self.current.entry(self.pos));
            }
            // The chunk before this one.
            if self.chunk > 0 {
                self.chunk -= 1;
            } else if self.group > 0 {
                self.group -= 1;
                self.chunk = self.order.groups[self.group].chunks.len() - 1;
            } else {
                return None;
            }
            self.current = self.order.chunk(self.group, self.chunk);
            self.pos = self.current.len();
        }
    }
}
