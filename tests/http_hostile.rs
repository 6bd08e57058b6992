//! Malformed and hostile requests: each gets its precise status, and the
//! server keeps serving everyone else.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Client, Server};

/// (name, raw request, expected status)
fn cases() -> Vec<(&'static str, Vec<u8>, u16)> {
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000)).into_bytes();
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(17 * 1024)
    )
    .into_bytes();
    let many_headers = {
        let mut s = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
        for i in 0..100 {
            s.push_str(&format!("X-H{i}: v\r\n"));
        }
        s.push_str("\r\n");
        s.into_bytes()
    };
    let big_body = format!(
        "POST /notes HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        65 * 1024
    )
    .into_bytes();
    let big_chunked = {
        let mut v =
            b"POST /notes HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..70 {
            v.extend_from_slice(b"400\r\n");
            v.extend(std::iter::repeat_n(b'x', 1024));
            v.extend_from_slice(b"\r\n");
        }
        v
    };
    let c = |name: &'static str, raw: &str, status: u16| (name, raw.as_bytes().to_vec(), status);
    vec![
        c("garbage request line", "HELLO\r\n\r\n", 400),
        ("binary garbage (a TLS hello)", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(), 400),
        c("HTTP/0.9 style request", "GET /\r\n\r\n", 400),
        c("unsupported version", "GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        c("version garbage", "GET / HTTX/1.1\r\nHost: t\r\n\r\n", 400),
        c("missing Host in 1.1", "GET / HTTP/1.1\r\n\r\n", 400),
        c("two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        c("header without colon", "GET / HTTP/1.1\r\nHost: t\r\nNoColon\r\n\r\n", 400),
        c("space before colon", "GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400),
        c("obs-fold continuation", "GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n  folded\r\n\r\n", 400),
        c("NUL in header value", "GET / HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n", 400),
        c("control char in method", "G\x01T / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        c("target not starting with /", "GET notes HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        c("fragment in target", "GET /#frag HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        ("URI too long", long_uri, 414),
        ("header section too large", big_header, 431),
        ("too many headers", many_headers, 431),
        c("CL and TE together (smuggling)", "POST /notes HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        c("two different Content-Lengths", "POST /notes HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\ntext=", 400),
        c("Content-Length not a number", "POST /notes HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n", 400),
        c("negative Content-Length", "POST /notes HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\n", 400),
        c("Content-Length list", "POST /notes HTTP/1.1\r\nHost: t\r\nContent-Length: 4, 4\r\n\r\ntext", 400),
        c("Content-Length overflow", "POST /notes HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999999\r\n\r\n", 413),
        ("body over the limit", big_body, 413),
        ("chunked body over the limit", big_chunked, 413),
        c("unknown transfer coding", "POST /notes HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        c("gzip then chunked", "POST /notes HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        c("chunked twice", "POST /notes HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
        c("TE in HTTP/1.0", "POST /notes HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        c("bad chunk size", "POST /notes HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
        c("chunk data without CRLF", "POST /notes HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400),
        c("chunk size with LF only", "POST /notes HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400),
        c("POST without a length", "POST /notes HTTP/1.1\r\nHost: t\r\n\r\n", 411),
        c("unsupported expectation", "POST /notes HTTP/1.1\r\nHost: t\r\nExpect: 200-ok\r\nContent-Length: 0\r\n\r\n", 417),
        c("unknown method", "BREW /pot HTTP/1.1\r\nHost: t\r\n\r\n", 501),
        ("invalid UTF-8 note", b"POST /notes HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n\xc3\x28".to_vec(), 400),
        c("invalid JSON note", "POST /notes HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n{\"te\"", 400),
        c("empty note", "POST /notes HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n", 400),
    ]
}

#[test]
fn each_malformed_request_gets_its_status_and_the_server_keeps_serving() {
    let s = Server::start(&["--cores", "2"]);
    let cases = cases();
    assert!(cases.len() >= 25);
    for (name, raw, expected) in &cases {
        let mut c = Client::connect(s.addr);
        // The server may answer and close before reading everything we send.
        let _ = c.stream.write_all(raw);
        let r = c
            .read_response()
            .unwrap_or_else(|| panic!("{name}: no response"));
        assert_eq!(r.status, *expected, "{name}: got {} {}", r.status, r.text());
        assert!(
            !r.text().is_empty(),
            "{name}: the error says what was wrong"
        );
        // A normal client is still served.
        assert_eq!(
            s.get("/healthz").status,
            200,
            "server unhealthy after {name}"
        );
    }
    // None of the refused writes stored anything.
    assert_eq!(s.all_notes().len(), 0);
    // 30+ malformed requests in a row did not stop the node (the original's failure).
    for _ in 0..50 {
        let _ = common::raw_exchange(s.addr, b"\x00\x01garbage\r\n\r\n");
    }
    assert_eq!(s.post_note("still alive").status, 201);
}

#[test]
fn framing_errors_close_the_connection() {
    let s = Server::start(&["--cores", "1"]);
    let mut c = Client::connect(s.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(
        c.closed_by_server(),
        "the smuggled second request is never answered"
    );
}

#[test]
fn slowloris_headers_are_timed_out_with_408() {
    let s = Server::start(&["--cores", "1", "--header-timeout-ms", "1000"]);
    let mut c = Client::connect(s.addr);
    let started = Instant::now();
    c.send(b"GET / HTTP/1.1\r\n");
    // Trickle a header byte every 200 ms: still too slow for the whole head.
    let mut got = None;
    for b in b"X-Slow: aaaaaaaaaaaaaaaaaaaa".iter() {
        std::thread::sleep(Duration::from_millis(200));
        if c.stream.write_all(std::slice::from_ref(b)).is_err() {
            break;
        }
        if started.elapsed() > Duration::from_millis(1500) {
            break;
        }
    }
    if let Some(r) = c.read_response() {
        got = Some(r.status);
    }
    assert_eq!(got, Some(408));
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "cut after {elapsed:?}");
    assert_eq!(s.get("/healthz").status, 200);
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let s = Server::start(&["--cores", "1", "--idle-timeout-ms", "500"]);
    let mut c = Client::connect(s.addr);
    assert_eq!(c.request("GET", "/healthz", &[], b"").status, 200);
    let started = Instant::now();
    assert!(c.closed_by_server());
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn connections_over_the_per_core_limit_get_503() {
    let s = Server::start(&["--cores", "1", "--connections-max-per-core", "10"]);
    let mut held: Vec<Client> = (0..10).map(|_| Client::connect(s.addr)).collect();
    for c in held.iter_mut() {
        assert_eq!(c.request("GET", "/healthz", &[], b"").status, 200);
    }
    let mut extra = Client::connect(s.addr);
    let r = extra.read_response().expect("a 503 before close");
    assert_eq!(r.status, 503);
    assert!(extra.closed_by_server());
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        s.get("/healthz").status,
        200,
        "capacity returns when connections close"
    );
}

#[test]
fn a_pipelining_client_that_never_reads_is_bounded_and_cut_off() {
    let s = Server::start(&["--cores", "1", "--send-timeout-ms", "1000"]);
    for i in 0..100 {
        assert_eq!(
            s.post_note(&format!("a note to make the page bigger, number {i}"))
                .status,
            201
        );
    }
    let pid = s.pid();
    let rss = || -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = rss();
    // 20 clients each pipeline 2,000 page requests (about 40 MB of
    // responses each) and never read a byte.
    let req = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(2000);
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let mut c = Client::connect(s.addr);
            c.stream
                .set_write_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let _ = c.stream.write_all(&req);
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let during = rss();
    assert!(
        during < before + 64 * 1024,
        "RSS grew from {before} KiB to {during} KiB with non-reading pipeliners"
    );
    // They are cut off by the send timeout, and everyone else is served meanwhile.
    assert_eq!(s.get("/healthz").status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    let m = s.get("/metrics").text();
    let timed_out: u64 = m
        .lines()
        .find(|l| l.starts_with("uringnotes_connections_timed_out_total "))
        .and_then(|l| l.split(' ').nth(1))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        timed_out >= 20,
        "slow readers were not cut off ({timed_out})"
    );
    drop(clients);
}
