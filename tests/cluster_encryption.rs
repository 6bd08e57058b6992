//! Peer traffic is encrypted and authenticated (issue 18): real processes on
//! 127.0.0.x, with a test-owned proxy in front of each node that records
//! the bytes both ways (TCP and membership datagrams) and can damage or
//! replay what passes through it.
//!
//! Every node advertises its proxy's address (`--peer-advertise`), so every
//! peer connection and every membership datagram between the nodes passes
//! through one of the proxies.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{wait_until, Net, Server};
use uringnotes::cluster::{auth, frame, handshake, seal, wire};

const CONVERGE: Duration = Duration::from_secs(30);
/// Node names and a note phrase that must never be readable on the wire.
const NAME_A: &str = "alphanode7q";
const NAME_B: &str = "bravonode7q";
const SECRET_PHRASE: &str = "the eagle lands at midnight";

/// What a proxy does to the first matching sealed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tamper {
    /// Flip one byte in it.
    Flip,
    /// Pass it on, then send it again after the next record.
    Replay,
}

/// One tampering, armed on every proxy of a test and done once.
#[derive(Default)]
struct Armed {
    /// (what, records sent by this node, at least this many bytes)
    plan: Option<(Tamper, &'static str, usize)>,
    done: Vec<String>,
}

/// A TCP and UDP forwarder on one port in front of one node.
struct Proxy {
    addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    /// Every TCP byte forwarded, both directions.
    tcp: Arc<Mutex<Vec<u8>>>,
    /// Every datagram forwarded to the node, in order of arrival.
    datagrams: Arc<Mutex<Vec<Vec<u8>>>>,
    /// TCP connections accepted.
    connections: Arc<Mutex<usize>>,
    udp: UdpSocket,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// A proxy on 127.0.0.`ip` for node `node`; `other` is the node that
    /// connects through it.
    fn start(ip: u8, node: &'static str, other: &'static str, armed: Arc<Mutex<Armed>>) -> Proxy {
        let (listener, udp) = loop {
            let l = TcpListener::bind(format!("127.0.0.{ip}:0")).unwrap();
            if let Ok(u) = UdpSocket::bind(l.local_addr().unwrap()) {
                break (l, u);
            }
        };
        let addr = listener.local_addr().unwrap();
        let p = Proxy {
            addr,
            target: Arc::default(),
            tcp: Arc::default(),
            datagrams: Arc::default(),
            connections: Arc::default(),
            udp,
            stop: Arc::default(),
        };
        listener.set_nonblocking(true).unwrap();
        let (target, tcp, stop, connections) = (
            Arc::clone(&p.target),
            Arc::clone(&p.tcp),
            Arc::clone(&p.stop),
            Arc::clone(&p.connections),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let Some(to) = *target.lock().unwrap() else {
                    continue;
                };
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                *connections.lock().unwrap() += 1;
                client.set_nonblocking(false).unwrap();
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                // Toward the node: sent by `other`; back: sent by `node`.
                for (src, dst, sender) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        other,
                    ),
                    (server, client, node),
                ] {
                    let (tcp, armed) = (Arc::clone(&tcp), Arc::clone(&armed));
                    std::thread::spawn(move || pump(src, dst, sender, &tcp, &armed));
                }
            }
        });
        let (udp, target, datagrams, stop) = (
            p.udp.try_clone().unwrap(),
            Arc::clone(&p.target),
            Arc::clone(&p.datagrams),
            Arc::clone(&p.stop),
        );
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, _)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                datagrams.lock().unwrap().push(buf[..n].to_vec());
                if let Some(to) = *target.lock().unwrap() {
                    let _ = udp.send_to(&buf[..n], to);
                }
            }
        });
        p
    }

    fn forward_to(&self, node: &Server) {
        *self.target.lock().unwrap() = node.peer_addr;
    }

    /// Sends datagrams to the node as if they had just arrived.
    fn resend(&self, datagrams: &[Vec<u8>]) {
        let to = self.target.lock().unwrap().expect("a target");
        for d in datagrams {
            self.udp.send_to(d, to).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn recorded(&self) -> Vec<u8> {
        let mut all = self.tcp.lock().unwrap().clone();
        for d in self.datagrams.lock().unwrap().iter() {
            all.extend_from_slice(d);
        }
        all
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Forwards one direction of a connection unit by unit: first a clear
/// handshake frame, then sealed records (`u16` length, then the record),
/// applying the armed tampering to the first matching record.
fn pump(
    mut src: TcpStream,
    mut dst: TcpStream,
    sender: &'static str,
    tcp: &Mutex<Vec<u8>>,
    armed: &Mutex<Armed>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 65536];
    let mut clear_frame_done = false;
    let mut replay_after_next: Option<Vec<u8>> = None;
    let send = |dst: &mut TcpStream, bytes: &[u8]| -> bool {
        tcp.lock().unwrap().extend_from_slice(bytes);
        dst.write_all(bytes).is_ok()
    };
    'outer: loop {
        let n = match src.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            let unit = if !clear_frame_done {
                if buf.len() < 8 {
                    break;
                }
                if &buf[..2] != b"UN" {
                    // Not our protocol: pass through as it comes.
                    clear_frame_done = true;
                    buf.len()
                } else {
                    let len = u32::from_le_bytes(buf[4..8].try_into().unwrap()) as usize;
                    if buf.len() < 8 + len + 4 {
                        break;
                    }
                    clear_frame_done = true;
                    8 + len + 4
                }
            } else {
                if buf.len() < 2 {
                    break;
                }
                let len = u16::from_le_bytes([buf[0], buf[1]]) as usize;
                if buf.len() < 2 + len {
                    break;
                }
                2 + len
            };
            let mut bytes: Vec<u8> = buf.drain(..unit).collect();
            let mut replay_now = None;
            if clear_frame_done && bytes.len() > 2 {
                let mut a = armed.lock().unwrap();
                if let Some((what, from, min)) = a.plan {
                    if from == sender && bytes.len() >= min {
                        a.plan = None;
                        match what {
                            Tamper::Flip => {
                                let at = bytes.len() / 2;
                                bytes[at] ^= 0x5a;
                                a.done.push(format!(
                                    "flipped byte {at} of a {}-byte record from {sender}",
                                    bytes.len()
                                ));
                            }
                            Tamper::Replay => {
                                replay_after_next = Some(bytes.clone());
                                a.done.push(format!(
                                    "holding a {}-byte record from {sender} to replay",
                                    bytes.len()
                                ));
                                if !send(&mut dst, &bytes) {
                                    break 'outer;
                                }
                                continue;
                            }
                        }
                    }
                }
                if let Some(r) = replay_after_next.take() {
                    replay_now = Some(r);
                }
            }
            if !send(&mut dst, &bytes) {
                break 'outer;
            }
            if let Some(r) = replay_now {
                armed
                    .lock()
                    .unwrap()
                    .done
                    .push(format!("replayed a {}-byte record from {sender}", r.len()));
                if !send(&mut dst, &r) {
                    break 'outer;
                }
            }
        }
    }
    let _ = send(&mut dst, &buf);
    let _ = dst.shutdown(std::net::Shutdown::Both);
    let _ = src.shutdown(std::net::Shutdown::Both);
}

/// Two nodes, each behind its own proxy.
struct Pair {
    net: Net,
    armed: Arc<Mutex<Armed>>,
    pa: Proxy,
    pb: Proxy,
    a: Server,
    b: Server,
}

fn start_node(
    net: &Net,
    name: &str,
    ip: u8,
    advertise: SocketAddr,
    join: Option<SocketAddr>,
    cookies: &[&Path],
    extra: &[&str],
) -> Server {
    let listen = format!("127.0.0.{ip}:0");
    let advertise = advertise.to_string();
    let join = join.map(|j| j.to_string());
    let cookies: Vec<String> = cookies
        .iter()
        .map(|c| c.to_str().unwrap().to_string())
        .collect();
    let mut args: Vec<&str> = vec![
        "--listen",
        &listen,
        "--node-name",
        name,
        "--cores",
        "2",
        "--peer-listen",
        &listen,
        "--peer-advertise",
        &advertise,
        "--fault-injection",
    ];
    for c in &cookies {
        args.push("--cookie-file");
        args.push(c);
    }
    if let Some(j) = &join {
        args.push("--join");
        args.push(j);
    }
    args.extend_from_slice(extra);
    let s = Server::start_in(&net.data(name), &args);
    assert!(s.peer_addr.is_some(), "node {name} printed no peer address");
    s
}

impl Pair {
    fn start(ip: u8, extra: &[&str]) -> Pair {
        let net = Net::new();
        let armed = Arc::new(Mutex::new(Armed::default()));
        let pa = Proxy::start(ip, NAME_A, NAME_B, Arc::clone(&armed));
        let pb = Proxy::start(ip + 1, NAME_B, NAME_A, Arc::clone(&armed));
        let a = start_node(&net, NAME_A, ip, pa.addr, None, &[&net.cookie], extra);
        pa.forward_to(&a);
        let b = start_node(
            &net,
            NAME_B,
            ip + 1,
            pb.addr,
            Some(pa.addr),
            &[&net.cookie],
            extra,
        );
        pb.forward_to(&b);
        wait_mesh(&[&a, &b]);
        Pair {
            net,
            armed,
            pa,
            pb,
            a,
            b,
        }
    }

    fn restart_a(&mut self) {
        self.a.kill9();
        self.a = start_node(
            &self.net,
            NAME_A,
            ip_of(&self.pa),
            self.pa.addr,
            None,
            &[&self.net.cookie],
            &[],
        );
        self.pa.forward_to(&self.a);
    }

    fn arm(&self, what: Tamper, sender: &'static str, min_bytes: usize) {
        let mut a = self.armed.lock().unwrap();
        a.plan = Some((what, sender, min_bytes));
        a.done.clear();
    }

    fn done(&self) -> Vec<String> {
        self.armed.lock().unwrap().done.clone()
    }
}

fn ip_of(p: &Proxy) -> u8 {
    match p.addr.ip() {
        std::net::IpAddr::V4(v4) => v4.octets()[3],
        _ => unreachable!(),
    }
}

fn status(s: &Server) -> serde_json::Value {
    s.get("/_status").json()
}

fn members(s: &Server) -> Vec<serde_json::Value> {
    status(s)["cluster"]["members"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn connected_peers(s: &Server) -> usize {
    members(s).iter().filter(|m| m["connected"] == true).count()
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

/// Every note (id -> text) a node serves; panics on a duplicated id.
fn notes(s: &Server) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for n in s.all_notes() {
        let id = n["id"].as_str().unwrap().to_string();
        let text = n["text"].as_str().unwrap().to_string();
        assert!(
            out.insert(id.clone(), text).is_none(),
            "note {id} served twice"
        );
    }
    out
}

fn wait_converged(nodes: &[&Server]) -> HashMap<String, String> {
    let mut last = HashMap::new();
    let ok = wait_until(CONVERGE, || {
        let all: Vec<HashMap<String, String>> = nodes.iter().map(|n| notes(n)).collect();
        last = all[0].clone();
        all.iter().all(|s| *s == all[0])
    });
    assert!(ok, "nodes did not converge");
    last
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A note text big enough that its `Notes` frame is the only record of
/// its size (vectors and holes are a few dozen bytes).
fn long_text(tag: &str) -> String {
    format!("{tag}: {}", "0123456789abcdef".repeat(64))
}
const NOTE_RECORD_BYTES_MIN: usize = 800;

#[test]
fn peer_traffic_shows_no_note_text_and_no_node_name_on_the_wire() {
    // Random dispatch: requests (and their bodies) travel between the
    // nodes too, not only replicated notes.
    let p = Pair::start(20, &["--dispatch", "random"]);
    for i in 0..10 {
        let via = if i % 2 == 0 { &p.a } else { &p.b };
        assert_eq!(via.post_note(&format!("{SECRET_PHRASE} #{i}")).status, 201);
        let r = via.get("/notes?limit=5");
        assert_eq!(r.status, 200);
    }
    let all = wait_converged(&[&p.a, &p.b]);
    assert_eq!(all.len(), 10);
    assert!(all.values().all(|t| t.starts_with(SECRET_PHRASE)));
    // Let membership gossip (which carries names and addresses) run a while.
    std::thread::sleep(Duration::from_secs(2));
    let mut tcp_bytes = 0;
    let mut datagrams = 0;
    for proxy in [&p.pa, &p.pb] {
        tcp_bytes += proxy.tcp.lock().unwrap().len();
        datagrams += proxy.datagrams.lock().unwrap().len();
        let seen = proxy.recorded();
        for secret in [SECRET_PHRASE, NAME_A, NAME_B, "eagle"] {
            assert!(!contains(&seen, secret), "{secret:?} readable on the wire");
        }
    }
    let connections = *p.pa.connections.lock().unwrap() + *p.pb.connections.lock().unwrap();
    assert!(connections >= 1, "no connection went through the proxies");
    assert!(
        tcp_bytes > 10 * SECRET_PHRASE.len(),
        "{tcp_bytes} TCP bytes recorded"
    );
    assert!(datagrams > 5, "{datagrams} membership datagrams recorded");
    // The served pages do hold the text: it was the wire that hid it.
    assert!(contains(&p.b.get("/").body, SECRET_PHRASE));
}

#[test]
fn a_flipped_byte_drops_the_connection_and_the_nodes_resynchronise() {
    let p = Pair::start(22, &[]);
    assert_eq!(p.a.post_note("before the damage").status, 201);
    wait_converged(&[&p.a, &p.b]);
    p.arm(Tamper::Flip, NAME_A, NOTE_RECORD_BYTES_MIN);
    let text = long_text("damaged in transit, then resent");
    let r = p.a.post_note(&text);
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert!(
        wait_until(CONVERGE, || !p.done().is_empty()),
        "the proxy saw no note record to damage"
    );
    // The receiving side refused the record, named the peer, and dropped
    // the connection; the note was not stored from it.
    assert!(
        wait_until(CONVERGE, || {
            let log = p.b.stderr();
            log.lines().any(|l| {
                l.contains("peer connection lost")
                    && l.contains(NAME_A)
                    && l.contains("failed authentication")
            })
        }),
        "b's log:\n{}",
        p.b.stderr()
    );
    // They reconnect and resynchronise by version vectors: the note
    // arrives intact, exactly once.
    wait_mesh(&[&p.a, &p.b]);
    let all = wait_converged(&[&p.a, &p.b]);
    assert_eq!(
        all.get(&id),
        Some(&text),
        "the note is intact on both nodes"
    );
    assert_eq!(all.len(), 2);
    assert_eq!(p.b.post_note("after the damage").status, 201);
    assert_eq!(wait_converged(&[&p.a, &p.b]).len(), 3);
    eprintln!("proxy: {:?}", p.done());
}

#[test]
fn a_replayed_record_drops_the_connection_and_nothing_is_applied_twice() {
    let p = Pair::start(24, &[]);
    p.arm(Tamper::Replay, NAME_A, NOTE_RECORD_BYTES_MIN);
    let text = long_text("sent once, replayed by the proxy");
    let r = p.a.post_note(&text);
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert!(
        wait_until(CONVERGE, || p
            .done()
            .iter()
            .any(|d| d.starts_with("replayed"))),
        "the proxy replayed nothing: {:?}",
        p.done()
    );
    assert!(
        wait_until(CONVERGE, || {
            p.b.stderr().lines().any(|l| {
                l.contains("peer connection lost")
                    && l.contains(NAME_A)
                    && l.contains("failed authentication")
            })
        }),
        "b's log:\n{}",
        p.b.stderr()
    );
    wait_mesh(&[&p.a, &p.b]);
    // `notes` panics on a duplicated id; the text is there once.
    let all = wait_converged(&[&p.a, &p.b]);
    assert_eq!(all.len(), 1);
    assert_eq!(all.get(&id), Some(&text));
    let on_b = p.b.all_notes();
    assert_eq!(
        on_b.iter().filter(|n| n["text"] == text.as_str()).count(),
        1
    );
}

/// The SWIM state `of` has of member `name` (None: not a member).
fn state_of(of: &Server, name: &str) -> Option<String> {
    members(of)
        .iter()
        .find(|m| m["name"] == name)
        .map(|m| m["state"].as_str().unwrap_or("").to_string())
}

/// Watches `of`'s view of `name` for `d`: every state seen.
fn states_during(of: &Server, name: &str, d: Duration) -> BTreeSet<Option<String>> {
    let mut seen = BTreeSet::new();
    let end = Instant::now() + d;
    while Instant::now() < end {
        seen.insert(state_of(of, name));
        std::thread::sleep(Duration::from_millis(50));
    }
    seen
}

#[test]
fn captured_membership_datagrams_sent_again_change_no_member() {
    let mut p = Pair::start(26, &[]);
    // Let b's periodic announces (every 5 s) and probes be captured.
    std::thread::sleep(Duration::from_secs(6));
    let captured: Vec<Vec<u8>> = p.pa.datagrams.lock().unwrap().clone();
    assert!(captured.len() > 10, "{} datagrams captured", captured.len());

    // 1. Replayed while everyone is up: refused (seen before), b stays up.
    p.pa.resend(&captured);
    assert_eq!(state_of(&p.a, NAME_B).as_deref(), Some("up"));
    assert!(
        wait_until(Duration::from_secs(5), || p.a.stderr().lines().any(|l| l
            .contains("dropped a replayed membership datagram")
            && l.contains(NAME_B))),
        "a's log:\n{}",
        p.a.stderr()
    );

    // 2. b dies; a declares it down. Its captured datagrams sent again
    //    do not bring it back.
    p.b.kill9();
    assert!(
        wait_until(CONVERGE, || state_of(&p.a, NAME_B).as_deref()
            == Some("down")),
        "b never marked down: {}",
        status(&p.a)
    );
    p.pa.resend(&captured);
    let seen = states_during(&p.a, NAME_B, Duration::from_secs(3));
    assert_eq!(
        seen,
        BTreeSet::from([Some("down".to_string())]),
        "a's view of b"
    );

    // 3. a restarts (a new run knows nothing of b). The datagrams b sent
    //    to a's earlier run, announces included, are refused: b does not
    //    appear, up or otherwise.
    p.restart_a();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(state_of(&p.a, NAME_B), None, "a fresh run knows no b");
    p.pa.resend(&captured);
    let seen = states_during(&p.a, NAME_B, Duration::from_secs(3));
    assert_eq!(
        seen,
        BTreeSet::from([None]),
        "a's view of b after the replay"
    );
    assert!(
        p.a.stderr()
            .lines()
            .any(|l| l.contains("dropped a membership datagram for an earlier run of this node")),
        "a's log:\n{}",
        p.a.stderr()
    );
}

/// Completes a real handshake with `node` as a test peer named `name`.
fn handshake_with(node: SocketAddr, cookie: &Path, name: &str) -> (TcpStream, seal::Session) {
    let cookie = auth::Cookie::load(cookie).unwrap();
    let hello = wire::Hello {
        version_min: frame::PROTOCOL_VERSION,
        version_max: frame::PROTOCOL_VERSION,
        from: wire::NodeIdentity {
            node: 0x7e57_0001,
            name: name.into(),
            peer_addr: "127.0.0.250:1".parse().unwrap(),
            cores: 1,
        },
        incarnation: 1,
    };
    let (initiator, msg) = handshake::Initiator::start(&cookie, &hello).unwrap();
    let mut s = TcpStream::connect(node).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&frame::encode(frame::FrameKind::Hello, &msg))
        .unwrap();
    let (kind, answer) = read_clear_frame(&mut s).expect("an Answer");
    assert_eq!(kind, frame::FrameKind::Answer as u8);
    let (_, mut session) = initiator.finish(&answer).unwrap();
    let mut confirm = Vec::new();
    session
        .sealer
        .seal(frame::FrameKind::Confirm, &[], &mut confirm)
        .unwrap();
    s.write_all(&confirm).unwrap();
    (s, session)
}

fn read_clear_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 8];
    s.read_exact(&mut head).ok()?;
    let len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
    let mut rest = vec![0u8; len + 4];
    s.read_exact(&mut rest).ok()?;
    rest.truncate(len);
    Some((head[3], rest))
}

/// True once the node closed the connection (EOF or reset).
fn closed_by_node(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
    false
}

#[test]
fn an_injected_record_after_a_real_handshake_drops_only_that_connection() {
    let net = Net::new();
    let pa = Proxy::start(28, NAME_A, NAME_B, Arc::default());
    let a = start_node(&net, NAME_A, 28, pa.addr, None, &[&net.cookie], &[]);
    pa.forward_to(&a);
    let b = start_node(
        &net,
        NAME_B,
        29,
        "127.0.0.29:1".parse().unwrap(),
        Some(pa.addr),
        &[&net.cookie],
        &[],
    );
    // b advertises nothing reachable: the one connection is b's dial.
    wait_until(CONVERGE, || connected_peers(&a) == 1);
    let peer = a.peer_addr.unwrap();

    // A record sealed under another connection's keys.
    let (mut s, _) = handshake_with(peer, &net.cookie, "intruder-one");
    let cookie = auth::Cookie::load(&net.cookie).unwrap();
    let (mut stranger, _) = seal::session_pair(&cookie).unwrap();
    let mut forged = Vec::new();
    stranger
        .sealer
        .seal(frame::FrameKind::Vector, &[0; 16], &mut forged)
        .unwrap();
    s.write_all(&forged).unwrap();
    assert!(closed_by_node(&mut s), "the node kept the connection");
    assert!(
        wait_until(Duration::from_secs(10), || a
            .stderr()
            .lines()
            .any(|l| l.contains("peer connection lost")
                && l.contains("intruder-one")
                && l.contains("failed authentication"))),
        "a's log:\n{}",
        a.stderr()
    );

    // A frame cut after its first record, then the end of the stream.
    let (mut s, mut session) = handshake_with(peer, &net.cookie, "intruder-two");
    let mut big = Vec::new();
    session
        .sealer
        .seal(frame::FrameKind::Notes, &vec![0; 100_000], &mut big)
        .unwrap();
    s.write_all(&big[..seal::RECORD_BYTES_MAX]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed_by_node(&mut s));
    assert!(
        wait_until(Duration::from_secs(10), || a
            .stderr()
            .lines()
            .any(|l| l.contains("peer connection lost")
                && l.contains("intruder-two")
                && l.contains("truncated"))),
        "a's log:\n{}",
        a.stderr()
    );

    // Nothing else was disturbed: b stays connected, and the intruders'
    // entries go (their connections are gone; the status may lag a moment).
    assert!(
        wait_until(Duration::from_secs(10), || connected_peers(&a) == 1),
        "{}",
        status(&a)
    );
    let r = a.post_note("after the intruders");
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(b.get(&format!("/notes/{id}")).status, 200);
}

#[test]
fn a_cookie_rotation_rolls_through_the_cluster_without_a_split() {
    let net = Net::new();
    let old = net.cookie.clone();
    let new: PathBuf = net.dir.path().join("cookie-new");
    std::fs::write(&new, "the-next-cluster-cookie-0123456789abcdef\n").unwrap();
    let pa = Proxy::start(30, NAME_A, NAME_B, Arc::default());
    let pb = Proxy::start(31, NAME_B, NAME_A, Arc::default());
    let start = |name: &str, ip: u8, proxy: &Proxy, join: Option<SocketAddr>, cookies: &[&Path]| {
        let s = start_node(&net, name, ip, proxy.addr, join, cookies, &[]);
        proxy.forward_to(&s);
        s
    };
    let mut a = start(NAME_A, 30, &pa, None, &[&old]);
    let mut b = start(NAME_B, 31, &pb, Some(pa.addr), &[&old]);
    wait_mesh(&[&a, &b]);
    // The documented rolling procedure, one node at a time: dial with the
    // old cookie and accept both; then dial with the new and accept both;
    // then the new one only.
    let steps: [(&str, &[&Path]); 6] = [
        (NAME_B, &[&old, &new]),
        (NAME_A, &[&old, &new]),
        (NAME_B, &[&new, &old]),
        (NAME_A, &[&new, &old]),
        (NAME_B, &[&new]),
        (NAME_A, &[&new]),
    ];
    let mut written = 0;
    for (step, (name, cookies)) in steps.iter().enumerate() {
        if *name == NAME_A {
            a.kill9();
            a = start(NAME_A, 30, &pa, Some(pb.addr), cookies);
        } else {
            b.kill9();
            b = start(NAME_B, 31, &pb, Some(pa.addr), cookies);
        }
        wait_mesh(&[&a, &b]);
        for node in [&a, &b] {
            assert_eq!(node.post_note(&format!("step {step}")).status, 201);
            written += 1;
        }
        assert_eq!(wait_converged(&[&a, &b]).len(), written, "step {step}");
        assert!(
            wait_until(CONVERGE, || state_of(&a, NAME_B).as_deref() == Some("up")
                && state_of(&b, NAME_A).as_deref() == Some("up")),
            "membership at step {step}: {} / {}",
            status(&a),
            status(&b)
        );
    }
    // The old cookie no longer gets in.
    let mut x = start_node(
        &net,
        "x-old",
        32,
        "127.0.0.32:1".parse().unwrap(),
        Some(pa.addr),
        &[&old],
        &[],
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(connected_peers(&x), 0);
    assert!(
        x.stderr().contains("authentication failed"),
        "{}",
        x.stderr()
    );
    x.kill9();
}

#[test]
fn a_node_of_the_old_unencrypted_protocol_is_told_why_and_logged_on_both_sides() {
    let net = Net::new();
    let pa = Proxy::start(33, NAME_A, "old", Arc::default());
    let a = start_node(&net, NAME_A, 33, pa.addr, None, &[&net.cookie], &[]);
    pa.forward_to(&a);

    // An old node dials us: its protocol-1 Hello, in the clear.
    let mut hello = vec![1u8, 1];
    hello.extend_from_slice(&0x01d0_0001u32.to_le_bytes());
    hello.extend_from_slice(&(b"oldnode-v1".len() as u32).to_le_bytes());
    hello.extend_from_slice(b"oldnode-v1");
    hello.extend_from_slice(&[4, 127, 0, 0, 34, 0x10, 0x27]);
    hello.extend_from_slice(&1u16.to_le_bytes());
    hello.extend_from_slice(&[9; 32]);
    let mut s = TcpStream::connect(a.peer_addr.unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&frame::encode_versioned(
        frame::LEGACY_PROTOCOL_VERSION,
        frame::FrameKind::Hello,
        &hello,
    ))
    .unwrap();
    // The answer is in the old framing, so the old node can log it.
    let mut head = [0u8; 8];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head[..4], b"UN\x01\x05", "a protocol-1 Refuse frame");
    let len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
    let mut reason = vec![0u8; len];
    s.read_exact(&mut reason).unwrap();
    let reason = String::from_utf8(reason).unwrap();
    assert!(
        reason.contains("incompatible protocol version") && reason.contains("you speak 1"),
        "{reason}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || a.stderr().lines().any(|l| l
            .contains("oldnode-v1")
            && l.contains("old peer protocol version 1"))),
        "a's log:\n{}",
        a.stderr()
    );

    // We dial an old node: it refuses our version in its framing, as
    // protocol-1 nodes do, and we say what it is.
    let old = TcpListener::bind("127.0.0.35:0").unwrap();
    let old_addr = old.local_addr().unwrap();
    let fake_old = std::thread::spawn(move || {
        let (mut c, _) = old.accept().unwrap();
        let mut head = [0u8; 3];
        c.read_exact(&mut head).unwrap();
        let refusal = format!(
            "incompatible protocol version: you speak {}, this node speaks 1",
            head[2]
        );
        c.write_all(&frame::encode_versioned(
            1,
            frame::FrameKind::Refuse,
            refusal.as_bytes(),
        ))
        .unwrap();
        head[2]
    });
    let b = start_node(
        &net,
        NAME_B,
        36,
        "127.0.0.36:1".parse().unwrap(),
        Some(old_addr),
        &[&net.cookie],
        &[],
    );
    assert_eq!(fake_old.join().unwrap(), frame::PROTOCOL_VERSION);
    assert!(
        wait_until(Duration::from_secs(10), || b.stderr().lines().any(|l| l
            .contains("old peer protocol version 1")
            && l.contains("this node speaks 1"))),
        "b's log:\n{}",
        b.stderr()
    );
}
