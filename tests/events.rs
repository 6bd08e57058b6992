//! `GET /events` (Server-Sent Events) over raw sockets against the real
//! binary: framing of the stream, delivery to subscribers on every core,
//! replay with `since_us`, the subscriber limit, exemption from the idle
//! timeout, cut-off of a subscriber that does not read, and shutdown.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Client, Server};
use serde_json::Value;

/// An open event stream, read by hand.
struct Stream {
    sock: TcpStream,
    buf: Vec<u8>,
    head: String,
}

/// One parsed event.
#[derive(Debug)]
struct Event {
    id: Option<String>,
    name: Option<String>,
    data: String,
}

impl Stream {
    fn open(addr: SocketAddr, query: &str) -> Stream {
        Self::try_open(addr, query).unwrap_or_else(|head| panic!("not a stream: {head}"))
    }

    /// Opens a stream; `Err(head)` when the server answered otherwise.
    fn try_open(addr: SocketAddr, query: &str) -> Result<Stream, String> {
        let mut sock = TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            sock,
            "GET /events{query} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut s = Stream {
            sock,
            buf: Vec::new(),
            head: String::new(),
        };
        let end = loop {
            if let Some(p) = common::find(&s.buf, b"\r\n\r\n") {
                break p + 4;
            }
            assert!(s.fill(), "stream closed before its head");
        };
        s.head = String::from_utf8_lossy(&s.buf[..end]).into_owned();
        s.buf.drain(..end);
        if s.head.starts_with("HTTP/1.1 200 ") {
            Ok(s)
        } else {
            Err(s.head)
        }
    }

    fn fill(&mut self) -> bool {
        let mut b = [0u8; 8192];
        match self.sock.read(&mut b) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&b[..n]);
                true
            }
        }
    }

    /// The next block (up to a blank line), comments and `retry` included.
    fn next_block(&mut self) -> Option<String> {
        loop {
            if let Some(p) = common::find(&self.buf, b"\n\n") {
                let block = String::from_utf8(self.buf[..p].to_vec()).expect("UTF-8 stream");
                self.buf.drain(..p + 2);
                return Some(block);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// The next event with data (skipping `retry:` and comments).
    fn next_event(&mut self) -> Option<Event> {
        loop {
            let block = self.next_block()?;
            let mut ev = Event {
                id: None,
                name: None,
                data: String::new(),
            };
            let mut has_data = false;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    ev.id = Some(v.into());
                } else if let Some(v) = line.strip_prefix("event: ") {
                    ev.name = Some(v.into());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    assert!(!has_data, "one data line per event: {block:?}");
                    ev.data = v.into();
                    has_data = true;
                }
            }
            if has_data {
                return Some(ev);
            }
        }
    }

    fn next_note(&mut self) -> Value {
        let ev = self.next_event().expect("an event");
        assert_eq!(ev.name.as_deref(), Some("note"), "{ev:?}");
        let note: Value = serde_json::from_str(&ev.data).expect("JSON data");
        assert_eq!(ev.id.as_deref(), note["id"].as_str(), "event id = note id");
        note
    }

    /// True once the server closed the stream (within the read timeout).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 4096];
        loop {
            match self.sock.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

fn status(server: &Server) -> Value {
    server.get("/_status").json()
}

fn subscribers_by_core(server: &Server) -> Vec<u64> {
    status(server)["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sse_subscribers"].as_u64().unwrap())
        .collect()
}

fn wait_for(what: &str, max: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + max;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stream_head_and_framing() {
    let server = Server::start(&["--cores", "1"]);
    let mut s = Stream::open(server.addr, "");
    let head = s.head.to_ascii_lowercase();
    assert!(
        head.contains("\r\ncontent-type: text/event-stream\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\ncache-control: no-store\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(
        head.contains("\r\nx-served-by: "),
        "like every response: {head}"
    );
    assert_eq!(s.next_block().as_deref(), Some("retry: 1000"));
    let text = "line one\nline two\r\n\ndata: fake\n\n<script>x</script>";
    let created = server.post_note(text).json();
    let note = s.next_note();
    assert_eq!(
        note, created,
        "the event carries the note as the API shows it"
    );
    assert_eq!(note["text"], text);

    // Other methods are refused; a bad cursor is a 400.
    let r = server.request("POST", "/events", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET"));
    assert_eq!(server.get("/events?since_us=soon").status, 400);
}

#[test]
fn every_subscriber_on_every_core_gets_every_note() {
    let server = Server::start(&["--cores", "2"]);
    // Open streams until both cores hold some (the kernel picks the core).
    let mut streams = Vec::new();
    wait_for("subscribers on both cores", Duration::from_secs(20), || {
        streams.push(Stream::open(server.addr, ""));
        let by_core = subscribers_by_core(&server);
        by_core.iter().sum::<u64>() == streams.len() as u64 && by_core.iter().all(|&n| n > 0)
    });
    let mut client = server.connect();
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = client.request(
            "POST",
            "/notes",
            &[("Content-Type", "text/plain")],
            format!("note {i}").as_bytes(),
        );
        assert_eq!(r.status, 201);
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    for s in &mut streams {
        let got: Vec<String> = (0..5)
            .map(|_| s.next_note()["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, ids, "in order, once each");
    }
    let metrics = server.get("/metrics").text();
    assert!(
        metrics.contains(&format!("uringnotes_sse_subscribers {}\n", streams.len())),
        "{metrics}"
    );
    // Closed streams give their slots back.
    drop(streams);
    wait_for("subscribers to be released", Duration::from_secs(5), || {
        subscribers_by_core(&server).iter().sum::<u64>() == 0
    });
}

#[test]
fn since_us_replays_what_the_page_missed() {
    let server = Server::start(&["--cores", "1"]);
    let notes: Vec<Value> = (0..3)
        .map(|i| server.post_note(&format!("n{i}")).json())
        .collect();
    let since = notes[1]["created_at_us"].as_u64().unwrap();
    let mut s = Stream::open(server.addr, &format!("?since_us={since}"));
    assert_eq!(s.next_note()["text"], "n1");
    assert_eq!(s.next_note()["text"], "n2");
    let live = server.post_note("n3").json();
    assert_eq!(s.next_note()["id"], live["id"]);
    // Without a cursor, the stream starts with the next note.
    let mut s = Stream::open(server.addr, "");
    server.post_note("n4");
    assert_eq!(s.next_note()["text"], "n4");
}

#[test]
fn a_cursor_older_than_the_feed_asks_for_a_reload() {
    // 1100 notes: more than the feed keeps (1024), so a page whose newest
    // note is older than the feed cannot be completed from it.
    let server = Server::start(&["--cores", "1", "--fsync", "never"]);
    let mut client = server.connect();
    for i in 0..1100 {
        let r = client.request(
            "POST",
            "/notes",
            &[("Content-Type", "text/plain")],
            format!("{i}").as_bytes(),
        );
        assert_eq!(r.status, 201);
    }
    let mut s = Stream::open(server.addr, "?since_us=0");
    let ev = s.next_event().expect("an event");
    assert_eq!(ev.name.as_deref(), Some("reload"), "{ev:?}");
    assert!(s.closed(), "the stream ends after asking for a reload");
}

#[test]
fn subscriber_limit_per_core() {
    let server = Server::start(&["--cores", "1", "--sse-subscribers-max-per-core", "2"]);
    let a = Stream::open(server.addr, "");
    let _b = Stream::open(server.addr, "");
    let refused = Stream::try_open(server.addr, "").err().expect("a refusal");
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    // Ordinary requests still work at the limit.
    assert_eq!(server.get("/healthz").status, 200);
    drop(a);
    wait_for("a freed slot", Duration::from_secs(5), || {
        Stream::try_open(server.addr, "").is_ok()
    });
}

#[test]
fn streams_are_exempt_from_the_idle_timeout() {
    let server = Server::start(&["--cores", "1", "--idle-timeout-ms", "300"]);
    let mut s = Stream::open(server.addr, "");
    let mut idle = Client::connect(server.addr);
    assert_eq!(idle.request("GET", "/healthz", &[], b"").status, 200);
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        idle.closed_by_server(),
        "an idle keep-alive connection is closed"
    );
    let note = server.post_note("after a quiet second").json();
    assert_eq!(s.next_note()["id"], note["id"], "the stream is still open");
}

#[test]
fn a_subscriber_that_does_not_read_is_cut_off() {
    let server = Server::start(&[
        "--cores",
        "1",
        "--fsync",
        "never",
        "--send-timeout-ms",
        "500",
    ]);
    // Subscribe, then never read again.
    let stuck = Stream::open(server.addr, "");
    let mut client = server.connect();
    let big = "x".repeat(4000);
    // Enough bytes to fill the socket buffers, or to leave the feed behind.
    for _ in 0..1500 {
        let r = client.request(
            "POST",
            "/notes",
            &[("Content-Type", "text/plain")],
            big.as_bytes(),
        );
        assert_eq!(r.status, 201);
    }
    wait_for(
        "the stuck subscriber to be dropped",
        Duration::from_secs(10),
        || subscribers_by_core(&server)[0] == 0,
    );
    drop(stuck);
}

#[test]
fn shutdown_ends_streams_promptly() {
    let mut server = Server::start(&["--cores", "2", "--shutdown-timeout-ms", "8000"]);
    let mut streams: Vec<Stream> = (0..4).map(|_| Stream::open(server.addr, "")).collect();
    let started = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "open streams must not hold shutdown for its grace period ({:?})",
        started.elapsed()
    );
    for s in &mut streams {
        assert!(s.closed());
    }
}

#[test]
fn pipelined_requests_after_a_subscription_are_not_answered() {
    // The stream owns the connection: bytes after the subscription are
    // never parsed as requests (the body is delimited by the close).
    let server = Server::start(&["--cores", "1"]);
    let mut sock = TcpStream::connect(server.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    sock.write_all(
        b"GET /events HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while let Ok(n) = sock.read(&mut b) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&b[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");
}
