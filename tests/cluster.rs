//! Multi-node tests: real processes on 127.0.0.x, talking the peer protocol.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ask_in_background, connect_to, wait_until, Client, Net, Server};

const CONVERGE: Duration = Duration::from_secs(30);

impl Net {
    /// Starts node `name` on 127.0.0.`ip` (HTTP and peer ports ephemeral).
    fn start(&self, name: &str, ip: u8, join: &[&Server], extra: &[&str]) -> Server {
        self.start_with_cookie(name, ip, join, extra, &self.cookie)
    }

    fn start_with_cookie(
        &self,
        name: &str,
        ip: u8,
        join: &[&Server],
        extra: &[&str],
        cookie: &Path,
    ) -> Server {
        let listen = format!("127.0.0.{ip}:0");
        let peer = format!("127.0.0.{ip}:0");
        let cookie = cookie.to_str().unwrap().to_string();
        let joins: Vec<String> = join
            .iter()
            .map(|s| s.peer_addr.unwrap().to_string())
            .collect();
        let mut args: Vec<&str> = vec![
            "--listen",
            &listen,
            "--node-name",
            name,
            "--cores",
            "2",
            "--peer-listen",
            &peer,
            "--cookie-file",
            &cookie,
            "--fault-injection",
        ];
        for j in &joins {
            args.push("--join");
            args.push(j);
        }
        args.extend_from_slice(extra);
        let s = Server::start_in(&self.data(name), &args);
        assert!(s.peer_addr.is_some(), "node {name} printed no peer address");
        s
    }
}

fn status(s: &Server) -> serde_json::Value {
    s.get("/_status").json()
}

fn connected_peers(s: &Server) -> usize {
    status(s)["cluster"]["members"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["connected"] == true).count())
}

fn note_ids(s: &Server) -> BTreeSet<String> {
    s.all_notes()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect()
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

fn wait_mesh(nodes: &[&Server]) {
    let want = nodes.len() - 1;
    for n in nodes {
        assert!(
            wait_until(CONVERGE, || connected_peers(n) == want),
            "mesh did not form: {}",
            status(n)
        );
    }
}

fn wait_converged(nodes: &[&Server]) -> BTreeSet<String> {
    let mut last = BTreeSet::new();
    let ok = wait_until(CONVERGE, || {
        let sets: Vec<BTreeSet<String>> = nodes.iter().map(|n| note_ids(n)).collect();
        last = sets[0].clone();
        sets.iter().all(|s| *s == sets[0])
    });
    assert!(ok, "nodes did not converge");
    last
}

#[test]
fn three_nodes_show_the_same_notes_and_ack_all_reads_your_writes() {
    let net = Net::new();
    let a = net.start("a", 2, &[], &[]);
    let b = net.start("b", 3, &[&a], &[]);
    // c joins through b only: joining any member connects it to all.
    let c = net.start("c", 4, &[&b], &[]);
    wait_mesh(&[&a, &b, &c]);
    let nodes = [&a, &b, &c];
    for round in 0..5 {
        for (i, writer) in nodes.iter().enumerate() {
            let text = format!("round {round} via node {i}");
            let r = writer.post_note(&text);
            assert_eq!(r.status, 201);
            let id = r.json()["id"].as_str().unwrap().to_string();
            // --ack all (the default): every other node has it on the next request.
            for reader in nodes.iter() {
                let got = reader.get(&format!("/notes/{id}"));
                assert_eq!(
                    got.status, 200,
                    "note {id} written via {i} missing on a peer"
                );
                assert_eq!(got.json()["text"], text);
            }
        }
    }
    let ids = wait_converged(&nodes);
    assert_eq!(ids.len(), 15);
    assert_eq!(texts(&a), texts(&c));
    let st = status(&a);
    let members = st["cluster"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    for m in members {
        assert_eq!(m["state"], "up", "{st}");
    }
}

#[test]
fn a_killed_node_converges_after_restart_and_a_late_joiner_gets_everything() {
    let net = Net::new();
    let a = net.start("a", 2, &[], &[]);
    let b = net.start("b", 3, &[&a], &[]);
    let mut c = net.start("c", 4, &[&a], &[]);
    wait_mesh(&[&a, &b, &c]);

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = [a.addr, b.addr]
        .into_iter()
        .enumerate()
        .map(|(w, addr)| {
            let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let text = format!("w{w}-{i}");
                    let r = client.request(
                        "POST",
                        "/notes",
                        &[("Content-Type", "text/plain")],
                        text.as_bytes(),
                    );
                    if r.status == 201 {
                        acked.lock().unwrap().push(text);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    c.kill9();
    // b's view of c goes down within 3 s.
    let started = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || {
            status(&b)["cluster"]["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "c" && m["state"] == "down")
        }),
        "c never marked down: {}",
        status(&b)
    );
    let detect = started.elapsed();
    assert!(detect < Duration::from_secs(5), "down after {detect:?}");
    std::thread::sleep(Duration::from_millis(500));
    let c = net.start("c", 4, &[&a], &[]);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let ids = wait_converged(&[&a, &b, &c]);
    let acked = acked.lock().unwrap().clone();
    let t = texts(&c);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for x in &t {
        *counts.entry(x.as_str()).or_default() += 1;
    }
    for text in &acked {
        assert_eq!(
            counts.get(text.as_str()),
            Some(&1),
            "{text} not exactly once on the restarted node"
        );
    }
    assert_eq!(ids.len(), t.len(), "no duplicate ids");

    // A fourth node joining late receives the whole history.
    let d = net.start("d", 5, &[&b], &[]);
    let all = wait_converged(&[&a, &d]);
    assert_eq!(all, ids);
}

#[test]
fn a_split_heals_by_itself_and_nothing_is_lost_or_doubled() {
    let net = Net::new();
    let a = net.start("a", 2, &[], &["--ack", "local"]);
    let b = net.start("b", 3, &[&a], &["--ack", "local"]);
    let c = net.start("c", 4, &[&a], &["--ack", "local"]);
    wait_mesh(&[&a, &b, &c]);
    // Split {a, b} | {c}.
    for (node, block) in [(&a, "c"), (&b, "c"), (&c, "a,b")] {
        let r = node.request(
            "POST",
            &format!("/_admin/partition?block={block}"),
            &[],
            b"",
        );
        assert_eq!(r.status, 200);
    }
    assert!(
        wait_until(CONVERGE, || connected_peers(&c) == 0),
        "c still connected"
    );
    assert!(wait_until(CONVERGE, || connected_peers(&a) == 1));
    let mut written = Vec::new();
    for i in 0..20 {
        for (name, node) in [("a", &a), ("b", &b), ("c", &c)] {
            let text = format!("split {name} {i}");
            assert_eq!(node.post_note(&text).status, 201);
            written.push(text);
        }
    }
    // During the split the sides differ.
    assert_ne!(note_ids(&a), note_ids(&c));
    // Heal.
    for node in [&a, &b, &c] {
        assert_eq!(
            node.request("POST", "/_admin/partition?block=", &[], b"")
                .status,
            200
        );
    }
    wait_mesh(&[&a, &b, &c]);
    let ids = wait_converged(&[&a, &b, &c]);
    assert_eq!(ids.len(), 60, "every note once, on every node");
    written.sort();
    assert_eq!(texts(&b), written);
}

#[test]
fn a_wrong_cookie_is_refused_on_both_sides() {
    let net = Net::new();
    let a = net.start("a", 2, &[], &[]);
    let bad_cookie = net.dir.path().join("bad-cookie");
    std::fs::write(&bad_cookie, "a-completely-different-cookie-xyz\n").unwrap();
    let x = net.start_with_cookie("x", 3, &[&a], &[], &bad_cookie);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(connected_peers(&a), 0);
    assert_eq!(connected_peers(&x), 0);
    assert!(
        a.stderr().contains("wrong cookie") || a.stderr().contains("authentication failed"),
        "a's log:\n{}",
        a.stderr()
    );
    assert!(
        x.stderr().contains("authentication failed"),
        "x's log:\n{}",
        x.stderr()
    );
    // Writes on x never reach a.
    assert_eq!(x.post_note("from the wrong cluster").status, 201);
    std::thread::sleep(Duration::from_millis(500));
    assert!(a.all_notes().is_empty());
}

fn send_raw(peer: SocketAddr, bytes: &[u8]) -> bool {
    let mut s = TcpStream::connect(peer).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut buf = Vec::new();
    // The node must close the connection (EOF or reset), not hang.
    match s.read_to_end(&mut buf) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn garbage_truncated_and_oversized_frames_drop_only_that_connection() {
    let net = Net::new();
    let a = net.start("a", 2, &[], &[]);
    let b = net.start("b", 3, &[&a], &[]);
    wait_mesh(&[&a, &b]);
    let peer = a.peer_addr.unwrap();
    // Garbage.
    assert!(send_raw(peer, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    // A valid header claiming an oversized payload (handshake frames are
    // small), of this version and of the old one.
    for version in [b'\x02', b'\x01'] {
        let mut oversized = vec![b'U', b'N', version, 1];
        oversized.extend_from_slice(&(64u32 << 20).to_le_bytes());
        assert!(send_raw(peer, &oversized));
    }
    // A truncated Hello (then EOF).
    let mut truncated = b"UN\x02\x01".to_vec();
    truncated.extend_from_slice(&100u32.to_le_bytes());
    truncated.extend_from_slice(&[0u8; 10]);
    assert!(send_raw(peer, &truncated));
    // A whole frame with a bad checksum.
    let mut bad_crc = b"UN\x02\x01".to_vec();
    bad_crc.extend_from_slice(&3u32.to_le_bytes());
    bad_crc.extend_from_slice(b"abc\x00\x00\x00\x00");
    assert!(send_raw(peer, &bad_crc));
    // A whole Hello that is not a Noise message sealed with our cookie.
    assert!(send_raw(
        peer,
        &uringnotes::cluster::frame::encode(
            uringnotes::cluster::frame::FrameKind::Hello,
            &[7u8; 120]
        )
    ));
    // The node still serves HTTP and still replicates with b.
    assert_eq!(a.get("/healthz").status, 200);
    let r = a.post_note("after garbage");
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(b.get(&format!("/notes/{id}")).status, 200);
    assert_eq!(connected_peers(&a), 1);
}

#[test]
fn random_dispatch_serves_requests_on_every_node() {
    let net = Net::new();
    let a = net.start("a", 2, &[], &["--dispatch", "random"]);
    let b = net.start("b", 3, &[&a], &["--dispatch", "random"]);
    wait_mesh(&[&a, &b]);
    // Wait for the loads/view to include the peer's cores.
    std::thread::sleep(Duration::from_millis(600));
    let mut served_by = BTreeSet::new();
    let mut client = a.connect();
    for i in 0..60 {
        let r = if i % 3 == 0 {
            client.request(
                "POST",
                "/notes",
                &[("Content-Type", "text/plain")],
                format!("dispatched {i}").as_bytes(),
            )
        } else {
            client.request("GET", "/notes?limit=5", &[], b"")
        };
        assert!(
            r.status == 200 || r.status == 201,
            "status {} {}",
            r.status,
            r.text()
        );
        served_by.insert(
            r.header("X-Served-By")
                .expect("X-Served-By header")
                .to_string(),
        );
    }
    let nodes: BTreeSet<&str> = served_by
        .iter()
        .map(|s| s.split('/').next().unwrap())
        .collect();
    assert_eq!(nodes, BTreeSet::from(["a", "b"]), "served by {served_by:?}");
    wait_converged(&[&a, &b]);
    assert_eq!(a.all_notes().len(), 20);
}

/// Issue 19: a page or list tag from one node stops matching as soon as a
/// note written on another node is there; a list (the same JSON on every
/// node holding the same notes) has the same tag on both nodes, the page
/// (which names its node) does not; a member going down changes the page.
#[test]
fn a_write_on_another_node_changes_the_tags() {
    let net = Net::new();
    let a = net.start("a", 5, &[], &[]);
    let b = net.start("b", 6, &[&a], &[]);
    wait_mesh(&[&a, &b]);
    assert_eq!(a.post_note("written on a").status, 201);
    wait_converged(&[&a, &b]);
    let tag = |s: &Server, path: &str| -> String {
        let r = s.request("GET", path, &[("Accept-Encoding", "gzip")], b"");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.header("etag").expect("an ETag").to_string()
    };
    let conditional = |s: &Server, path: &str, etag: &str| {
        s.request(
            "GET",
            path,
            &[("Accept-Encoding", "gzip"), ("If-None-Match", etag)],
            b"",
        )
    };
    // Wait until a's view shows b as up (the page's footer names it).
    assert!(wait_until(CONVERGE, || a
        .get("/")
        .text()
        .contains("b</span> up")));
    let page_a = tag(&a, "/");
    let list_a = tag(&a, "/notes?limit=5");
    assert_eq!(
        list_a,
        tag(&b, "/notes?limit=5"),
        "same notes, same list tag"
    );
    assert_ne!(page_a, tag(&b, "/"), "each node's page names its node");
    assert_eq!(conditional(&a, "/", &page_a).status, 304);
    assert_eq!(conditional(&a, "/notes?limit=5", &list_a).status, 304);
    assert_eq!(conditional(&b, "/notes?limit=5", &list_a).status, 304);

    // A note written on b: with --ack all (the default) a has it when b
    // answers 201, on every core.
    assert_eq!(b.post_note("written on b").status, 201);
    for _ in 0..4 {
        let page = conditional(&a, "/", &page_a);
        assert_eq!(page.status, 200, "a's page changed with b's note");
        assert_ne!(page.header("etag").unwrap(), page_a);
        assert_eq!(conditional(&a, "/notes?limit=5", &list_a).status, 200);
    }
    let new_list = tag(&a, "/notes?limit=5");
    assert_eq!(new_list, tag(&b, "/notes?limit=5"));
    assert_eq!(conditional(&b, "/notes?limit=5", &new_list).status, 304);

    // The page shows each member's state: b going down changes it.
    let before_down = tag(&a, "/");
    let mut b = b;
    b.kill9();
    assert!(
        wait_until(CONVERGE, || a.get("/").text().contains("b</span> down")),
        "a's page shows b down"
    );
    assert_eq!(conditional(&a, "/", &before_down).status, 200);
}

#[test]
fn served_by_can_be_hidden() {
    let s = Server::start(&["--cores", "1", "--no-served-by"]);
    assert!(s.get("/healthz").header("X-Served-By").is_none());
    let s = Server::start(&["--cores", "1", "--node-name", "solo"]);
    assert_eq!(s.get("/healthz").header("X-Served-By"), Some("solo/0"));
}

/// Reads one frame's (kind, payload) from a raw peer connection.
fn read_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 8];
    s.read_exact(&mut head).ok()?;
    let len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
    let mut rest = vec![0u8; len + 4];
    s.read_exact(&mut rest).ok()?;
    rest.truncate(len);
    Some((head[3], rest))
}

#[test]
fn an_incompatible_protocol_version_is_refused_with_a_reason() {
    use uringnotes::cluster::{auth, frame, handshake, wire};
    let net = Net::new();
    let a = net.start("a", 2, &[], &[]);
    let peer = a.peer_addr.unwrap();
    // A node that holds the cookie but only speaks versions 3..=4.
    let hello = wire::Hello {
        version_min: 3,
        version_max: 4,
        from: wire::NodeIdentity {
            node: 42,
            name: "future".into(),
            peer_addr: "127.0.0.9:1".parse().unwrap(),
            cores: 1,
        },
        incarnation: 1,
    };
    let cookie = auth::Cookie::load(&net.cookie).unwrap();
    let (_, noise_message) = handshake::Initiator::start(&cookie, &hello).unwrap();
    let mut s = TcpStream::connect(peer).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&frame::encode(frame::FrameKind::Hello, &noise_message))
        .unwrap();
    let (kind, reason) = read_frame(&mut s).expect("a Refuse frame");
    assert_eq!(kind, frame::FrameKind::Refuse as u8);
    let reason = String::from_utf8(reason).unwrap();
    assert!(reason.contains("incompatible protocol version"), "{reason}");
    // A frame of an unknown future version is refused the same way.
    let mut s = TcpStream::connect(peer).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut f = frame::encode(frame::FrameKind::Hello, &noise_message);
    f[2] = 7;
    s.write_all(&f).unwrap();
    let (kind, reason) = read_frame(&mut s).expect("a Refuse frame");
    assert_eq!(kind, frame::FrameKind::Refuse as u8);
    assert!(String::from_utf8_lossy(&reason).contains("you speak 7"));
    assert!(
        wait_until(Duration::from_secs(5), || a
            .stderr()
            .contains("incompatible protocol version")),
        "{}",
        a.stderr()
    );
}

/// `/_status` from a new connection, or None if the connection landed on a
/// shard that is down (or was cut).
fn try_status(s: &Server) -> Option<serde_json::Value> {
    let mut c = Client::try_connect(s.addr, Duration::from_millis(500)).ok()?;
    let r = c.try_request("GET", "/_status", &[], b"")?;
    (r.status == 200).then(|| r.json())
}

#[test]
fn a_failed_shard_0_is_restarted_in_process_and_the_node_rejoins_its_cluster() {
    // Shard 0 runs the cluster (peer listener, membership, peer
    // connections). When it fails, the watchdog ends those sockets with it
    // and the successor starts a new cluster on the same port; the other
    // shard keeps serving and the node stays up.
    let net = Net::new();
    // The production stall timeout (the harness relaxes it).
    let mut a = net.start("a", 5, &[], &["--stall-timeout", "1s"]);
    let b = net.start("b", 6, &[&a], &[]);
    wait_mesh(&[&a, &b]);
    assert_eq!(a.post_note("before the failures").status, 201);
    wait_converged(&[&a, &b]);

    for (n, kind) in ["panic", "unwind", "stall"].into_iter().enumerate() {
        let restarts = n as u64 + 1;
        // A stall long enough to be detected; the stuck thread wakes up
        // (and must not disturb its successor) during the checks below.
        let path = format!("/_admin/fault?shard=0&kind={kind}&ms=3000");
        let r = a.request("POST", &path, &[], b"");
        assert_eq!(r.status, 202, "{kind}: {}", r.text());
        assert!(
            wait_until(CONVERGE, || try_status(&a)
                .is_some_and(
                    |st| st["shards"][0]["restarts"].as_u64() >= Some(restarts)
                )),
            "{kind}: shard 0 was not restarted"
        );
        assert!(
            a.wait_exit(Duration::from_millis(10)).is_none(),
            "{kind}: node a exited"
        );
        // The cluster is back: notes written on either node after the
        // failure reach the other one.
        let on_b = format!("after {kind}, written on b");
        let on_a = format!("after {kind}, written on a");
        assert_eq!(b.post_note(&on_b).status, 201);
        assert!(
            wait_until(CONVERGE, || a.post_note(&on_a).status == 201),
            "{kind}: node a does not take writes"
        );
        let both = |s: &Server| {
            let t = texts(s);
            t.contains(&on_a) && t.contains(&on_b)
        };
        assert!(
            wait_until(CONVERGE, || both(&a) && both(&b)),
            "{kind}: notes written after the failure did not replicate: a {:?}, b {:?}",
            texts(&a),
            texts(&b)
        );
        wait_mesh(&[&a, &b]);
    }
    // The stalled thread has woken up by now and found itself replaced;
    // its cluster must not come back (no second connection, no stale
    // identity): the node still replicates both ways.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        a.post_note("after the stalled thread woke, on a").status,
        201
    );
    assert_eq!(
        b.post_note("after the stalled thread woke, on b").status,
        201
    );
    let ids = wait_converged(&[&a, &b]);
    assert_eq!(ids.len(), 9, "no note lost or doubled: {ids:?}");
    wait_mesh(&[&a, &b]);
    assert!(
        a.wait_exit(Duration::from_millis(10)).is_none(),
        "node a exited"
    );
}

#[test]
fn a_request_relayed_to_another_node_is_answered_at_once_when_shard_0_fails() {
    // A request for another node from core 1 goes through core 0, which
    // runs the cluster. If shard 0 fails while the other node is still
    // answering, its requester gets 502 at once, not 504 after the 10 s
    // dispatch timeout.
    let net = Net::new();
    let a = net.start(
        "a",
        7,
        &[],
        &["--dispatch", "random", "--stall-timeout", "1s"],
    );
    let b = net.start("b", 8, &[&a], &[]);
    wait_mesh(&[&a, &b]);
    let relay_lost = "the shard relaying this request to another node failed";
    for attempt in 1..=3u64 {
        // Node b answers slowly, so requests relayed to it are nearly
        // always pending when shard 0 of a unwinds.
        for shard in 0..2 {
            let path = format!("/_admin/fault?shard={shard}&kind=slow&ms=3000");
            assert_eq!(b.request("POST", &path, &[], b"").status, 202);
        }
        let requester = connect_to(a.addr, 1);
        let asking = ask_in_background(requester, "/notes?limit=1", Duration::from_secs(3));
        std::thread::sleep(Duration::from_millis(900));
        let mut on_core_1 = connect_to(a.addr, 1);
        let r = on_core_1.request("POST", "/_admin/fault?shard=0&kind=unwind", &[], b"");
        assert_eq!(r.status, 202, "{}", r.text());
        let outcomes = asking.join().unwrap();
        for (took, outcome) in &outcomes {
            assert!(
                !matches!(outcome, Some((504, _))) && *took < Duration::from_secs(2),
                "waited for the dispatch timeout: {outcomes:?}"
            );
        }
        assert!(
            wait_until(CONVERGE, || try_status(&a)
                .is_some_and(
                    |st| st["shards"][0]["restarts"].as_u64() >= Some(attempt)
                )),
            "shard 0 was not restarted"
        );
        let lost = outcomes
            .iter()
            .position(|(_, o)| matches!(o, Some((502, text)) if text.contains(relay_lost)));
        if let Some(i) = lost {
            // Its client got 502 at once, and the connection closed.
            assert!(
                outcomes[i + 1..].iter().all(|(_, o)| o.is_none()),
                "{outcomes:?}"
            );
            return;
        }
        wait_mesh(&[&a, &b]);
    }
    panic!("in 3 attempts, no relayed request was pending when shard 0 unwound");
}

/// Every node serves HTTPS (the same test CA; each node's certificate
/// covers 127.0.0.x), with its operator endpoints on an admin listener:
/// the mesh forms, writes on any node are acknowledged by the others and
/// read back from every node over HTTPS, also when requests run on another
/// node (`--dispatch random`), and each node's `/_status` is on its admin
/// listener only.
#[test]
fn the_cluster_works_with_https_on_every_node() {
    use common::tls::{self, Leaf, TestCa};
    let net = Net::new();
    let ca = TestCa::new(&net.dir.path().join("pki"));
    let config = tls::client(&ca);
    let start = |name: &str, ip: u8, join: &[&Server]| {
        let issued = ca.issue(name, &Leaf::default());
        let admin = format!("127.0.0.{ip}:0");
        let mut extra = tls::tls_flags(&issued);
        extra.extend([
            "--admin-listen".to_string(),
            admin,
            "--dispatch".into(),
            "random".into(),
        ]);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let s = net.start(name, ip, join, &extra);
        assert_eq!(s.scheme, "https");
        s
    };
    let a = start("a", 2, &[]);
    let b = start("b", 3, &[&a]);
    let c = start("c", 4, &[&b]);
    let nodes = [&a, &b, &c];
    let admin_status = |s: &Server| {
        Client::connect(s.admin_addr.unwrap())
            .request("GET", "/_status", &[], b"")
            .json()
    };
    for n in nodes {
        assert!(
            wait_until(CONVERGE, || {
                admin_status(n)["cluster"]["members"]
                    .as_array()
                    .is_some_and(|m| m.iter().filter(|m| m["connected"] == true).count() == 2)
            }),
            "mesh did not form: {}",
            admin_status(n)
        );
        let public = tls::connect(n.addr, &config).request("GET", "/_status", &[], b"");
        assert_eq!(public.status, 404, "/_status is on the admin listener only");
    }
    let mut ids = Vec::new();
    for (i, writer) in nodes.iter().enumerate() {
        let text = format!("over https via node {i}");
        let r = writer.https(&config, "POST", "/notes", text.as_bytes());
        assert_eq!(r.status, 201, "{}", r.text());
        let id = r.json()["id"].as_str().unwrap().to_string();
        for reader in nodes {
            let got = reader.https(&config, "GET", &format!("/notes/{id}"), b"");
            assert_eq!(got.status, 200, "note {id} from node {i} read on a peer");
            assert_eq!(got.json()["text"], text);
        }
        ids.push(id);
    }
    for n in nodes {
        let listed: BTreeSet<String> = tls::connect(n.addr, &config)
            .all_notes()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            listed,
            ids.iter().cloned().collect(),
            "every node lists every note"
        );
    }
}
