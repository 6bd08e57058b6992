//! Every route and the HTTP/1.1 behaviours of the real server, over real sockets.

mod common;

use common::{build_request, raw_exchange, Client, Server};

#[test]
fn routes_answer_as_documented() {
    let s = Server::start(&["--cores", "2"]);

    let r = s.get("/healthz");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    assert!(r.header("Date").is_some(), "every response carries Date");

    // POST /notes with each content type.
    let r = s.request(
        "POST",
        "/notes",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"text=form+note%21",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let form_note = r.json();
    assert_eq!(form_note["text"], "form note!");
    assert_eq!(
        r.header("Location").unwrap(),
        format!("/notes/{}", form_note["id"].as_str().unwrap())
    );

    let r = s.request(
        "POST",
        "/notes",
        &[("Content-Type", "application/json")],
        br#"{"text":"json note"}"#,
    );
    assert_eq!(r.status, 201);
    let r = s.request(
        "POST",
        "/notes",
        &[("Content-Type", "text/plain")],
        b"plain note",
    );
    assert_eq!(r.status, 201);
    let plain_id = r.json()["id"].as_str().unwrap().to_string();

    // A browser's form post is redirected back to the page.
    let r = s.request(
        "POST",
        "/notes",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Accept", "text/html,application/xhtml+xml"),
        ],
        b"text=from+a+browser",
    );
    assert_eq!(r.status, 303);
    assert_eq!(r.header("Location"), Some("/"));

    // The original server's write.
    let r = s.get("/add_note?text=compat%20note");
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());

    // GET /notes/{id}
    let r = s.get(&format!("/notes/{plain_id}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.json()["text"], "plain note");
    assert_eq!(s.get("/notes/00000000-0-1").status, 404);
    assert_eq!(s.get("/notes/not-an-id").status, 404);

    // GET /notes: newest first with cursor pagination.
    let all = s.all_notes();
    let texts: Vec<&str> = all.iter().map(|n| n["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        [
            "compat note",
            "from a browser",
            "plain note",
            "json note",
            "form note!"
        ]
    );
    let r = s.get("/notes?limit=2");
    let page = r.json();
    assert_eq!(page["notes"].as_array().unwrap().len(), 2);
    let next = page["next_before"].as_str().unwrap();
    let r = s.get(&format!("/notes?limit=2&before={next}"));
    let texts: Vec<_> = r.json()["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, ["plain note", "json note"]);
    assert_eq!(s.get("/notes?limit=0").status, 400);
    assert_eq!(s.get("/notes?limit=abc").status, 400);
    assert_eq!(s.get("/notes?before=zzz").status, 400);

    // The HTML page lists every note, newest first, with the form.
    let r = s.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
    let html = r.text();
    assert!(html.contains("<form method=\"post\" action=\"/notes\">"));
    let first = html.find("compat note").unwrap();
    let last = html.find("form note!").unwrap();
    assert!(first < last, "newest first");

    // Metrics in Prometheus text format.
    let r = s.get("/metrics");
    assert_eq!(r.status, 200);
    let m = r.text();
    for family in [
        "uringnotes_http_requests_total{route=\"notes_create\",status=\"201\"}",
        "uringnotes_http_request_duration_seconds_bucket",
        "uringnotes_connections_open",
        "uringnotes_notes 5",
        "uringnotes_log_bytes",
        "uringnotes_fsyncs_total",
    ] {
        assert!(m.contains(family), "metrics lack {family}:\n{m}");
    }

    // Status JSON.
    let st = s.get("/_status").json();
    assert_eq!(st["notes"], 5);
    assert_eq!(st["shards"].as_array().unwrap().len(), 2);

    // Unknown path, wrong method, unknown method.
    assert_eq!(s.get("/nope").status, 404);
    let r = s.request("DELETE", "/notes", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD, POST"));
    let r = s.request("POST", "/", &[], b"x");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    assert_eq!(s.request("BREW", "/", &[], b"").status, 501);
}

#[test]
fn note_text_is_escaped_everywhere() {
    let s = Server::start(&["--cores", "1"]);
    let evil = "<script>alert(1)</script><img src=x onerror=alert(2)> \"'&";
    assert_eq!(s.post_note(evil).status, 201);
    let html = s.get("/").text();
    assert!(!html.contains("<script>alert"), "raw script tag in page");
    assert!(!html.contains("<img src=x"), "raw img tag in page");
    assert!(html.contains(
        "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt; &quot;&#39;&amp;"
    ));
    let json = s.get("/notes").text();
    assert!(
        !json.contains("<script>"),
        "JSON must escape < for embedding"
    );
    assert_eq!(
        s.all_notes()[0]["text"],
        evil,
        "JSON decodes to the exact text"
    );
}

#[test]
fn note_text_limits() {
    let s = Server::start(&["--cores", "1"]);
    let r = s.request(
        "POST",
        "/notes",
        &[("Content-Type", "text/plain")],
        &vec![b'a'; 4097],
    );
    assert_eq!(r.status, 413);
    assert!(r.text().contains("4097 bytes"), "{}", r.text());
    let r = s.request(
        "POST",
        "/notes",
        &[("Content-Type", "text/plain")],
        &vec![b'a'; 4096],
    );
    assert_eq!(r.status, 201);
    let r = s.request(
        "POST",
        "/notes",
        &[("Content-Type", "text/plain")],
        b"   \n",
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("empty"));
    let r = s.request(
        "POST",
        "/notes",
        &[("Content-Type", "text/plain")],
        b"\xff\xfe",
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("UTF-8"));
    let r = s.get("/add_note?text=%FF");
    assert_eq!(r.status, 400);
    let r = s.get("/add_note");
    assert_eq!(r.status, 400);
    let r = s.request("POST", "/notes", &[("Content-Type", "image/png")], b"x");
    assert_eq!(r.status, 415);
    let r = s.request(
        "POST",
        "/notes",
        &[("Content-Type", "application/json")],
        br#"{"txt":"x"}"#,
    );
    assert_eq!(r.status, 400);
    // The connection survives a refused note (it was framed correctly).
    let mut c = s.connect();
    assert_eq!(c.request("POST", "/notes", &[], b"").status, 400);
    assert_eq!(c.request("GET", "/healthz", &[], b"").status, 200);
}

#[test]
fn keep_alive_head_and_http10() {
    let s = Server::start(&["--cores", "1"]);
    let mut c = s.connect();
    for _ in 0..10 {
        assert_eq!(c.request("GET", "/healthz", &[], b"").status, 200);
    }
    let r = c.request("HEAD", "/", &[], b"");
    assert_eq!(r.status, 200);
    let len: usize = r.header("Content-Length").unwrap().parse().unwrap();
    assert!(len > 100, "HEAD reports the GET length");
    assert_eq!(
        c.request("GET", "/healthz", &[], b"").status,
        200,
        "no body bytes leaked after HEAD"
    );

    // Connection: close is honoured.
    let r = c.request("GET", "/healthz", &[("Connection", "close")], b"");
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(c.closed_by_server());

    // HTTP/1.0 closes by default, keeps alive when asked.
    let mut c = s.connect();
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n");
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(c.closed_by_server());
    let mut c = s.connect();
    c.send(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response().unwrap();
    assert_eq!(r.header("Connection"), Some("keep-alive"));
    c.send(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.read_response().unwrap().status, 200);
}

#[test]
fn hundred_pipelined_requests_in_one_write_are_answered_in_order() {
    let s = Server::start(&["--cores", "1"]);
    let mut batch = Vec::new();
    for i in 0..100 {
        if i % 2 == 0 {
            batch.extend(build_request(
                "POST",
                "/notes",
                &[("Content-Type", "text/plain")],
                format!("pipelined {i}").as_bytes(),
            ));
        } else {
            batch.extend(build_request("GET", &format!("/nope{i}"), &[], b""));
        }
    }
    let mut c = s.connect();
    c.send(&batch);
    for i in 0..100 {
        let r = c
            .read_response()
            .unwrap_or_else(|| panic!("response {i} missing"));
        if i % 2 == 0 {
            assert_eq!(r.status, 201);
            assert_eq!(r.json()["text"], format!("pipelined {i}"));
        } else {
            assert_eq!(r.status, 404);
        }
    }
    assert_eq!(s.all_notes().len(), 50);
}

#[test]
fn a_request_sent_one_byte_at_a_time() {
    let s = Server::start(&["--cores", "1"]);
    let mut c = s.connect();
    let req = build_request(
        "POST",
        "/notes",
        &[("Content-Type", "text/plain")],
        b"slowly typed",
    );
    for b in &req {
        c.send(std::slice::from_ref(b));
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["text"], "slowly typed");
}

#[test]
fn chunked_bodies_and_expect_continue() {
    let s = Server::start(&["--cores", "1"]);
    let r = raw_exchange(
        s.addr,
        b"POST /notes HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
5\r\nhello\r\n7;ext=1\r\n chunks\r\n0\r\nTrailer: x\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["text"], "hello chunks");

    // Expect: 100-continue gets an interim response before the body is sent.
    let mut c = s.connect();
    c.send(b"POST /notes HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.read_response().unwrap();
    assert_eq!(interim.status, 100);
    c.send(b"continued");
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["text"], "continued");

    // A body too large is refused before it is sent.
    let mut c = s.connect();
    c.send(b"POST /notes HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(c.read_response().unwrap().status, 413);
}

#[test]
fn notes_written_through_every_core_appear_on_every_core() {
    let s = Server::start(&["--cores", "2"]);
    // Many connections spread over both cores by SO_REUSEPORT.
    let mut cores_seen = std::collections::HashSet::new();
    for i in 0..40 {
        let r = s.post_note(&format!("note {i}"));
        assert_eq!(r.status, 201);
        let id = r.json()["id"].as_str().unwrap().to_string();
        cores_seen.insert(id.split('-').nth(1).unwrap().to_string());
    }
    assert_eq!(
        cores_seen.len(),
        2,
        "writes landed on both cores: {cores_seen:?}"
    );
    // Within a few ms, every connection (whichever core) sees all 40.
    std::thread::sleep(std::time::Duration::from_millis(50));
    for _ in 0..20 {
        let html = s.get("/").text();
        for i in 0..40 {
            assert!(
                html.contains(&format!("note {i}<")),
                "note {i} missing from a page"
            );
        }
    }
}

#[test]
fn graceful_shutdown_exits_zero() {
    let mut s = Server::start(&["--cores", "2"]);
    assert_eq!(s.post_note("before shutdown").status, 201);
    let mut idle = Client::connect(s.addr);
    assert_eq!(idle.request("GET", "/healthz", &[], b"").status, 200);
    let status = s.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        idle.closed_by_server(),
        "idle keep-alive connections are closed on shutdown"
    );
}

#[test]
fn the_default_relative_data_dir_works() {
    // `uringnotes serve` with no --data-dir uses ./uringnotes-data, as the README says.
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--cores", "1"])
        .current_dir(tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("uringnotes listening on http://")
        .unwrap()
        .parse()
        .unwrap();
    let r = Client::connect(addr).request(
        "POST",
        "/notes",
        &[("Content-Type", "text/plain")],
        b"relative",
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(tmp
        .path()
        .join("uringnotes-data/log")
        .read_dir()
        .unwrap()
        .next()
        .is_some());
}
