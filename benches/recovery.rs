//! Start-up recovery of a large log: how long a node with 1,000,000 notes
//! takes to verify every record and rebuild its index (goal: under 1 s).
//!
//! The log is generated once, in a temp dir, with the store's own public
//! API (`note::archive`, `record::encode_into`, `segment::header`): two
//! cores' streams of ~100-byte notes in 64 MiB segments, like a server that
//! ran on two cores. Then `recovery::recover` is timed. The files are in the
//! page cache after generation, so this measures recovery's CPU work
//! (checksums, validation, index inserts), not the disk.
//!
//! `cargo bench --bench recovery` uses 1,000,000 notes. Under `cargo test
//! --all-targets` (criterion's test mode, no `--bench` flag) a 10,000-note
//! log keeps the smoke test fast.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use uringnotes::config::Config;
use uringnotes::store::note::{archive, Note, NoteId, Origin};
use uringnotes::store::{record, recovery, segment};

/// Notes in the log when really benchmarking.
const NOTES_BENCH: u64 = 1_000_000;
/// Notes in the log in criterion's test mode.
const NOTES_SMOKE: u64 = 10_000;
/// Cores whose streams the log holds.
const CORES: u16 = 2;

/// Writes `notes` notes into `data_dir/log`, round-robin over the cores.
fn generate(data_dir: &Path, notes: u64) -> u64 {
    let log = segment::log_dir(data_dir);
    std::fs::create_dir_all(&log).expect("log dir");
    let segment_bytes_max = Config::default().segment_bytes_max;
    let mut bytes_total = 0u64;
    for core in 0..CORES {
        let mut number = 1u32;
        let open = |number: u32| {
            let path = log.join(segment::file_name(core, number));
            let mut f = BufWriter::with_capacity(1 << 20, File::create(path).expect("segment"));
            f.write_all(&segment::header()).expect("header");
            f
        };
        let mut file = open(number);
        let mut file_bytes = segment::SEGMENT_HEADER_BYTES as u64;
        let mut frame = Vec::with_capacity(256);
        for seq in 1..=notes / u64::from(CORES) {
            let global = seq * u64::from(CORES) + u64::from(core);
            let note = Note {
                id: NoteId {
                    origin: Origin {
                        node: 0x3fa2_c1d0,
                        core,
                    },
                    seq,
                },
                created_at_us: 1_795_602_063_000_000 + global,
                text: format!(
                    "Note {global}: remember to check the deploy logs and the p99 latency after lunch."
                ),
            };
            frame.clear();
            record::encode_into(&mut frame, &archive(&note));
            if file_bytes + frame.len() as u64 > segment_bytes_max {
                file.flush().expect("flush");
                number += 1;
                file = open(number);
                file_bytes = segment::SEGMENT_HEADER_BYTES as u64;
            }
            file.write_all(&frame).expect("write");
            file_bytes += frame.len() as u64;
            bytes_total += frame.len() as u64;
        }
        file.flush().expect("flush");
    }
    bytes_total
}

fn recover(c: &mut Criterion) {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let notes = if benchmarking {
        NOTES_BENCH
    } else {
        NOTES_SMOKE
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let bytes = generate(dir.path(), notes);
    eprintln!(
        "generated {notes} notes, {:.1} MB of log, in {:.2?}",
        bytes as f64 / 1e6,
        started.elapsed()
    );
    // One recovery outside criterion: check it found everything.
    let first = recovery::recover(dir.path(), false).expect("recover");
    assert_eq!(first.report.records, notes, "every note recovered");
    assert_eq!(first.index.len() as u64, notes);
    assert!(first.report.truncated.is_empty() && first.report.skipped.is_empty());
    eprintln!(
        "recovered {} notes from {} segments in {} ms",
        first.report.records, first.report.segments, first.report.elapsed_ms
    );

    let mut group = c.benchmark_group("recovery");
    group.throughput(Throughput::Elements(notes));
    group.bench_function(format!("recover_{notes}_notes"), |b| {
        b.iter(|| recovery::recover(dir.path(), false).expect("recover"))
    });
    group.finish();
}

criterion_group! {
    name = recovery_bench;
    // Each iteration is about a second at 1,000,000 notes: ten samples.
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(20));
    targets = recover
}
criterion_main!(recovery_bench);
