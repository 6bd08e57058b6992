//! Micro-benchmarks of the hot paths of one request and one note:
//! - `http_parse`: parsing a request head (httparse plus the RFC 9112
//!   framing rules) for what a load generator, a browser and a form post send;
//! - `page_render`: rendering the HTML notes page, 100 notes (the default
//!   page) and 10,000 notes (a page size of 10,000, to show rendering is
//!   linear), and the first 100 out of 10,000;
//! - `page_compress`: the 100-note page in gzip and brotli at each effort
//!   of `http::coding::Effort` (what choosing its levels was measured
//!   with; the bytes of each are printed once);
//! - `log_append`: archiving and framing a note (CPU only), one append at a
//!   time through the log writer without fsync, and 64 concurrent appends
//!   with fsync (group commit) on the disk of the benchmark's temp dir;
//! - `peer_seal`: sealing and opening a `Notes` frame of the peer protocol
//!   (ChaCha20-Poly1305 records, `cluster/seal.rs`): one note, and a batch
//!   of `NOTES_FRAME_BYTES_TARGET` (what replication sends under load).
//!
//! Run with `cargo bench --bench micro`. Under `cargo test --all-targets`
//! criterion runs each benchmark once, as a smoke test.

use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};

use uringnotes::api::page::{render, PageContext};
use uringnotes::cluster::{auth::Cookie, frame::FrameKind, replication, seal, wire};
use uringnotes::config::{Config, FsyncPolicy};
use uringnotes::http::coding::{compress_into, Coding, Effort};
use uringnotes::http::request::{parse_head, HeadLimits, HeadStatus};
use uringnotes::store::index::{Index, NoteRef};
use uringnotes::store::note::{archive, Note, NoteId, Origin};
use uringnotes::store::NodeInfo;
use uringnotes::store::{record, segment, writer::LogWriter};

/// A note as the benchmarks use it: a typical short text (about 100 bytes).
fn note(seq: u64) -> Note {
    Note {
        id: NoteId {
            origin: Origin {
                node: 0x3fa2_c1d0,
                core: (seq % 2) as u16,
            },
            seq,
        },
        created_at_us: 1_795_602_063_000_000 + seq * 1_000,
        text: format!(
            "Note {seq}: remember to check the <b>deploy</b> logs & the p99 latency after lunch."
        ),
    }
}

fn index_of(notes: u64) -> Index {
    let mut index = Index::new();
    for seq in 1..=notes {
        let inserted = index.insert(NoteRef::from_payload(archive(&note(seq))).expect("valid"));
        assert!(inserted);
    }
    index
}

fn http_parse(c: &mut Criterion) {
    let config = Config::default();
    let limits = HeadLimits {
        header_bytes_max: config.header_bytes_max,
        uri_bytes_max: config.uri_bytes_max,
        body_bytes_max: config.body_bytes_max,
    };
    let heads: [(&str, &[u8]); 3] = [
        (
            "get_note_minimal",
            b"GET /notes/3fa2c1d0-1-42 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
        ),
        (
            "get_page_browser",
            b"GET / HTTP/1.1\r\nHost: notes.example.org\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-GB,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\nConnection: keep-alive\r\nCookie: session=0123456789abcdef0123456789abcdef\r\n\
Upgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-Site: none\r\n\
Sec-Fetch-User: ?1\r\nPriority: u=0, i\r\n\r\n",
        ),
        (
            "post_note_form",
            b"POST /notes HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/x-www-form-urlencoded\r\n\
Content-Length: 26\r\n\r\ntext=bench+0000abcd+3+1234",
        ),
    ];
    let mut group = c.benchmark_group("http_parse");
    for (name, head) in heads {
        // The parser must accept every head measured here.
        assert!(matches!(
            parse_head(head, &limits),
            Ok(HeadStatus::Complete(_))
        ));
        group.throughput(Throughput::Bytes(head.len() as u64));
        group.bench_function(name, |b| b.iter(|| parse_head(black_box(head), &limits)));
    }
    group.finish();
}

fn page_render(c: &mut Criterion) {
    let node = NodeInfo {
        id: 0x3fa2_c1d0,
        name: "bench-node".into(),
    };
    let small = index_of(100);
    let large = index_of(10_000);
    let view = uringnotes::cluster::ClusterView::default();
    let mut group = c.benchmark_group("page_render");
    for (name, index, page_notes) in [
        ("100_notes", &small, 100usize),
        ("first_100_of_10000", &large, 100),
        ("10000_notes", &large, 10_000),
    ] {
        let context = PageContext {
            node: &node,
            page_notes,
            note_text_bytes_max: 4096,
            total_notes: index.len(),
            before: None,
            view: &view,
            cluster_enabled: false,
        };
        let mut page = Vec::with_capacity(4 << 20);
        group.throughput(Throughput::Elements(page_notes as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let newest = index.newest(None).expect("no cursor");
                render(&mut page, newest, &context);
                black_box(page.len())
            })
        });
    }
    group.finish();
}

fn page_compress(c: &mut Criterion) {
    let node = NodeInfo {
        id: 0x3fa2_c1d0,
        name: "bench-node".into(),
    };
    let index = index_of(100);
    let view = uringnotes::cluster::ClusterView::default();
    let context = PageContext {
        node: &node,
        page_notes: 100,
        note_text_bytes_max: 4096,
        total_notes: index.len(),
        before: None,
        view: &view,
        cluster_enabled: false,
    };
    let mut page = Vec::new();
    render(&mut page, index.newest(None).expect("no cursor"), &context);
    let mut group = c.benchmark_group("page_compress");
    group.throughput(Throughput::Bytes(page.len() as u64));
    let mut out = Vec::with_capacity(page.len());
    for (effort_name, effort) in [
        ("once", Effort::ONCE),
        ("cached", Effort::CACHED),
        ("per_request", Effort::PER_REQUEST),
    ] {
        for (coding_name, coding) in [("gzip", Coding::Gzip), ("br", Coding::Br)] {
            out.clear();
            compress_into(coding, effort, &page, &mut out).expect("compress");
            eprintln!(
                "page_compress: {} bytes -> {coding_name} {effort_name} ({effort:?}) {} bytes",
                page.len(),
                out.len()
            );
            group.bench_function(format!("{coding_name}_{effort_name}"), |b| {
                b.iter(|| {
                    out.clear();
                    compress_into(coding, effort, black_box(&page), &mut out).expect("compress");
                    black_box(out.len())
                })
            });
        }
    }
    group.finish();
}

/// A glommio executor on this thread for the writer benchmarks.
fn executor() -> LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .make()
        .expect("a glommio executor (io_uring and memlock >= 512 KiB are required)")
}

fn log_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_append");
    let payload = archive(&note(42));
    group.throughput(Throughput::Elements(1));
    group.bench_function("archive_and_frame", |b| {
        let n = note(42);
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            record::encode_into(&mut out, &archive(black_box(&n)));
            black_box(out.len())
        })
    });

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(segment::log_dir(dir.path())).expect("log dir");
    let ex = executor();
    // Each measurement gets a new writer (and so a new segment file).
    let mut next_segment = 1u32;
    let run_appends = |fsync: FsyncPolicy, concurrency: u64, iters: u64, next_segment: &mut u32| {
        let writer = LogWriter::new(
            dir.path().to_owned(),
            0,
            std::sync::Arc::new(uringnotes::store::lease::SegmentNumbers::new(*next_segment)),
            std::sync::Arc::new(uringnotes::store::lease::StreamLease::new(0)),
            fsync,
            Config::default().segment_bytes_max,
            Default::default(),
        );
        *next_segment += 1_000;
        let payload = payload.clone();
        ex.run(async move {
            glommio::spawn_local(Rc::clone(&writer).run_flusher()).detach();
            // Open the segment outside the measurement.
            writer.append(&payload).await.expect("append");
            let per_task = iters.div_ceil(concurrency);
            let started = Instant::now();
            let tasks: Vec<_> = (0..concurrency)
                .map(|_| {
                    let (writer, payload) = (Rc::clone(&writer), payload.clone());
                    glommio::spawn_local(async move {
                        for _ in 0..per_task {
                            writer.append(&payload).await.expect("append");
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await;
            }
            let elapsed = started.elapsed();
            writer.stop();
            // Time per append as criterion counts it (iters appends).
            elapsed.mul_f64(iters as f64 / (per_task * concurrency) as f64)
        })
    };
    group.bench_function("append_one_at_a_time_no_fsync", |b| {
        b.iter_custom(|iters| run_appends(FsyncPolicy::Never, 1, iters, &mut next_segment))
    });
    group.bench_function("append_64_concurrent_fdatasync", |b| {
        b.iter_custom(|iters| run_appends(FsyncPolicy::Always, 64, iters, &mut next_segment))
    });
    group.finish();
}

fn peer_seal(c: &mut Criterion) {
    let mut group = c.benchmark_group("peer_seal");
    let one = archive(&note(1));
    let per_batch = replication::NOTES_FRAME_BYTES_TARGET / (one.len() + 4);
    let batch: Vec<Vec<u8>> = (0..per_batch as u64).map(|s| archive(&note(s))).collect();
    for (name, payload) in [
        ("one_note", wire::encode_notes([&one[..]].into_iter())),
        (
            "batch_256KiB",
            wire::encode_notes(batch.iter().map(|n| &n[..])),
        ),
    ] {
        let cookie = Cookie::from_bytes(b"bench-cookie-0123456789abcdef");
        let (mut tx, mut rx) = seal::session_pair(&cookie).expect("an in-memory handshake");
        let mut wire_bytes = Vec::new();
        group.throughput(Throughput::Bytes(payload.len() as u64));
        group.bench_function(BenchmarkId::new("seal_and_open", name), |b| {
            b.iter(|| {
                wire_bytes.clear();
                tx.sealer
                    .seal(FrameKind::Notes, black_box(&payload), &mut wire_bytes)
                    .expect("sealed");
                let opened = rx.opener.open(&wire_bytes).expect("opened");
                assert_eq!(opened.consumed, wire_bytes.len());
                black_box(opened.frame)
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = micro;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = http_parse, page_render, page_compress, log_append, peer_seal
}
criterion_main!(micro);
