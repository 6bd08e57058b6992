//! Disk faults: a full disk refuses writes with 503 and a clear message,
//! keeps serving reads, damages nothing, and accepts writes again once
//! space returns. Needs root (mounts a small tmpfs as the data directory).

mod common;

use std::path::Path;
use std::process::Command;

use common::Server;

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
