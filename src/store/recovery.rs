//! Recovery: rebuild the index from the segments on start-up.
//!
//! Every record's checksum is verified and every payload is validated as a
//! note before it is indexed, so nothing damaged is ever served. Damage is
//! handled by where it is:
//! - a torn or corrupt *tail* (no valid record follows) is cut off the file
//!   (the usual result of a crash in the middle of a write);
//! - damage in the *middle* of a segment (a valid record follows, found by
//!   scanning forward) is skipped and reported; the records after it are
//!   kept. The damaged note can only come back from a replica.
//!
//! [`recover`] runs once, on the main thread, before any executor starts,
//! and builds the one index every core shares (`index.rs`).
//! [`rescan_core_since`] runs when the watchdog restarts a shard: it reads
//! only the segments of that core that its failed incarnations wrote, for
//! notes made durable but never indexed (a crash between the two), without
//! repairing anything, while the other cores keep appending to theirs.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rustc_hash::FxHashMap;

use super::index::{Index, IndexBuilder, NoteRef, SharedIndex};
use super::record::{self, Decoded, RECORD_HEADER_BYTES};
use super::segment::{self, HeaderError, SEGMENT_HEADER_BYTES};
use super::StoreError;

/// What recovery did, for the start-up log line and `/_status`.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    pub duplicates: u64,
    pub bytes: u64,
    pub elapsed_ms: u64,
    /// Tails cut off: (file, offset where the cut starts, bytes removed).
    pub truncated: Vec<(PathBuf, u64, u64)>,
    /// Damaged ranges skipped inside a segment: (file, offset, bytes).
    pub skipped: Vec<(PathBuf, u64, u64)>,
    /// Files ignored because they are not readable segments: (file, why).
    pub rejected: Vec<(PathBuf, String)>,
}

/// The result of recovery: all notes, and where each core continues.
pub struct Recovered {
    pub index: Index,
    /// The number of the next segment each core should create.
    pub next_segment_by_core: FxHashMap<u16, u32>,
    pub report: RecoveryReport,
}

/// Scans `data_dir/log`, repairing tails in place when `repair` is true.
pub fn recover(data_dir: &Path, repair: bool) -> Result<Recovered, StoreError> {
    let started = Instant::now();
    let segments = list_segments(data_dir)?;
    let mut builder = IndexBuilder::new();
    let mut next_segment_by_core: FxHashMap<u16, u32> = FxHashMap::default();
    let mut report = RecoveryReport::default();
    for (core, number, path) in &segments {
        let next = next_segment_by_core.entry(*core).or_insert(1);
        *next = (*next).max(number + 1);
        scan_segment(path, repair, &mut report, &mut |note_ref| {
            builder.insert(note_ref)
        })?;
    }
    report.segments = segments.len();
    let index = builder.finish();
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(Recovered {
        index,
        next_segment_by_core,
        report,
    })
}

/// Adds to `index` every note in `core`'s segments numbered `first_segment`
/// or above that it lacks, and returns those notes (for the caller to pass
/// on, as if just written). These are the segments of a failed shard's
/// incarnations: a note they made durable but did not index (a crash in
/// between) is found here; every other note of the log is in the index
/// already (see `shard::tasks::run`).
///
/// Never repairs: another incarnation of the core (a stalled one that woke
/// up) may still append while this reads, so a torn record at a tail is
/// usually a write in progress. Such a record is not yet acknowledged; its
/// writer indexes it once it is durable.
pub fn rescan_core_since(
    data_dir: &Path,
    core: u16,
    first_segment: u32,
    index: &SharedIndex,
) -> Result<(RecoveryReport, Vec<NoteRef>), StoreError> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let mut found: Vec<NoteRef> = Vec::new();
    for (seg_core, number, path) in list_segments(data_dir)? {
        if seg_core != core || number < first_segment {
            continue;
        }
        let mut notes: Vec<NoteRef> = Vec::new();
        match scan_segment(&path, false, &mut report, &mut |note_ref| {
            notes.push(note_ref);
            true
        }) {
            Ok(()) => report.segments += 1,
            // A segment being created right now may not be visible yet;
            // anything else is a real error.
            Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let added = index.insert_all(&notes, |r| found.push(r.clone()));
        report.duplicates += (notes.len() - added) as u64;
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok((report, found))
}

/// The segments in `data_dir/log` as (core, number, path), in order.
fn list_segments(data_dir: &Path) -> Result<Vec<(u16, u32, PathBuf)>, StoreError> {
    let dir = segment::log_dir(data_dir);
    let mut segments: Vec<(u16, u32, PathBuf)> = Vec::new();
    match fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(|e| StoreError::io("listing", &dir, e))?;
                let name = entry.file_name();
                if let Some((core, number)) = name.to_str().and_then(segment::parse_file_name) {
                    segments.push((core, number, entry.path()));
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io("listing", &dir, e)),
    }
    segments.sort();
    Ok(segments)
}

/// Reads one segment, handing each valid record to `add` (which returns
/// false for a note already held: counted as a duplicate).
fn scan_segment(
    path: &Path,
    repair: bool,
    report: &mut RecoveryReport,
    add: &mut dyn FnMut(NoteRef) -> bool,
) -> Result<(), StoreError> {
    let bytes = fs::read(path).map_err(|e| StoreError::io("reading", path, e))?;
    let mut pos = SEGMENT_HEADER_BYTES;
    match segment::check_header(&bytes) {
        Ok(()) => {}
        Err(e)
            if e == HeaderError::Short
                || (e == HeaderError::NotASegment && bytes.iter().all(|&b| b == 0)) =>
        {
            // Short: a crash while the segment was being created. Only
            // zeros: the file's size reached the disk but not its header (a
            // power cut during the creation, on a file system that orders
            // size before data; the power-cut harness's `reorder` mode
            // makes these). Either way it holds nothing.
            if repair {
                fs::remove_file(path).map_err(|e| StoreError::io("removing", path, e))?;
            }
            report
                .truncated
                .push((path.to_owned(), 0, bytes.len() as u64));
            return Ok(());
        }
        Err(HeaderError::NotASegment) => {
            // A damaged header (a bad first sector). Records check
            // themselves: serve those after it rather than lose the file.
            let chunk: &[u8] = &bytes;
            match (SEGMENT_HEADER_BYTES..chunk.len()).find(|&q| valid_record_in(chunk, q).is_some())
            {
                Some(first) => {
                    report.skipped.push((path.to_owned(), 0, first as u64));
                    pos = first;
                }
                None => {
                    report
                        .rejected
                        .push((path.to_owned(), HeaderError::NotASegment.to_string()));
                    return Ok(());
                }
            }
        }
        Err(e) => {
            report.rejected.push((path.to_owned(), e.to_string()));
            return Ok(());
        }
    }
    report.bytes += bytes.len() as u64;
    let chunk: Arc<[u8]> = bytes.into();
    while pos < chunk.len() {
        if let Some(total) = valid_record_at(&chunk, pos) {
            // valid_record_at checked the checksum and validated the payload.
            let note_ref = NoteRef::in_chunk_validated(&chunk, pos);
            report.records += 1;
            if !add(note_ref) {
                report.duplicates += 1;
            }
            pos += total;
            continue;
        }
        match (pos + 1..chunk.len()).find(|&q| valid_record_at(&chunk, q).is_some()) {
            Some(resume) => {
                report
                    .skipped
                    .push((path.to_owned(), pos as u64, (resume - pos) as u64));
                pos = resume;
            }
            None => {
                let cut = (chunk.len() - pos) as u64;
                if repair {
                    truncate(path, pos as u64)?;
                }
                report.truncated.push((path.to_owned(), pos as u64, cut));
                break;
            }
        }
    }
    Ok(())
}

/// The total size of the record at `pos` if it is whole, checksummed and a valid note.
fn valid_record_at(chunk: &Arc<[u8]>, pos: usize) -> Option<usize> {
    valid_record_in(chunk, pos)
}

fn valid_record_in(chunk: &[u8], pos: usize) -> Option<usize> {
    match record::decode(&chunk[pos..]) {
        Decoded::Record { total_bytes } => {
            let payload = &chunk[pos + RECORD_HEADER_BYTES..pos + total_bytes];
            super::note::access(payload).ok().map(|_| total_bytes)
        }
        Decoded::Incomplete | Decoded::Corrupt(_) => None,
    }
}

fn truncate(path: &Path, len: u64) -> Result<(), StoreError> {
    let file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StoreError::io("opening for repair", path, e))?;
    file.set_len(len)
        .map_err(|e| StoreError::io("truncating", path, e))?;
    if super::durability::skipped(super::durability::SyncStep::RecoveryCut) {
        return Ok(());
    }
    file.sync_all()
        .map_err(|e| StoreError::io("syncing", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::note::{self, Note, NoteId, Origin};
    use crate::store::record;

    fn payload(core: u16, seq: u64) -> Vec<u8> {
        note::archive(&Note {
            id: NoteId {
                origin: Origin { node: 1, core },
                seq,
            },
            created_at_us: seq,
            text: format!("note {core}-{seq}"),
        })
    }

    fn write_segment(data_dir: &Path, core: u16, number: u32, seqs: &[u64], tail: &[u8]) {
        let mut bytes = segment::header().to_vec();
        for &seq in seqs {
            record::encode_into(&mut bytes, &payload(core, seq));
        }
        bytes.extend_from_slice(tail);
        let dir = segment::log_dir(data_dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(segment::file_name(core, number)), bytes).unwrap();
    }

    #[test]
    fn a_damaged_header_costs_only_the_records_in_its_sector() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path();
        write_segment(data, 0, 1, &(1..=40).collect::<Vec<_>>(), &[]);
        let seg = segment::log_dir(data).join(segment::file_name(0, 1));
        let mut bytes = fs::read(&seg).unwrap();
        bytes[..512].fill(0); // the first sector, header included
        fs::write(&seg, &bytes).unwrap();
        let recovered = recover(data, true).unwrap();
        let report = &recovered.report;
        assert!(report.rejected.is_empty(), "{report:?}");
        assert_eq!(report.skipped.len(), 1, "{report:?}");
        assert_eq!(report.skipped[0].1, 0);
        // Every record that starts after the zeroed sector is kept.
        let mut pos = SEGMENT_HEADER_BYTES;
        let mut after_sector = 0;
        for seq in 1..=40 {
            if pos >= 512 {
                after_sector += 1;
            }
            let mut one = Vec::new();
            record::encode_into(&mut one, &payload(0, seq));
            pos += one.len();
        }
        assert!(after_sector > 0 && after_sector < 40);
        assert_eq!(recovered.index.len(), after_sector);
        assert_eq!(
            recovered.index.seq_max(Origin { node: 1, core: 0 }),
            40,
            "the records after the damaged sector are served"
        );
    }

    #[test]
    fn a_segment_of_only_zeros_is_removed_like_a_torn_creation() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path();
        write_segment(data, 0, 1, &[1, 2], &[]);
        let dir = segment::log_dir(data);
        let zeros = dir.join(segment::file_name(0, 2));
        fs::write(&zeros, [0u8; 4096]).unwrap();
        let junk = dir.join(segment::file_name(0, 3));
        fs::write(&junk, [7u8; 100]).unwrap();
        let recovered = recover(data, true).unwrap();
        assert_eq!(recovered.index.len(), 2);
        assert!(!zeros.exists(), "a zero-filled segment holds nothing");
        assert!(junk.exists(), "a file with other bytes is never removed");
        assert_eq!(recovered.report.rejected.len(), 1);
        assert_eq!(recovered.next_segment_by_core[&0], 4);
    }

    #[test]
    fn rescan_reads_only_the_cores_new_segments_and_repairs_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path();
        // Found at start-up: core 0 segment 1, core 1 segment 1.
        write_segment(data, 0, 1, &[1, 2], &[]);
        write_segment(data, 1, 1, &[1], &[]);
        let recovered = recover(data, true).unwrap();
        assert_eq!(recovered.index.len(), 3);
        // Written since: core 0 segment 2 (with a record still being
        // appended: its tail is torn), core 2 segment 1 (another core).
        let mut torn = Vec::new();
        record::encode_into(&mut torn, &payload(0, 5));
        torn.truncate(torn.len() - 3);
        write_segment(data, 0, 2, &[3, 4], &torn);
        write_segment(data, 2, 1, &[1], &[]);
        let seg = segment::log_dir(data).join(segment::file_name(0, 2));
        let len_before = fs::metadata(&seg).unwrap().len();

        let shared = recovered.index.shared();
        let first = recovered.next_segment_by_core[&0];
        let (report, found) = rescan_core_since(data, 0, first, shared).unwrap();
        assert_eq!(
            report.segments, 1,
            "only core 0's segments of this run are read"
        );
        assert_eq!(report.records, 2);
        let seqs: Vec<u64> = found.iter().map(|r| r.note().id().seq).collect();
        assert_eq!(seqs, [3, 4], "the notes it lacked are handed back");
        let mut view = shared.view();
        view.refresh();
        assert_eq!(view.len(), 5);
        assert_eq!(view.seq_max(Origin { node: 1, core: 0 }), 4);
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            len_before,
            "a tail being appended must not be cut"
        );
        // Records already known are ignored, not doubled.
        let (again, found) = rescan_core_since(data, 0, first, shared).unwrap();
        assert_eq!(again.duplicates, 2);
        assert!(found.is_empty());
        assert_eq!(shared.view().len(), 5);
    }

    #[test]
    fn a_log_written_by_several_cores_is_recovered_in_time_order() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path();
        // `payload` uses the sequence number as the creation time: the
        // cores' streams interleave in time, segment by segment.
        write_segment(data, 0, 1, &(1..=30).step_by(2).collect::<Vec<_>>(), &[]);
        write_segment(data, 1, 1, &(2..=30).step_by(2).collect::<Vec<_>>(), &[]);
        write_segment(data, 0, 2, &(31..=40).collect::<Vec<_>>(), &[]);
        let recovered = recover(data, true).unwrap();
        let created: Vec<u64> = recovered
            .index
            .newest(None)
            .unwrap()
            .map(|v| v.note().created_at_us())
            .collect();
        assert_eq!(created, (1..=40).rev().collect::<Vec<u64>>());
    }
}
