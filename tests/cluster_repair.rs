//! Repair from a peer: a note a node lost below its high-water marks (a
//! damaged record that recovery skipped, a write whose fsync failed) comes
//! back from a peer that has it, through the `Holes` exchange on connect.
//! Real processes on 127.0.0.x, real peer protocol, real damaged files.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{record_offsets, wait_until, Net, Server};

/// How long repair may take after a restart (reconnect, holes, notes).
const REPAIR_WITHIN: Duration = Duration::from_secs(15);

impl Net {
    /// Starts node `name` on 127.0.0.`ip` with one core (one segment per
    /// node, so the test knows where every record is), joining `join`.
    fn start(&self, name: &str, ip: u8, join: Option<&str>) -> Server {
        let listen = format!("127.0.0.{ip}:0");
        let cookie = self.cookie.to_str().unwrap().to_string();
        let mut args = vec![
            "--listen",
            &listen,
            "--node-name",
            name,
            "--cores",
            "1",
            "--peer-listen",
            &listen,
            "--cookie-file",
            &cookie,
            "--fault-injection",
        ];
        if let Some(j) = join {
            args.push("--join");
            args.push(j);
        }
        let s = Server::start_in(&self.data(name), &args);
        assert!(s.peer_addr.is_some(), "node {name} printed no peer address");
        s
    }
}

/// Restarts a node on its data dir with the peer address it had before
/// (saved by `remember_peer_addr`), so the other node's dialer finds it.
fn restart(net: &Net, name: &str, ip: u8, join: &str) -> Server {
    let listen = format!("127.0.0.{ip}:0");
    let peer_listen = std::fs::read_to_string(net.dir.path().join(format!("{name}.peer"))).unwrap();
    let cookie = net.cookie.to_str().unwrap().to_string();
    let args = vec![
        "--listen",
        &listen,
        "--node-name",
        name,
        "--cores",
        "1",
        "--peer-listen",
        &peer_listen,
        "--cookie-file",
        &cookie,
        "--fault-injection",
        "--join",
        join,
    ];
    Server::start_in(&net.data(name), &args)
}

fn remember_peer_addr(net: &Net, name: &str, s: &Server) {
    std::fs::write(
        net.dir.path().join(format!("{name}.peer")),
        s.peer_addr.unwrap().to_string(),
    )
    .unwrap();
}

/// Notes served by a node: id -> (text, how many times served).
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

fn ids(s: &Server) -> BTreeSet<String> {
    served(s).into_keys().collect()
}

fn connected(s: &Server) -> bool {
    s.get("/_status").json()["cluster"]["members"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["connected"] == true))
}

fn segments(data: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(data.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    segs
}

/// Flips one byte of `text` inside the record that holds it, which must be
/// neither the first nor the last record of its segment (damage in the
/// middle, not a torn tail). Returns the segment.
fn damage_record_holding(data: &Path, text: &str) -> PathBuf {
    for seg in segments(data) {
        let mut bytes = std::fs::read(&seg).unwrap();
        let records = record_offsets(&bytes);
        for (i, &(pos, len)) in records.iter().enumerate() {
            let Some(at) = common::find(&bytes[pos..pos + len], text.as_bytes()) else {
                continue;
            };
            assert!(
                i > 0 && i + 1 < records.len(),
                "record {i} of {} holding {text} is not in the middle",
                records.len()
            );
            bytes[pos + at + text.len() - 1] ^= 0x01;
            std::fs::write(&seg, &bytes).unwrap();
            return seg;
        }
    }
    panic!("no record holds {text}");
}

#[test]
fn a_damaged_record_is_fetched_back_from_a_peer_and_kept() {
    let net = Net::new();
    let a = net.start("a", 2, None);
    let a_peer = a.peer_addr.unwrap().to_string();
    let mut b = net.start("b", 3, Some(&a_peer));
    remember_peer_addr(&net, "b", &b);
    assert!(wait_until(REPAIR_WITHIN, || connected(&a) && connected(&b)));
    // Interleaved writes through both nodes (--ack all: each is on both
    // nodes once answered). Texts are long enough to be found in the log.
    for i in 0..6 {
        for (node, s) in [("a", &a), ("b", &b)] {
            let r = s.post_note(&format!("note {i:02} written via node {node}"));
            assert_eq!(r.status, 201, "{}", r.text());
        }
    }
    let before = served(&a);
    assert_eq!(before.len(), 12);
    assert!(wait_until(REPAIR_WITHIN, || served(&b) == before));

    // Damage, in b's log, one note of a's stream and one of b's own (the
    // pump never sends a node its own notes back: only holes repair those).
    assert!(b.terminate().success());
    let damaged = ["note 02 written via node a", "note 04 written via node b"];
    for text in damaged {
        damage_record_holding(&b.data_dir, text);
    }
    let b = restart(&net, "b", 3, &a_peer);
    let log = b.stderr();
    assert_eq!(
        log.matches("skipped a damaged range").count(),
        2,
        "both damaged records are reported:\n{log}"
    );
    // Within a few seconds b serves every note again, exactly once, with
    // the right text: the damaged ones came from a.
    let mut last = BTreeMap::new();
    let repaired = wait_until(REPAIR_WITHIN, || {
        last = served(&b);
        last == before
    });
    assert!(
        repaired,
        "b did not get the damaged notes back: missing {:?}, counts {:?}\n{}",
        before
            .keys()
            .filter(|k| !last.contains_key(*k))
            .collect::<Vec<_>>(),
        last.values().filter(|(_, n)| *n != 1).collect::<Vec<_>>(),
        b.stderr()
    );
    assert!(
        b.stderr()
            .contains("asking a peer for notes missing below the high-water marks"),
        "{}",
        b.stderr()
    );
    assert!(
        a.stderr()
            .contains("sent a peer notes it lacked below its high-water marks"),
        "{}",
        a.stderr()
    );

    // The repaired notes are durable on b: they survive another restart
    // with a stopped (so nothing can come from a this time).
    let (mut a, mut b) = (a, b);
    assert!(a.terminate().success());
    assert!(b.terminate().success());
    let b = restart(&net, "b", 3, &a_peer);
    assert_eq!(served(&b), before, "{}", b.stderr());
}

#[test]
fn a_hole_left_by_a_failed_fsync_is_harmless_and_filled_once_the_note_exists() {
    let net = Net::new();
    let mut a = net.start("a", 2, None);
    remember_peer_addr(&net, "a", &a);
    let a_peer = a.peer_addr.unwrap().to_string();
    let mut b = net.start("b", 3, Some(&a_peer));
    remember_peer_addr(&net, "b", &b);
    assert!(wait_until(REPAIR_WITHIN, || connected(&a) && connected(&b)));
    for i in 0..3 {
        assert_eq!(a.post_note(&format!("acknowledged {i}")).status, 201);
    }
    // One write on a whose fdatasync fails: 503, its sequence number is
    // used, the note is on no node. The next write succeeds.
    let r = a.request("POST", "/_admin/fault?shard=0&kind=fsync-error", &[], b"");
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(wait_until(Duration::from_secs(10), || a
        .stderr()
        .contains("injecting a fault")));
    let r = a.post_note("its fsync failed");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(a.post_note("acknowledged 3").status, 201);
    let expected = served(&a);
    assert_eq!(expected.len(), 4);
    assert!(wait_until(REPAIR_WITHIN, || served(&b) == expected));

    // b restarts: it asks a for the hole; a has nothing there. The
    // connection stays up and nothing changes.
    assert!(b.terminate().success());
    let mut b = restart(&net, "b", 3, &a_peer);
    assert!(wait_until(REPAIR_WITHIN, || connected(&a) && connected(&b)));
    assert!(
        b.stderr()
            .contains("asking a peer for notes missing below the high-water marks"),
        "{}",
        b.stderr()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(connected(&b), "the holes exchange dropped the connection");
    assert_eq!(served(&b), expected);

    // a restarts: its log has the unacknowledged note's bytes (the write
    // reached the file before the injected fsync error), so a serves it
    // now; b fills its hole from a. Both end identical.
    assert!(a.terminate().success());
    let b_peer = b.peer_addr.unwrap().to_string();
    let a = restart(&net, "a", 2, &b_peer);
    let mut last = (BTreeSet::new(), BTreeSet::new());
    let converged = wait_until(REPAIR_WITHIN, || {
        last = (ids(&a), ids(&b));
        last.0 == last.1 && last.0.len() == 5
    });
    assert!(converged, "a {:?} b {:?}", last.0, last.1);
    for (id, (text, n)) in served(&b) {
        assert_eq!(n, 1, "{id} ({text}) served {n} times");
    }
    let _ = b.terminate();
}
