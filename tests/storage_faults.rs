//! Storage faults on synced data: bits flipped in a record, a sector
//! zeroed, a segment truncated, each in a log the server had synced and
//! closed. The checksum catches each one: the damaged records are skipped
//! (or the cut tail is cut) and reported in the log, everything else is
//! served, and in a cluster the node gets the damaged notes back from its
//! peer (the `Holes` repair, ARCHITECTURE.md "Repair").
//! Real processes, real files; a power cut is `tests/powerloss`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{record_offsets, wait_until, Net, Server};

/// Small segments, so that a node's log has several and damage in the
/// first leaves later ones intact.
const SEGMENT_BYTES_MAX: &str = "65536";
/// Bytes of padding per note: a few dozen notes fill a segment.
const NOTE_PAD_BYTES: usize = 1500;
/// Notes written per node.
const NOTES_PER_NODE: usize = 60;
/// How long a repair may take after a restart (reconnect, holes, notes).
const REPAIR_WITHIN: Duration = Duration::from_secs(20);
/// The disk's sector: what a zeroed-sector fault wipes.
const SECTOR_BYTES: usize = 512;

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Three bits flipped in the payload of a record in the middle.
    FlipBits,
    /// A 512-byte sector in the middle of the segment set to zeros.
    ZeroSector,
    /// The segment cut at half its length.
    Truncate,
    /// The first sector (the segment header and the first records) zeroed.
    ZeroFirstSector,
}

impl Fault {
    /// Damages `bytes` (a whole segment); returns the byte range damaged
    /// (for a truncation, everything from the cut on).
    fn apply(self, bytes: &mut Vec<u8>) -> Range<usize> {
        let records = record_offsets(bytes);
        assert!(
            records.len() > 4,
            "a segment with {} records",
            records.len()
        );
        match self {
            Fault::FlipBits => {
                let (pos, len) = records[records.len() / 2];
                for (k, bit) in [(9, 0), (len / 2, 3), (len - 2, 7)] {
                    bytes[pos + k] ^= 1 << bit;
                }
                pos..pos + len
            }
            Fault::ZeroSector => {
                let at = bytes.len() / 2 / SECTOR_BYTES * SECTOR_BYTES;
                bytes[at..at + SECTOR_BYTES].fill(0);
                at..at + SECTOR_BYTES
            }
            Fault::ZeroFirstSector => {
                bytes[..SECTOR_BYTES].fill(0);
                0..SECTOR_BYTES
            }
            Fault::Truncate => {
                let at = bytes.len() / 2;
                let end = bytes.len();
                bytes.truncate(at);
                at..end
            }
        }
    }

    /// The log line that reports it.
    fn reported_as(self) -> &'static str {
        match self {
            Fault::FlipBits | Fault::ZeroSector | Fault::ZeroFirstSector => {
                "skipped a damaged range"
            }
            Fault::Truncate => "cut a torn or corrupt tail",
        }
    }
}

fn text(node: &str, i: usize) -> String {
    format!("note {i:03} via {node} {}", "p".repeat(NOTE_PAD_BYTES))
}

fn segments(data: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(data.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    segs
}

/// Damages the first of several segments with `fault`; returns the texts
/// of the records the damage touched.
fn damage_first_segment(data: &Path, fault: Fault, texts: &[String]) -> BTreeSet<String> {
    let segs = segments(data);
    assert!(segs.len() >= 2, "want several segments, have {segs:?}");
    let seg = &segs[0];
    let mut bytes = std::fs::read(seg).unwrap();
    let before = bytes.clone();
    let damaged = fault.apply(&mut bytes);
    std::fs::write(seg, &bytes).unwrap();
    let mut hit = BTreeSet::new();
    for (pos, len) in record_offsets(&before) {
        if pos < damaged.end && damaged.start < pos + len {
            let record = &before[pos..pos + len];
            let t = texts
                .iter()
                .find(|t| common::find(record, t.as_bytes()).is_some())
                .expect("every record holds a note this test wrote");
            hit.insert(t.clone());
        }
    }
    assert!(!hit.is_empty(), "{fault:?} damaged no record");
    hit
}

/// Notes served: id -> (text, times served).
fn served(s: &Server) -> BTreeMap<String, (String, usize)> {
    let mut out: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for n in s.all_notes() {
        let e = out
            .entry(n["id"].as_str().unwrap().to_string())
            .or_insert_with(|| (n["text"].as_str().unwrap().to_string(), 0));
        e.1 += 1;
    }
    out
}

fn texts_served(s: &Server) -> BTreeSet<String> {
    let all = s.all_notes();
    let texts: BTreeSet<String> = all
        .iter()
        .map(|n| n["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts.len(), all.len(), "a note is served twice");
    texts
}

/// One node: the damaged notes are gone, every other one is served, the
/// damage is in the log.
fn single_node(fault: Fault) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let args = ["--cores", "1", "--segment-bytes-max", SEGMENT_BYTES_MAX];
    let mut s = Server::start_in(&data, &args);
    let texts: Vec<String> = (0..NOTES_PER_NODE).map(|i| text("one", i)).collect();
    for t in &texts {
        assert_eq!(s.post_note(t).status, 201);
    }
    assert!(s.terminate().success());
    let hit = damage_first_segment(&data, fault, &texts);

    let s = Server::start_in(&data, &args);
    let want: BTreeSet<String> = texts
        .iter()
        .filter(|t| !hit.contains(*t))
        .cloned()
        .collect();
    assert_eq!(
        texts_served(&s),
        want,
        "{fault:?}: everything but the {} damaged notes is served",
        hit.len()
    );
    assert!(
        s.stderr().contains(fault.reported_as()),
        "{fault:?} is reported:\n{}",
        s.stderr()
    );
    // The node writes on after the damage.
    assert_eq!(s.post_note("after the damage").status, 201);
}

#[test]
fn flipped_bits_in_a_synced_record_skip_that_record_only() {
    single_node(Fault::FlipBits);
}

#[test]
fn a_zeroed_synced_sector_skips_the_records_in_it_only() {
    single_node(Fault::ZeroSector);
}

#[test]
fn a_zeroed_first_sector_loses_the_header_but_not_the_records_after_it() {
    single_node(Fault::ZeroFirstSector);
}

#[test]
fn a_truncated_synced_segment_keeps_what_is_before_the_cut_and_the_later_segments() {
    single_node(Fault::Truncate);
}

impl Net {
    /// Node `name` on 127.0.0.`ip`, one core, small segments; its peer
    /// address is `peer` (`:0` the first time, the same one on restarts so
    /// that the other node's dialer finds it again).
    fn start(&self, name: &str, ip: u8, peer: &str, join: Option<&str>) -> Server {
        let listen = format!("127.0.0.{ip}:0");
        let cookie = self.cookie.to_str().unwrap().to_string();
        let mut args = vec![
            "--listen",
            &listen,
            "--node-name",
            name,
            "--cores",
            "1",
            "--segment-bytes-max",
            SEGMENT_BYTES_MAX,
            "--peer-listen",
            peer,
            "--cookie-file",
            &cookie,
        ];
        if let Some(j) = join {
            args.extend(["--join", j]);
        }
        let s = Server::start_in(&self.data(name), &args);
        assert!(s.peer_addr.is_some(), "node {name} printed no peer address");
        s
    }
}

fn connected(s: &Server) -> bool {
    s.get("/_status").json()["cluster"]["members"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["connected"] == true))
}

/// Two nodes: b's log is damaged while it is down; after its restart b
/// serves every note again, exactly once, the damaged ones from a.
fn cluster(fault: Fault, ip_a: u8) {
    let net = Net::new();
    let ip_b = ip_a + 1;
    let a = net.start("a", ip_a, &format!("127.0.0.{ip_a}:0"), None);
    let a_peer = a.peer_addr.unwrap().to_string();
    let mut b = net.start("b", ip_b, &format!("127.0.0.{ip_b}:0"), Some(&a_peer));
    let b_peer = b.peer_addr.unwrap().to_string();
    assert!(wait_until(REPAIR_WITHIN, || connected(&a) && connected(&b)));
    // Interleaved writes through both nodes (--ack all: each is on both
    // nodes once answered), so b's log holds both streams.
    let mut texts = Vec::new();
    for i in 0..NOTES_PER_NODE / 2 {
        for (node, s) in [("a", &a), ("b", &b)] {
            let t = text(node, i);
            let r = s.post_note(&t);
            assert_eq!(r.status, 201, "{}", r.text());
            texts.push(t);
        }
    }
    let before = served(&a);
    assert_eq!(before.len(), texts.len());
    assert!(wait_until(REPAIR_WITHIN, || served(&b) == before));

    assert!(b.terminate().success());
    let hit = damage_first_segment(&b.data_dir, fault, &texts);
    let b = net.start("b", ip_b, &b_peer, Some(&a_peer));
    assert!(
        b.stderr().contains(fault.reported_as()),
        "{fault:?} is reported:\n{}",
        b.stderr()
    );
    let mut last = BTreeMap::new();
    let repaired = wait_until(REPAIR_WITHIN, || {
        last = served(&b);
        last == before
    });
    assert!(
        repaired,
        "{fault:?}: b did not get the {} damaged notes back: missing {:?}, served more than once {:?}\n{}",
        hit.len(),
        before
            .iter()
            .filter(|(k, _)| !last.contains_key(*k))
            .map(|(_, (t, _))| &t[..16])
            .collect::<Vec<_>>(),
        last.values().filter(|(_, n)| *n != 1).count(),
        b.stderr()
    );
}

#[test]
fn flipped_bits_in_a_synced_record_come_back_from_a_peer() {
    cluster(Fault::FlipBits, 31);
}

#[test]
fn a_zeroed_synced_sector_comes_back_from_a_peer() {
    cluster(Fault::ZeroSector, 33);
}

#[test]
fn a_truncated_synced_segment_comes_back_from_a_peer() {
    cluster(Fault::Truncate, 35);
}
