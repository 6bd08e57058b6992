//! Every sync the store performs, by name, and the switch that leaves one
//! out (for the power-cut harness only).
//!
//! ARCHITECTURE.md ("Durability, step by step") says why each is needed.
//! `tests/powerloss` removes them one at a time
//! ([`SKIP_SYNC_ENV`], accepted only with `--fault-injection`, see
//! `node.rs`) and shows what a power cut then does: losing an
//! acknowledged note, refusing to start, or nothing (a sync that is
//! there for tidiness, not for durability).
//!
//! The switch is a process-wide set of bits, written once on the main
//! thread before any executor starts and only read after.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// The environment variable naming syncs to leave out, comma-separated.
/// Makes acknowledged notes losable: tests and experiments only.
pub const SKIP_SYNC_ENV: &str = "URINGNOTES_UNSAFE_SKIP_SYNC";

/// One sync of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStep {
    /// `fdatasync` of the segment after each group-commit batch
    /// (`writer.rs`, `write_batch`): the records' bytes and the file size.
    RecordData,
    /// `fdatasync` of a new segment after its header (`writer.rs`, `roll`).
    SegmentHeader,
    /// `fsync` of `log/` after creating a segment (`writer.rs`, `roll`):
    /// the segment's name.
    SegmentDir,
    /// `fsync` of the parent of each directory the server creates (the
    /// data directory itself, `log/`) (`mod.rs`, `create_dirs_durably`).
    NewDirectory,
    /// `fsync` of `node.id.tmp` before it is renamed (`mod.rs`).
    NodeIdFile,
    /// `fsync` of the data directory after the rename to `node.id` (`mod.rs`).
    NodeIdDir,
    /// `fsync` of a segment after recovery cut its torn tail (`recovery.rs`).
    RecoveryCut,
}

impl SyncStep {
    /// Every step, in the order a note meets them.
    pub const ALL: [SyncStep; 7] = [
        SyncStep::NewDirectory,
        SyncStep::NodeIdFile,
        SyncStep::NodeIdDir,
        SyncStep::RecoveryCut,
        SyncStep::SegmentHeader,
        SyncStep::SegmentDir,
        SyncStep::RecordData,
    ];

    /// The name used in [`SKIP_SYNC_ENV`].
    pub fn name(self) -> &'static str {
        match self {
            SyncStep::RecordData => "record-data",
            SyncStep::SegmentHeader => "segment-header",
            SyncStep::SegmentDir => "segment-dir",
            SyncStep::NewDirectory => "new-directory",
            SyncStep::NodeIdFile => "node-id-file",
            SyncStep::NodeIdDir => "node-id-dir",
            SyncStep::RecoveryCut => "recovery-cut",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

static SKIPPED: AtomicU32 = AtomicU32::new(0);

/// Whether `step` is left out (never, unless [`skip`] was called).
pub fn skipped(step: SyncStep) -> bool {
    SKIPPED.load(Relaxed) & step.bit() != 0
}

/// Leaves `steps` out from now on, in this whole process.
pub fn skip(steps: &[SyncStep]) {
    let bits = steps.iter().fold(0, |acc, s| acc | s.bit());
    SKIPPED.fetch_or(bits, Relaxed);
}

/// The steps named in `list` (comma-separated names), or the unknown name.
pub fn parse_steps(list: &str) -> Result<Vec<SyncStep>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| {
            SyncStep::ALL
                .into_iter()
                .find(|s| s.name() == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = SyncStep::ALL.iter().map(|s| s.name()).collect();
                    format!(
                        "{SKIP_SYNC_ENV} names an unknown sync {name:?} (known: {})",
                        known.join(", ")
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_has_its_own_name_and_bit() {
        for (i, a) in SyncStep::ALL.iter().enumerate() {
            for b in &SyncStep::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
                assert_ne!(a.bit(), b.bit());
            }
            assert_eq!(parse_steps(a.name()), Ok(vec![*a]));
        }
        assert!(parse_steps("record-data,nonsense").is_err());
        assert_eq!(parse_steps(""), Ok(vec![]));
    }
}
