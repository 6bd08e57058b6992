//! Crash safety: acknowledged notes survive kill -9; damaged logs recover to
//! their good records and never serve a damaged one.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{record_offsets, Client, Server};

#[test]
fn every_acknowledged_note_survives_kill_9_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut s = Server::start_in(&data, &["--cores", "2"]);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (acked, stop, addr) = (Arc::clone(&acked), Arc::clone(&stop), s.addr);
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let text = format!("w{w}-n{i}");
                    let req = common::build_request(
                        "POST",
                        "/notes",
                        &[("Content-Type", "text/plain")],
                        text.as_bytes(),
                    );
                    if std::io::Write::write_all(&mut c.stream, &req).is_err() {
                        break;
                    }
                    match c.read_response() {
                        Some(r) if r.status == 201 => acked.lock().unwrap().push(text),
                        _ => break,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    s.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "only {} writes were acknowledged before the kill",
        acked.len()
    );

    let s = Server::start_in(&data, &["--cores", "2"]);
    let notes = s.all_notes();
    let mut count: HashMap<String, usize> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for n in &notes {
        *count
            .entry(n["text"].as_str().unwrap().to_string())
            .or_default() += 1;
        assert!(
            ids.insert(n["id"].as_str().unwrap().to_string()),
            "duplicate id {}",
            n["id"]
        );
    }
    for text in &acked {
        assert_eq!(
            count.get(text),
            Some(&1),
            "acknowledged note {text} not present exactly once"
        );
    }
    // New writes continue the streams without reusing ids.
    let r = s.post_note("after restart");
    assert_eq!(r.status, 201);
    assert!(!ids.contains(r.json()["id"].as_str().unwrap()));
}

/// Writes `n` notes through a one-core server, stops it, returns the segment path.
fn log_with_notes(data: &Path, n: usize) -> PathBuf {
    let mut s = Server::start_in(data, &["--cores", "1"]);
    for i in 0..n {
        assert_eq!(s.post_note(&format!("note {i}")).status, 201);
    }
    assert!(s.terminate().success());
    let mut segs: Vec<_> = std::fs::read_dir(data.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 1);
    segs.pop().unwrap()
}

fn texts(s: &Server) -> Vec<String> {
    let mut t: Vec<String> = s
        .all_notes()
        .iter()
        .map(|n| n["text"].as_str().unwrap().to_string())
        .collect();
    t.sort();
    t
}

#[test]
fn a_torn_last_record_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let seg = log_with_notes(&data, 5);
    let bytes = std::fs::read(&seg).unwrap();
    let (last, _) = *record_offsets(&bytes).last().unwrap();
    // Simulate a crash in the middle of the last write.
    std::fs::write(&seg, &bytes[..bytes.len() - 3]).unwrap();
    let s = Server::start_in(&data, &["--cores", "1"]);
    assert_eq!(texts(&s), ["note 0", "note 1", "note 2", "note 3"]);
    assert!(
        s.stderr().contains("cut a torn or corrupt tail"),
        "the cut is logged:\n{}",
        s.stderr()
    );
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len() as usize,
        last,
        "the tail is truncated on disk"
    );
}

#[test]
fn a_flipped_byte_in_the_last_record_recovers_to_the_last_good_record() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let seg = log_with_notes(&data, 5);
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
    let s = Server::start_in(&data, &["--cores", "1"]);
    assert_eq!(texts(&s), ["note 0", "note 1", "note 2", "note 3"]);
    assert!(!s.get("/").text().contains("note 4"));
}

#[test]
fn a_damaged_record_in_the_middle_is_never_served_and_the_rest_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let seg = log_with_notes(&data, 5);
    let mut bytes = std::fs::read(&seg).unwrap();
    let (pos, len) = record_offsets(&bytes)[2];
    bytes[pos + len - 1] ^= 0x01; // last byte of "note 2"'s payload
    std::fs::write(&seg, &bytes).unwrap();
    let s = Server::start_in(&data, &["--cores", "1"]);
    assert_eq!(texts(&s), ["note 0", "note 1", "note 3", "note 4"]);
    assert!(
        s.stderr().contains("skipped a damaged range"),
        "{}",
        s.stderr()
    );
}

#[test]
fn a_second_server_cannot_open_the_same_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let _s = Server::start_in(&data, &["--cores", "1"]);
    let err = Server::try_start_in(&data, &["--cores", "1"])
        .err()
        .expect("second server must fail");
    assert!(
        err.contains("in use by another uringnotes process"),
        "{err}"
    );
}
