//! Power loss: the server on a FUSE file system that forgets every write
//! and every name not made durable by a sync (`lazyfs.rs`), cut at random
//! moments (`rounds.rs`). Needs FUSE (`/dev/fuse`, and root or
//! `fusermount3`): without it these tests fail, they never skip.
//!
//! - `power_cuts_lose_no_acknowledged_note`: rounds of concurrent writes
//!   and cuts (50 here; `tools/powerloss` runs more);
//! - `a_note_acknowledged_right_after_the_first_start_survives_a_power_cut`:
//!   the regression test of the bug the harness found (a data directory
//!   created by the server was not durable in its parent);
//! - `each_sync_is_needed_or_says_why_not`: the server with one sync left
//!   out at a time, and what a power cut then does;
//! - the model itself, without a mount.

#[path = "../common/mod.rs"]
mod common;
mod lazyfs;
mod rounds;

use std::path::Path;
use std::sync::Mutex;

use lazyfs::{CutMode, Disk};
use rounds::{Harness, Settings};

/// The FUSE tests run one at a time: each drives a 2-core server hard and
/// its cuts fall at random moments, which a neighbour would only blur.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Rounds in the default suite (about a second each on 2 cores).
const ROUNDS_DEFAULT: usize = 50;

fn harness(settings: Settings) -> Harness {
    Harness::new(settings).unwrap_or_else(|e| panic!("the power-cut harness needs FUSE: {e}"))
}

#[test]
fn power_cuts_lose_no_acknowledged_note() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let settings = Settings::from_env(ROUNDS_DEFAULT);
    let seed = settings.seed;
    let mut h = harness(settings);
    let t = h.run();
    let c = h.fs.counters();
    eprintln!("powerloss totals (seed {seed}): {}", t.summary());
    eprintln!(
        "powerloss file system: {} writes ({} bytes), {} fsync, {} fsyncdir, {} O_DIRECT opens, {} cuts",
        c.writes, c.bytes_written, c.fsyncs, c.fsyncdirs, c.opens_direct, c.cuts
    );
    let problems = t.problems.join("\n");
    assert_eq!(t.refused_starts, 0, "seed {seed}:\n{problems}");
    assert_eq!(t.lost, 0, "seed {seed}:\n{problems}");
    assert_eq!(t.duplicated, 0, "seed {seed}:\n{problems}");
    assert_eq!(t.damaged_served, 0, "seed {seed}:\n{problems}");
    // The rounds did what they are for.
    assert!(
        t.acknowledged > 0,
        "no write was acknowledged: {}",
        t.summary()
    );
    assert!(t.fresh_rounds > 0, "round 0 starts on an empty directory");
    assert!(
        c.fsyncs > 0 && c.fsyncdirs > 0,
        "the server's syncs must reach the file system: {c:?}"
    );
    assert_eq!(
        c.opens_direct, 0,
        "the log is written through the page cache (glommio BufferedFile), not O_DIRECT"
    );
}

#[test]
fn a_note_acknowledged_right_after_the_first_start_survives_a_power_cut() {
    // The durability bug fixed with this harness: the server created
    // its data directory but never synced its parent (log/ was covered
    // only by chance, by the sync for node.id), so a
    // cut after the first start took the whole directory with every
    // acknowledged note in it. With that sync left out again
    // (`tools/powerloss --skip-sync new-directory`), the first round of
    // power_cuts_lose_no_acknowledged_note loses every note. Fixed in
    // store::create_dirs_durably.
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut h = harness(Settings::from_env(0));
    let s = h.first_start_then_cut(5);
    assert_eq!(s.lost, Some(0), "{s:?}");
    assert!(!s.node_changed, "the node id must survive too: {s:?}");
    assert!(
        s.cut.names_lost.is_empty(),
        "after writes are acknowledged no name is left unsynced: {:?}",
        s.cut.names_lost
    );
}

/// What leaving out one sync does to acknowledged notes after a cut.
#[derive(Debug, PartialEq, Eq)]
enum Without {
    /// Acknowledged notes are lost.
    Loses,
    /// The server refuses to start afterwards.
    RefusesToStart,
    /// Nothing acknowledged is lost, but the node gets a new identity.
    ChangesIdentity,
    /// Nothing: the sync is not needed for acknowledged notes (see
    /// ARCHITECTURE.md for why it is there).
    Nothing,
}

#[test]
fn each_sync_is_needed_or_says_why_not() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let expected = [
        ("record-data", Without::Loses),
        ("segment-dir", Without::Loses),
        ("new-directory", Without::Loses),
        ("node-id-file", Without::RefusesToStart),
        ("node-id-dir", Without::ChangesIdentity),
        ("segment-header", Without::Nothing),
        ("recovery-cut", Without::Nothing),
    ];
    let mut seen = Vec::new();
    for (step, want) in expected {
        let mut settings = Settings::from_env(0);
        settings.skip_sync = Some(step.to_string());
        let mut h = harness(settings);
        let s = h.first_start_then_cut(8);
        let got = match s.lost {
            None => Without::RefusesToStart,
            Some(n) if n > 0 => Without::Loses,
            Some(_) if s.node_changed => Without::ChangesIdentity,
            Some(_) => Without::Nothing,
        };
        eprintln!(
            "without {step}: {got:?} ({} acknowledged, lost {:?}, names lost in the cut {:?})",
            s.acked, s.lost, s.cut.names_lost
        );
        seen.push((step, got, want, s.log));
    }
    for (step, got, want, log) in &seen {
        assert_eq!(got, want, "without {step}; the restart's log:\n{log}");
    }
}

#[test]
fn the_model_forgets_unsynced_data_and_names() {
    let mut disk = Disk::new(1);
    let mut h = ModelHandle::new(&mut disk);
    let dir = h.mkdir("d");
    let a = h.create(dir, "a");
    h.write(a, 0, b"synced");
    h.fsync(a);
    h.write(a, 6, b" unsynced");
    // a's data is synced but its name is not: the cut takes both.
    h.disk.cut(CutMode::Lose);
    assert!(h.disk.durable_file(Path::new("d/a")).is_none());

    let dir = h.mkdir("e");
    h.fsync(1); // the root: "e" is durable now
    let b = h.create(dir, "b");
    h.write(b, 0, b"synced");
    h.fsync(b);
    h.fsync(dir);
    h.write(b, 6, b" unsynced");
    let report = h.disk.cut(CutMode::Lose);
    assert_eq!(h.disk.durable_file(Path::new("e/b")).unwrap(), b"synced");
    assert_eq!(report.bytes_lost, 9);
    assert!(report.names_lost.is_empty(), "{report:?}");
}

#[test]
fn a_torn_write_keeps_whole_sectors_only() {
    for seed in 0..64 {
        let mut disk = Disk::new(seed);
        let mut h = ModelHandle::new(&mut disk);
        let f = h.create(1, "f");
        h.write(f, 0, &[1u8; 100]);
        h.fsync(f);
        h.fsync(1);
        h.write(f, 100, &[2u8; 2000]);
        h.disk.cut(CutMode::Torn);
        let kept = h.disk.durable_file(Path::new("f")).unwrap();
        assert!(kept.starts_with(&[1u8; 100]));
        assert!(
            kept.len() == 100 || kept.len() == 2100 || kept.len() % 512 == 0,
            "seed {seed}: a torn write ends on a sector boundary, kept {}",
            kept.len()
        );
        assert!(kept[100..].iter().all(|&b| b == 2));
    }
}

/// Drives a [`Disk`] directly, as the FUSE requests would.
struct ModelHandle<'a> {
    disk: &'a mut Disk,
}

impl<'a> ModelHandle<'a> {
    fn new(disk: &'a mut Disk) -> Self {
        ModelHandle { disk }
    }
    fn mkdir(&mut self, name: &str) -> u64 {
        self.disk.model_mkdir(1, name)
    }
    fn create(&mut self, parent: u64, name: &str) -> u64 {
        self.disk.model_create(parent, name)
    }
    fn write(&mut self, ino: u64, offset: u64, data: &[u8]) {
        self.disk.model_write(ino, offset, data)
    }
    fn fsync(&mut self, ino: u64) {
        self.disk.model_sync(ino)
    }
}
