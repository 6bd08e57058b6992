//! HTTPS against the real binary over real sockets, with a test CA made in
//! the test (`common/tls.rs`): requests over TLS 1.3 and 1.2 (GET, POST,
//! pipelined), ECDSA and RSA keys, session resumption across cores,
//! certificate reload on SIGHUP (and refusal of bad pairs, at start and on
//! reload), hostile input on the TLS port (plaintext, garbage, a stalled
//! handshake, a flood over the handshake cap) while others are served, the
//! admin listener, the redirect listener and HSTS, and `uringnotes bench`
//! against an https URL.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::tls::{self, Leaf, TestCa};
use common::{build_request, wait_until, Client, Server, BIN};

fn ca() -> (tempfile::TempDir, TestCa) {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("pki"));
    (dir, ca)
}

fn start_tls(issued: &tls::Issued, extra: &[&str]) -> Server {
    let mut args: Vec<String> = tls::tls_flags(issued);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Server::start(&args);
    assert_eq!(s.scheme, "https");
    s
}

fn wait_for_log(server: &Server, text: &str) {
    let ok = wait_until(Duration::from_secs(10), || server.stderr().contains(text));
    assert!(ok, "no {text:?} in the log:\n{}", server.stderr());
}

fn sighup(server: &Server) {
    // SAFETY: kill(2) on the child we started.
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
}

#[test]
fn get_post_and_pipelined_requests_over_tls_13_and_12() {
    let (_dir, ca) = ca();
    let issued = ca.issue("server", &Leaf::default());
    let server = start_tls(&issued, &["--cores", "1"]);
    for (version, wire) in [
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
    ] {
        let config = tls::client_config(&ca, &[version]);
        let mut c = tls::connect(server.addr, &config);
        assert_eq!(c.stream.conn.protocol_version(), Some(wire));
        assert_eq!(c.stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        let r = c.request("GET", "/healthz", &[], b"");
        assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
        assert_eq!(
            r.header("Strict-Transport-Security"),
            None,
            "no HSTS unless asked"
        );
        let text = format!("a note over {wire:?}");
        let r = c.request(
            "POST",
            "/notes",
            &[("Content-Type", "text/plain")],
            text.as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        let location = r.header("Location").unwrap().to_string();
        let r = c.request("GET", &location, &[], b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["text"], text.as_str());
        // Three requests in one write, answered in order on one connection.
        let mut batch = Vec::new();
        for path in ["/healthz", location.as_str(), "/nope"] {
            batch.extend_from_slice(&build_request("GET", path, &[], b""));
        }
        c.send(&batch);
        let statuses: Vec<u16> = (0..3).map(|_| c.read_response().unwrap().status).collect();
        assert_eq!(statuses, [200, 200, 404]);
        // A large response crosses several TLS records.
        let r = c.request("GET", "/notes?limit=1000", &[], b"");
        assert_eq!(r.status, 200);
        // A body sent in parts, with 100-continue.
        let body = vec![b'x'; 3000];
        let head = format!(
            "POST /notes HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        );
        c.send(head.as_bytes());
        assert_eq!(c.read_response().unwrap().status, 100);
        c.send(&body[..1000]);
        std::thread::sleep(Duration::from_millis(50));
        c.send(&body[1000..]);
        assert_eq!(c.read_response().unwrap().status, 201);
    }
    let notes = tls::connect(server.addr, &tls::client(&ca)).all_notes();
    assert_eq!(notes.len(), 4);
}

#[test]
fn an_rsa_key_serves_both_versions() {
    let (_dir, ca) = ca();
    let issued = ca.issue(
        "rsa",
        &Leaf {
            rsa: true,
            ..Leaf::default()
        },
    );
    let server = start_tls(&issued, &["--cores", "1"]);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = tls::client_config(&ca, &[version]);
        let r = tls::connect(server.addr, &config).request("GET", "/healthz", &[], b"");
        assert_eq!(r.status, 200);
    }
}

#[test]
fn a_session_resumes_on_any_core() {
    let (_dir, ca) = ca();
    let issued = ca.issue("server", &Leaf::default());
    let server = start_tls(&issued, &["--cores", "2"]);
    // rustls keeps the server's tickets (two per connection) and uses one
    // per new connection.
    let config = tls::resuming_client(&ca);
    let mut first = tls::connect(server.addr, &config);
    assert_eq!(first.request("GET", "/healthz", &[], b"").status, 200);
    assert_eq!(
        first.stream.conn.handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
    let mut cores = std::collections::BTreeSet::new();
    for _ in 0..24 {
        let mut c = tls::connect(server.addr, &config);
        let r = c.request("GET", "/healthz", &[], b"");
        assert_eq!(r.status, 200);
        assert_eq!(
            c.stream.conn.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed),
            "a ticket from one core resumes on {}",
            r.header("X-Served-By").unwrap()
        );
        cores.insert(r.header("X-Served-By").unwrap().to_string());
    }
    assert_eq!(cores.len(), 2, "resumed on both cores: {cores:?}");
    let metrics = tls::connect(server.addr, &config)
        .request("GET", "/metrics", &[], b"")
        .text();
    assert!(tls::counter(&metrics, "uringnotes_tls_handshakes_resumed_total") >= 24);
    assert_eq!(
        tls::counter(&metrics, "uringnotes_tls_handshakes_full_total"),
        1
    );
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_the_old_one_when_the_new_is_bad() {
    let (_dir, ca) = ca();
    let first = ca.issue("live", &Leaf::default());
    let server = start_tls(&first, &["--cores", "2"]);
    let config = tls::client(&ca);
    let mut open = tls::connect(server.addr, &config);
    assert_eq!(tls::peer_serial(&open), "01");
    assert_eq!(open.request("GET", "/healthz", &[], b"").status, 200);

    // Renewal: a new pair written over the old files (as a deploy hook
    // copies them), then SIGHUP.
    let renewed = ca.issue(
        "renewed",
        &Leaf {
            serial: 2,
            ..Leaf::default()
        },
    );
    std::fs::copy(&renewed.cert, &first.cert).unwrap();
    std::fs::copy(&renewed.key, &first.key).unwrap();
    sighup(&server);
    wait_for_log(&server, "TLS certificate reloaded");
    for _ in 0..6 {
        // Every core: new handshakes see the new certificate.
        let c = tls::connect(server.addr, &config);
        assert_eq!(tls::peer_serial(&c), "02");
    }
    // The connection opened before goes on, with the old certificate.
    assert_eq!(open.request("GET", "/healthz", &[], b"").status, 200);
    assert_eq!(tls::peer_serial(&open), "01");

    // Bad pairs change nothing, and the log says why.
    let other = ca.issue(
        "other",
        &Leaf {
            serial: 3,
            ..Leaf::default()
        },
    );
    let expired = ca.issue(
        "expired",
        &Leaf {
            serial: 4,
            days_valid: -1,
            ..Leaf::default()
        },
    );
    type Spoil<'a> = Box<dyn Fn() + 'a>;
    let cases: [(&str, Spoil); 3] = [
        (
            "does not belong to the certificate",
            Box::new(|| std::fs::copy(&other.cert, &first.cert).map(drop).unwrap()),
        ),
        (
            "expired on",
            Box::new(|| {
                std::fs::copy(&expired.cert, &first.cert).unwrap();
                std::fs::copy(&expired.key, &first.key).unwrap();
            }),
        ),
        (
            "cannot read the key file",
            Box::new(|| std::fs::remove_file(&first.key).unwrap()),
        ),
    ];
    for (why, spoil) in cases {
        spoil();
        let refusals = server
            .stderr()
            .matches("TLS certificate not reloaded")
            .count();
        sighup(&server);
        let ok = wait_until(Duration::from_secs(10), || {
            server
                .stderr()
                .matches("TLS certificate not reloaded")
                .count()
                > refusals
        });
        assert!(ok, "no refusal for {why:?}:\n{}", server.stderr());
        assert!(
            server.stderr().contains(why),
            "{why:?}:\n{}",
            server.stderr()
        );
        let mut c = tls::connect(server.addr, &config);
        assert_eq!(tls::peer_serial(&c), "02", "the good pair stays ({why})");
        assert_eq!(c.request("GET", "/healthz", &[], b"").status, 200);
    }
    assert_eq!(open.request("GET", "/healthz", &[], b"").status, 200);
}

#[test]
fn a_bad_pair_is_refused_at_start() {
    let (dir, ca) = ca();
    let a = ca.issue("a", &Leaf::default());
    let b = ca.issue("b", &Leaf::default());
    let expired = ca.issue(
        "expired",
        &Leaf {
            days_valid: -2,
            ..Leaf::default()
        },
    );
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let g = garbage.to_str().unwrap();
    let cases = [
        (
            a.cert.to_str().unwrap(),
            b.key.to_str().unwrap(),
            "does not belong",
        ),
        (
            expired.cert.to_str().unwrap(),
            expired.key.to_str().unwrap(),
            "expired on",
        ),
        (g, a.key.to_str().unwrap(), "no PEM certificate"),
        (a.cert.to_str().unwrap(), g, "no PEM private key"),
        (
            "/nonexistent/cert.pem",
            a.key.to_str().unwrap(),
            "cannot read the certificate file",
        ),
    ];
    for (cert, key, why) in cases {
        let data = dir.path().join("data");
        let out = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--cores",
                "1",
                "--tls-cert",
                cert,
                "--tls-key",
                key,
            ])
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        assert!(!out.status.success(), "started with {cert} and {key}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{why:?} in:\n{stderr}");
    }
    let out = Command::new(BIN)
        .args(["serve", "--tls-cert", a.cert.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls_cert needs tls_key"));
}

#[test]
fn plaintext_garbage_and_a_stalled_handshake_get_an_alert_or_a_close_while_others_are_served() {
    let (_dir, ca) = ca();
    let issued = ca.issue("server", &Leaf::default());
    let server = {
        let mut args = tls::tls_flags(&issued);
        args.extend(["--cores", "1", "--tls-handshake-timeout-ms", "600"].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::start_env(&args, &[("RUST_LOG", Some("info,uringnotes=debug"))])
    };
    let config = tls::client(&ca);
    let mut busy = tls::connect(server.addr, &config);
    assert_eq!(busy.request("GET", "/healthz", &[], b"").status, 200);

    // Plaintext HTTP on the TLS port: an alert record (type 21), nothing else.
    let mut plain = tls::send_raw(server.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let got = tls::read_until_closed(&mut plain);
    assert!(
        got.is_empty() || got[0] == 21,
        "an alert or a close, not {got:?}"
    );
    assert!(!String::from_utf8_lossy(&got).contains("HTTP/"), "{got:?}");
    // Garbage, and a record header promising more than a record may hold.
    for bytes in [
        &[0xde_u8, 0xad, 0xbe, 0xef, 0, 1, 2, 3][..],
        &[22, 3, 1, 0xff, 0xff, 1, 2, 3][..],
        &[0u8; 4096][..],
    ] {
        let mut s = tls::send_raw(server.addr, bytes);
        let got = tls::read_until_closed(&mut s);
        assert!(got.is_empty() || got[0] == 21, "{got:?}");
    }
    // A handshake that stalls half-way (slowloris): closed at the deadline.
    let stalled_at = Instant::now();
    let mut stalled = tls::send_raw(server.addr, &[22, 3, 1, 0, 200, 1, 0]);
    let got = tls::read_until_closed(&mut stalled);
    let took = stalled_at.elapsed();
    assert!(got.is_empty() || got[0] == 21, "{got:?}");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(4),
        "closed after {took:?} (timeout 600 ms)"
    );
    // Meanwhile the others are served, on the same core.
    assert_eq!(busy.request("GET", "/healthz", &[], b"").status, 200);
    assert_eq!(server.https(&config, "GET", "/healthz", b"").status, 200);
    wait_for_log(&server, "TLS handshake failed");
    wait_for_log(&server, "not completed within tls_handshake_timeout_ms");
    let metrics = busy.request("GET", "/metrics", &[], b"").text();
    assert!(tls::counter(&metrics, "uringnotes_tls_handshake_failures_total") >= 5);
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
}

#[test]
fn handshakes_beyond_the_per_core_cap_are_closed_and_the_rest_go_on() {
    let (_dir, ca) = ca();
    let issued = ca.issue("server", &Leaf::default());
    let server = start_tls(
        &issued,
        &[
            "--cores",
            "1",
            "--tls-handshakes-max-per-core",
            "2",
            "--tls-handshake-timeout-ms",
            "1500",
        ],
    );
    let config = tls::client(&ca);
    let mut served = tls::connect(server.addr, &config);
    // Answered: its handshake is over on the server's side too.
    assert_eq!(served.request("GET", "/healthz", &[], b"").status, 200);
    // Two connections that never send a byte hold the two handshake slots.
    let silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let refused = tls::try_connect(server.addr, &config);
    assert!(
        refused.is_err(),
        "a third handshake is refused while two are in progress"
    );
    // An established connection is not a handshake: it goes on.
    assert_eq!(served.request("GET", "/healthz", &[], b"").status, 200);
    // Once the silent ones time out, handshakes are accepted again.
    let ok = wait_until(Duration::from_secs(5), || {
        tls::try_connect(server.addr, &config).is_ok()
    });
    assert!(
        ok,
        "handshakes accepted again after the stalled ones timed out"
    );
    drop(silent);
    let metrics = served.request("GET", "/metrics", &[], b"").text();
    assert!(tls::counter(&metrics, "uringnotes_tls_handshakes_rejected_total") >= 1);
}

#[test]
fn the_admin_listener_takes_the_operator_endpoints() {
    let server = Server::start(&[
        "--cores",
        "1",
        "--admin-listen",
        "127.0.0.1:0",
        "--fault-injection",
    ]);
    let admin = server.admin_addr.expect("an admin address");
    let public = |method: &str, path: &str| server.request(method, path, &[], b"").status;
    let on_admin = |method: &str, path: &str| {
        Client::connect(admin)
            .request(method, path, &[], b"")
            .status
    };
    assert_eq!(public("GET", "/metrics"), 404);
    assert_eq!(public("GET", "/_status"), 404);
    assert_eq!(public("POST", "/_admin/fault?shard=0&kind=slow&ms=10"), 404);
    assert_eq!(public("GET", "/healthz"), 200);
    assert_eq!(public("GET", "/"), 200);
    assert_eq!(on_admin("GET", "/metrics"), 200);
    assert_eq!(on_admin("GET", "/_status"), 200);
    assert_eq!(on_admin("GET", "/healthz"), 200);
    assert_eq!(
        on_admin("POST", "/_admin/fault?shard=0&kind=slow&ms=10"),
        202
    );
    assert_eq!(
        on_admin("GET", "/"),
        404,
        "the notes are not on the admin listener"
    );
    assert_eq!(on_admin("GET", "/notes"), 404);
    // Requests on both listeners are counted in the one set of metrics.
    let metrics = Client::connect(admin)
        .request("GET", "/metrics", &[], b"")
        .text();
    assert!(
        metrics.contains("route=\"not_found\",status=\"404\""),
        "{metrics}"
    );
}

#[test]
fn the_redirect_listener_sends_every_request_to_https_and_https_answers_carry_hsts() {
    let (_dir, ca) = ca();
    let issued = ca.issue("server", &Leaf::default());
    let server = start_tls(
        &issued,
        &[
            "--cores",
            "1",
            "--redirect-http",
            "127.0.0.1:0",
            "--hsts-max-age",
            "600",
            "--admin-listen",
            "127.0.0.1:0",
        ],
    );
    let redirect = server.redirect_addr.expect("a redirect address");
    let port = server.addr.port();
    let mut c = Client::connect(redirect);
    let r = c.request("GET", "/notes?limit=2", &[], b"");
    // The harness sends `Host: test`.
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("Location"),
        Some(format!("https://test:{port}/notes?limit=2").as_str())
    );
    assert_eq!(
        r.header("Strict-Transport-Security"),
        None,
        "never over plain HTTP"
    );
    let r = c.request("POST", "/notes", &[], b"text=x");
    assert_eq!(r.status, 308, "other methods keep their method");
    let mut raw = TcpStream::connect(redirect).unwrap();
    raw.write_all(b"GET /x HTTP/1.1\r\nHost: evil.com/\"><script>\r\n\r\n")
        .unwrap();
    let mut c = Client::over(raw);
    assert_eq!(
        c.read_response().unwrap().status,
        400,
        "a Host that cannot be a host name"
    );
    // HTTPS answers, also of a dispatched request and an event stream, carry HSTS.
    let config = tls::client(&ca);
    let mut s = tls::connect(server.addr, &config);
    for path in ["/healthz", "/", "/notes", "/nope"] {
        let r = s.request("GET", path, &[], b"");
        assert_eq!(
            r.header("Strict-Transport-Security"),
            Some("max-age=600"),
            "{path}"
        );
    }
    let mut events = tls::connect(server.addr, &config);
    events.send(&build_request("GET", "/events", &[], b""));
    let head = events.read_response().unwrap();
    assert_eq!(head.header("Content-Type"), Some("text/event-stream"));
    assert_eq!(
        head.header("Strict-Transport-Security"),
        Some("max-age=600")
    );
    // The admin listener is plain HTTP: no HSTS there.
    let r = Client::connect(server.admin_addr.unwrap()).request("GET", "/healthz", &[], b"");
    assert_eq!(r.header("Strict-Transport-Security"), None);
}

#[test]
fn bench_measures_https_and_handshakes() {
    let (_dir, ca) = ca();
    let issued = ca.issue("server", &Leaf::default());
    let server = start_tls(&issued, &["--cores", "1"]);
    let url = format!("https://localhost:{}/healthz", server.addr.port());
    let json = _dir.path().join("run.json");
    let run = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args([
                "bench",
                &url,
                "-c",
                "2",
                "-d",
                "1s",
                "--threads",
                "1",
                "--json",
            ])
            .arg(&json)
            .args(extra)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap_or_default()).unwrap_or_default();
        (out.status.code(), text, report)
    };
    let ca_pem = ca.ca_pem();
    let ca_arg = ca_pem.to_str().unwrap();
    // Keep-alive: handshakes happen before the measurement.
    let (code, text, report) = run(&["--cacert", ca_arg]);
    assert_eq!(code, Some(0), "{text}");
    assert!(report["ok"].as_u64().unwrap() > 10, "{text}");
    assert_eq!(report["tls"]["handshakes"], 0, "{text}");
    // A connection per request: every request a handshake, resumed.
    let (code, text, report) = run(&["--cacert", ca_arg, "--connection-per-request"]);
    assert_eq!(code, Some(0), "{text}");
    let tls = &report["tls"];
    assert!(tls["handshakes"].as_u64().unwrap() > 5, "{text}");
    assert_eq!(
        tls["full"].as_u64().unwrap() + tls["resumed"].as_u64().unwrap(),
        tls["handshakes"].as_u64().unwrap()
    );
    assert!(tls["resumed"].as_u64().unwrap() > 0, "{text}");
    assert!(text.contains("handshakes"), "{text}");
    // Full handshakes only.
    let (code, text, report) = run(&["--insecure", "--connection-per-request", "--no-tls-resume"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(report["tls"]["resumed"], 0, "{text}");
    assert!(report["tls"]["full"].as_u64().unwrap() > 5, "{text}");
    // An untrusted certificate: every request fails, and the report says why.
    let other = TestCa::new(&_dir.path().join("other"));
    let other_pem = other.ca_pem();
    let (code, text, _) = run(&["--cacert", other_pem.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("tls") && text.contains("certificate"),
        "{text}"
    );
    // https flags on an http URL are refused.
    let out = Command::new(BIN)
        .args(["bench", "http://127.0.0.1:1/", "--insecure"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
