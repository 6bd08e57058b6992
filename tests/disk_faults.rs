//! Disk faults: a full disk refuses writes with 503 and a clear message,
//! keeps serving reads, damages nothing, and accepts writes again once
//! space returns (needs root: mounts a small tmpfs as the data directory).
//! An fsync error (injected with `--fault-injection`) is never swallowed:
//! the writes it covers are answered 503 and not acknowledged.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{wait_until, Client, Server};

struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && std::env::var("CI").is_ok() {
        panic!("disk fault tests need root in CI");
    }
    root
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_recovers() {
    if !require_root() {
        eprintln!("skipped: needs root to mount a tmpfs");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    let _fs = Tmpfs::mount(&mnt, "1m").expect("mount tmpfs");
    let data = mnt.join("data");
    let s = Server::start_in(&data, &["--cores", "1"]);
    let mut stored = Vec::new();
    for i in 0..5 {
        let text = format!("before full {i}");
        assert_eq!(s.post_note(&text).status, 201);
        stored.push(text);
    }
    // Fill the disk.
    let filler = mnt.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);

    let big = "x".repeat(3000);
    let mut refused = 0;
    for _ in 0..5 {
        let r = s.post_note(&big);
        match r.status {
            503 => {
                refused += 1;
                assert!(r.text().contains("disk is full"), "{}", r.text());
                assert!(r.header("Retry-After").is_some());
            }
            201 => stored.push(big.clone()),
            other => panic!("unexpected status {other}: {}", r.text()),
        }
    }
    assert!(refused > 0, "writes were not refused on a full disk");
    // Reads keep working and show exactly what was acknowledged.
    assert_eq!(s.get("/").status, 200);
    assert_eq!(s.all_notes().len(), stored.len());

    // Space returns: writes resume.
    std::fs::remove_file(&filler).unwrap();
    let r = s.post_note("after space returned");
    assert_eq!(r.status, 201, "{}", r.text());
    stored.push("after space returned".into());
    assert_eq!(s.all_notes().len(), stored.len());

    // Nothing stored was damaged: a restart recovers exactly the acknowledged notes.
    drop(s);
    let s = Server::start_in(&data, &["--cores", "1"]);
    let mut got: Vec<String> = s
        .all_notes()
        .iter()
        .map(|n| n["text"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    stored.sort();
    assert_eq!(got, stored);
    assert!(
        !s.stderr().contains("skipped a damaged range"),
        "{}",
        s.stderr()
    );
}

fn segment_names(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data.join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn metric(s: &Server, name: &str) -> u64 {
    let text = s.get("/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

/// Posts `kind=fsync-error` for shard 0 and waits until the shard took it
/// (its sweeper applies a posted fault within 100 ms and logs it).
fn inject_fsync_errors(s: &Server, count: u32) {
    let taken_before = s.stderr().matches("kind=\"fsync-error\"").count();
    let r = s.request(
        "POST",
        &format!("/_admin/fault?shard=0&kind=fsync-error&count={count}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(
        r.text().contains(&format!("\"count\":{count}")),
        "{}",
        r.text()
    );
    // Two lines per fault: "fault posted" and "injecting a fault".
    assert!(
        wait_until(Duration::from_secs(10), || s
            .stderr()
            .matches("kind=\"fsync-error\"")
            .count()
            >= taken_before + 2),
        "the shard did not take the fault:\n{}",
        s.stderr()
    );
}

#[test]
fn an_fsync_error_is_never_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let flags = ["--cores", "1", "--fault-injection"];
    let mut s = Server::start_in(&data, &flags);
    let mut acked: Vec<String> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    for i in 0..5 {
        let text = format!("before {i}");
        assert_eq!(s.post_note(&text).status, 201);
        acked.push(text);
    }
    let segments_before = segment_names(&data);
    assert_eq!(segments_before.len(), 1);

    // One failed fdatasync: the one write of that batch gets 503.
    inject_fsync_errors(&s, 1);
    let r = s.post_note("fsync fails");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("the note was not stored") && r.text().contains("fdatasync"),
        "{}",
        r.text()
    );
    assert!(r.header("Retry-After").is_some());
    refused.push("fsync fails".into());
    assert!(
        s.stderr()
            .contains("fdatasync failed; moving to a new segment"),
        "{}",
        s.stderr()
    );
    // The next write succeeds, in a new segment.
    let r = s.post_note("after the failure");
    assert_eq!(r.status, 201, "{}", r.text());
    acked.push("after the failure".into());
    let segments_after = segment_names(&data);
    assert_eq!(
        segments_after.len(),
        2,
        "the writer moved to a new segment: {segments_after:?}"
    );
    assert_eq!(segments_after[0], segments_before[0]);

    // Two failures under concurrent writers: the first batch's sync and the
    // header sync of the segment the next batch opens. Every write in a
    // failed batch gets 503; none is acknowledged, none is served.
    inject_fsync_errors(&s, 2);
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let addr = s.addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut out = Vec::new();
                for i in 0..3 {
                    let text = format!("burst w{w} n{i}");
                    let body = serde_json::json!({ "text": text }).to_string();
                    let r = c.request(
                        "POST",
                        "/notes",
                        &[("Content-Type", "application/json")],
                        body.as_bytes(),
                    );
                    out.push((text, r.status, r.text()));
                }
                out
            })
        })
        .collect();
    let mut burst_refused = 0;
    for w in writers {
        for (text, status, body) in w.join().unwrap() {
            match status {
                201 => acked.push(text),
                503 => {
                    assert!(body.contains("the note was not stored"), "{body}");
                    burst_refused += 1;
                    refused.push(text);
                }
                other => panic!("unexpected status {other}: {body}"),
            }
        }
    }
    assert!(
        burst_refused >= 2,
        "at least one write per failed sync is refused, got {burst_refused}"
    );
    eprintln!("burst: {burst_refused} of 24 refused");
    assert!(metric(&s, "uringnotes_log_write_errors_total") >= 3);

    // What is served is exactly what was acknowledged.
    let served = |s: &Server| -> HashMap<String, usize> {
        let mut count = HashMap::new();
        for n in s.all_notes() {
            *count
                .entry(n["text"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
        count
    };
    let now = served(&s);
    for text in &acked {
        assert_eq!(
            now.get(text),
            Some(&1),
            "acknowledged {text} not served once"
        );
    }
    for text in &refused {
        assert!(!now.contains_key(text), "unacknowledged {text} is served");
    }
    assert_eq!(now.len(), acked.len());
    let r = s.post_note("last");
    assert_eq!(r.status, 201, "{}", r.text());
    acked.push("last".into());

    // After a restart every acknowledged note is there exactly once; an
    // unacknowledged one may be there too (its bytes did reach the file),
    // never a damaged one, and never twice.
    assert!(s.terminate().success());
    let s = Server::start_in(&data, &flags);
    let after = served(&s);
    eprintln!(
        "after restart: {} notes, {} acknowledged, {} refused",
        after.len(),
        acked.len(),
        refused.len()
    );
    for text in &acked {
        assert_eq!(after.get(text), Some(&1), "acknowledged {text} lost");
    }
    for (text, n) in &after {
        assert_eq!(*n, 1, "{text} served {n} times");
        assert!(
            acked.contains(text) || refused.contains(text),
            "{text} was never written"
        );
    }
    assert!(
        !s.stderr().contains("skipped a damaged range"),
        "{}",
        s.stderr()
    );
    // New writes never reuse a number the failed writes took.
    let r = s.post_note("after restart");
    assert_eq!(r.status, 201, "{}", r.text());
    let ids: Vec<String> = s
        .all_notes()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate ids: {ids:?}");
}
