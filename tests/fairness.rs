//! A connection cannot keep its core to itself. Reads of bytes already
//! received and sends into a roomy socket buffer complete without waiting,
//! so a connection with a long pipeline to answer and room to send it never
//! reaches a real wait; it must still let the core's other connections (and
//! its sweeper and heartbeat) run between batches. Before `Connection::pace`,
//! 1000 slow readers or 200 clients streaming oversized bodies stalled the
//! cores past the watchdog's stall timeout (see perf/RESULTS.md).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Server;

#[test]
fn connections_with_long_pipelines_do_not_hold_their_core() {
    // One core, and kernel send buffers of 8 MiB (4 MiB, doubled by the
    // kernel): each attacker gets hundreds of responses rendered and sent
    // before its send would block, all without a real wait.
    let s = Server::start(&["--cores", "1", "--send-buffer-bytes", "4194304"]);
    let mut c = s.connect();
    for i in 0..120 {
        let text = format!("note {i}: {}", "lorem ipsum dolor sit amet ".repeat(3));
        let r = c.request(
            "POST",
            "/notes",
            &[("Content-Type", "text/plain")],
            text.as_bytes(),
        );
        assert_eq!(r.status, 201);
    }
    // The JSON list is rendered for each request (unlike the newest HTML
    // page, which each core caches).
    let list = "/notes?limit=200";
    assert!(s.get(list).body.len() > 20_000, "a list of 120 notes");

    let attackers: Vec<TcpStream> = (0..100)
        .map(|_| {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            socket.connect(&s.addr.into()).unwrap();
            let mut stream: TcpStream = socket.into();
            // 1024 lists (about 25 MB) asked for; none is ever read.
            let request = format!("GET {list} HTTP/1.1\r\nHost: t\r\n\r\n");
            stream.write_all(&request.as_bytes().repeat(1024)).unwrap();
            stream
        })
        .collect();

    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let r = s.get("/healthz");
    let waited = started.elapsed();
    assert_eq!(r.status, 200);
    eprintln!("a request during the attack waited {waited:?}");
    // With fair turns it waits for a round of small batches (milliseconds
    // in a release build); without, for every attacker's hundreds of lists.
    assert!(
        waited < Duration::from_millis(1500),
        "a request waited {waited:?} behind connections answering pipelines"
    );
    drop(attackers);
}
