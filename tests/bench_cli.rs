//! `uringnotes bench` as a user runs it: against the real uringnotes server
//! and against stub servers, checking the report, the files it writes, the
//! modes, progress, CPU placement and every kind of bad input and failure.

mod bench_support;
mod common;

use std::collections::HashSet;
use std::path::Path;

use bench_support::{bench, json, u, Behaviour, Stub};

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn a_mixed_run_against_uringnotes_reports_in_every_format() {
    let server = common::Server::start(&["--cores", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let (json_path, hgrm_path, html_path) = (
        dir.path().join("run.json"),
        dir.path().join("run.hgrm"),
        dir.path().join("run.html"),
    );
    let url = format!("http://{}/", server.addr);
    let run = bench(&[
        &url,
        "-c",
        "4",
        "-d",
        "1s",
        "--threads",
        "1",
        "--mix",
        "GET /:8,GET /notes:1,POST /notes:1",
        "--json",
        path_str(&json_path),
        "--hgrm",
        path_str(&hgrm_path),
        "--html",
        path_str(&html_path),
    ]);
    run.assert_ok();
    // Not a terminal: no progress, nothing on stderr.
    assert_eq!(run.stderr, "", "stderr should be quiet when not a terminal");
    for needle in ["closed loop", "req/s", "p99.99", "errors       none"] {
        assert!(run.stdout.contains(needle), "{needle:?} in\n{}", run.stdout);
    }

    let r = json(&json_path);
    assert_eq!(r["mode"], "closed");
    let requests = u(&r, "/requests");
    assert!(requests > 50, "{requests} requests in 1 s");
    assert_eq!(u(&r, "/ok"), requests);
    assert_eq!(u(&r, "/errors/total"), 0);
    let series: u64 = r["throughput_per_s"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        series, requests,
        "the per-second series adds up to the total"
    );
    let lat = &r["latency_us"];
    let (min, p50, p90, p99, max) = (
        u(lat, "/min"),
        u(lat, "/p50"),
        u(lat, "/p90"),
        u(lat, "/p99"),
        u(lat, "/max"),
    );
    assert!(min <= p50 && p50 <= p90 && p90 <= p99 && p99 <= max);
    assert_eq!(u(lat, "/count"), requests);

    // Each mix entry got requests; every successful POST is a distinct note.
    let mix = r["mix"].as_array().unwrap();
    assert_eq!(mix.len(), 3);
    for m in mix {
        assert!(u(m, "/requests") > 0, "{m}");
    }
    let posts_ok = u(&mix[2], "/ok");
    let notes = server.all_notes();
    let abandoned = u(&r, "/abandoned");
    assert!(
        posts_ok <= notes.len() as u64 && notes.len() as u64 <= posts_ok + abandoned,
        "{} notes stored for {posts_ok} acknowledged POSTs ({abandoned} unanswered at the end)",
        notes.len()
    );
    let texts: HashSet<&str> = notes.iter().map(|n| n["text"].as_str().unwrap()).collect();
    assert_eq!(texts.len(), notes.len(), "POST bodies must be unique");
    assert!(texts.iter().all(|t| t.starts_with("bench ")));

    // The .hgrm file: the HdrHistogram percentile distribution, in ms.
    let hgrm = std::fs::read_to_string(&hgrm_path).unwrap();
    let mut lines = hgrm.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    );
    let rows: Vec<Vec<f64>> = hgrm
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(|f| f.parse().unwrap()).collect())
        .collect();
    let last = rows.last().unwrap();
    assert_eq!(last[1], 1.0);
    assert_eq!(last[2] as u64, requests);
    assert!((last[0] * 1000.0 - max as f64).abs() <= 1.0, "max in ms");
    assert!(hgrm.contains("#[Mean    ="));
    assert!(hgrm.contains("#[Buckets ="));

    // The HTML page: self-contained, two plots.
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert_eq!(html.matches("<svg").count(), 2);
    assert!(html.contains("Latency by percentile") && html.contains("Throughput over time"));
    for fetch in [" src=", "<link", "@import", "url(", "<script", "https://"] {
        assert!(
            !html.contains(fetch),
            "the page must fetch nothing: {fetch:?}"
        );
    }
}

/// Issue 19: the bench sends `Accept-Encoding` and `If-None-Match` as
/// given, reports bytes on the wire per response, and counts a 304 (the
/// answer to a conditional request) as a success.
#[test]
fn compressed_and_conditional_runs_report_their_bytes() {
    let server = common::Server::start(&["--cores", "1"]);
    for i in 0..50 {
        assert_eq!(
            server
                .post_note(&format!("note {i} of a page worth compressing"))
                .status,
            201
        );
    }
    let page = server.request("GET", "/", &[("Accept-Encoding", "gzip")], b"");
    let tag = page.header("etag").expect("ETag").to_string();
    let gzip_len: f64 = page.body.len() as f64;
    let identity_len = server.get("/").body.len() as f64;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}/", server.addr);
    let mut per_response = Vec::new();
    for (name, headers) in [
        ("identity", vec![]),
        ("gzip", vec!["Accept-Encoding: gzip".to_string()]),
        (
            "revalidate",
            vec![
                "Accept-Encoding: gzip".to_string(),
                format!("If-None-Match: {tag}"),
            ],
        ),
    ] {
        let json_path = dir.path().join(format!("{name}.json"));
        let mut args = vec![
            url.as_str(),
            "-c",
            "2",
            "-d",
            "500ms",
            "--threads",
            "1",
            "--json",
            path_str(&json_path),
        ];
        for h in &headers {
            args.extend_from_slice(&["-H", h.as_str()]);
        }
        let run = bench(&args);
        run.assert_ok();
        assert!(run.stdout.contains("B per response"), "{}", run.stdout);
        let r = json(&json_path);
        assert_eq!(u(&r, "/errors/total"), 0, "{name}: {r}");
        assert_eq!(u(&r, "/ok"), u(&r, "/requests"), "{name}");
        let bytes = r["bytes_read_per_response"].as_f64().expect("per response");
        per_response.push(bytes);
        eprintln!("{name}: {bytes:.0} bytes per response");
    }
    let [identity, gzip, revalidate] = per_response[..] else {
        unreachable!()
    };
    // Each answer: its head (a few hundred bytes) and its body.
    assert!(identity > identity_len && identity < identity_len + 600.0);
    assert!(gzip > gzip_len && gzip < gzip_len + 600.0);
    assert!(revalidate < 600.0, "a 304 is only a head");
}

#[test]
fn constant_rate_keeps_the_rate_and_reports_both_latencies() {
    let server = common::Server::start(&["--cores", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.json");
    let url = format!("http://{}/healthz", server.addr);
    let run = bench(&[
        &url,
        "-c",
        "2",
        "-d",
        "2s",
        "--rate",
        "200",
        "--json",
        path_str(&out),
    ]);
    run.assert_ok();
    assert!(
        run.stdout.contains("constant rate, 200 req/s"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("uncorrected"), "{}", run.stdout);
    let r = json(&out);
    assert_eq!(r["mode"], "rate");
    assert_eq!(u(&r, "/rate_per_s"), 200);
    let requests = u(&r, "/requests");
    assert!(
        (390..=400).contains(&requests),
        "{requests} requests at 200/s for 2 s"
    );
    // Measured from the due time, latency can only be longer.
    assert!(u(&r, "/latency_us/p50") >= u(&r, "/latency_uncorrected_us/p50"));
}

#[test]
fn pipelining_and_warm_up() {
    let server = common::Server::start(&["--cores", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.json");
    let url = format!("http://{}/", server.addr);
    bench(&[
        &url,
        "-c",
        "2",
        "-d",
        "1s",
        "--warmup",
        "500ms",
        "--pipeline",
        "8",
        "--mix",
        "POST /notes",
        "--json",
        path_str(&out),
    ])
    .assert_ok();
    let r = json(&out);
    assert_eq!(u(&r, "/pipeline"), 8);
    assert_eq!(u(&r, "/errors/total"), 0);
    let ok = u(&r, "/ok");
    assert!(ok > 0);
    // Notes were created during the warm-up too, but not counted.
    let notes = server.all_notes().len() as u64;
    assert!(
        notes > ok,
        "{notes} notes stored, {ok} counted: warm-up requests must not be counted"
    );
}

#[test]
fn compare_prints_two_runs_side_by_side() {
    let server = common::Server::start(&["--cores", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    let url = format!("http://{}/healthz", server.addr);
    for (conns, path) in [("1", &a), ("4", &b)] {
        bench(&[&url, "-c", conns, "-d", "500ms", "--json", path_str(path)]).assert_ok();
    }
    let run = bench(&["compare", path_str(&a), path_str(&b)]);
    run.assert_ok();
    assert!(
        run.stdout
            .contains("note: the runs differ in connections: 1 vs 4"),
        "{}",
        run.stdout
    );
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("requests/s"))
        .unwrap_or_else(|| panic!("no requests/s row:\n{}", run.stdout));
    let (ra, rb) = (
        json(&a)["requests_per_s"].as_f64().unwrap(),
        json(&b)["requests_per_s"].as_f64().unwrap(),
    );
    assert!(
        line.trim_end().ends_with(&format!("{:.2}x", rb / ra)),
        "ratio after/before in {line:?}"
    );

    // A file that is not a report: one line, exit 2.
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{\"hello\": 1").unwrap();
    let run = bench(&["compare", path_str(&a), path_str(&junk)]);
    assert_eq!(run.code, Some(2));
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

#[test]
fn bad_input_is_one_line_and_exit_code_2() {
    // A port nothing listens on: bind one, then free it.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unreachable = format!("http://{}/", free.local_addr().unwrap());
    drop(free);
    let stub = Stub::start(Behaviour::Status(404));
    let good = stub.url();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["not a url"], "invalid URL"),
        (vec!["http//127.0.0.1/"], "invalid URL"),
        (vec!["ftp://127.0.0.1/"], "only http:// and https://"),
        (
            vec![&good, "--cacert", "/nonexistent/ca.pem"],
            "are for https://",
        ),
        (vec!["http://127.0.0.1:99999/"], "port"),
        (vec![&unreachable], "cannot connect"),
        (vec!["http://no-such-host.invalid/"], "cannot resolve"),
        (vec![&good, "--mix", "GET"], "bad --mix"),
        (vec![&good, "--mix", "GET /:0"], "bad --mix"),
        (vec![&good, "--mix", "get /"], "bad --mix"),
        (vec![&good, "-d", "10 parsecs"], "bad --duration"),
        (vec![&good, "-d", "0s"], "bad --duration"),
        (vec![&good, "--warmup", "soon"], "bad --warmup"),
        (vec![&good, "--timeout", "0ms"], "bad --timeout"),
        (
            vec![&good, "--rate", "100", "--pipeline", "4"],
            "--pipeline",
        ),
        (vec![&good, "--threads", "100000"], "bad --threads"),
        (vec![&good, "-H", "Host: x"], "bad --header"),
    ];
    for (args, expected) in cases {
        let run = bench(&args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{args:?}: no report on bad input");
        assert_eq!(
            run.stderr.lines().count(),
            1,
            "{args:?}: one line, got {:?}",
            run.stderr
        );
        assert!(
            run.stderr.starts_with("uringnotes bench: ") && run.stderr.contains(expected),
            "{args:?}: {:?} should mention {expected:?}",
            run.stderr
        );
    }
    assert_eq!(
        stub.requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "bad input must not send a request"
    );
}

#[test]
fn when_every_request_fails_it_says_so_instead_of_a_report() {
    let cases = [
        (Behaviour::Status(500), vec![], "status 500"),
        (Behaviour::HangUp, vec![], "reset"),
        (Behaviour::Garbage, vec![], "protocol"),
        (Behaviour::Silent, vec!["--timeout", "200ms"], "timeout"),
    ];
    for (behaviour, extra, kind) in cases {
        let stub = Stub::start(behaviour);
        let url = stub.url();
        let mut args = vec![url.as_str(), "-c", "2", "-d", "1s"];
        args.extend(extra);
        let run = bench(&args);
        assert_eq!(
            run.code,
            Some(1),
            "{behaviour:?}: {}{}",
            run.stdout,
            run.stderr
        );
        assert_eq!(run.stdout, "", "{behaviour:?}: no report of zeros");
        assert_eq!(
            run.stderr.lines().count(),
            1,
            "{behaviour:?}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains("every request failed") && run.stderr.contains(kind),
            "{behaviour:?}: {:?} should say every request failed with {kind}",
            run.stderr
        );
    }
}

#[test]
fn a_cpu_mask_given_with_taskset_is_respected() {
    use std::os::unix::process::CommandExt as _;
    let server = common::Server::start(&["--cores", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.json");
    // The last CPU this test may run on, like `taskset -c N`.
    let cpu = {
        // SAFETY: sched_getaffinity fills the set we pass.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) },
            0
        );
        (0..libc::CPU_SETSIZE as usize)
            .rev()
            .find(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .expect("some CPU is allowed")
    };
    let mut cmd = std::process::Command::new(bench_support::BIN);
    cmd.args([
        "bench",
        &format!("http://{}/healthz", server.addr),
        "-c",
        "4",
        "-d",
        "300ms",
        "--json",
        path_str(&out),
    ])
    .stdout(std::process::Stdio::null());
    // SAFETY: only an async-signal-safe syscall between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd.status().unwrap();
    assert!(status.success());
    let r = json(&out);
    assert_eq!(u(&r, "/threads"), 1, "one executor per allowed CPU");
    assert_eq!(r["cpus"], serde_json::json!([cpu]));
}

#[test]
fn live_progress_appears_on_a_terminal() {
    let server = common::Server::start(&["--cores", "1"]);
    // A pseudo-terminal as stderr, like a user's shell.
    let (mut master, slave) = {
        let (mut m, mut s) = (0, 0);
        // SAFETY: openpty writes two descriptors we then own.
        let rc = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty");
        use std::os::fd::FromRawFd as _;
        unsafe { (std::fs::File::from_raw_fd(m), std::fs::File::from_raw_fd(s)) }
    };
    let child = std::process::Command::new(bench_support::BIN)
        .args([
            "bench",
            &format!("http://{}/healthz", server.addr),
            "-c",
            "2",
            "-d",
            "3s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(slave)
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // The child is gone; read what it wrote to the terminal.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // SAFETY: a non-blocking flag on our own descriptor.
    unsafe {
        use std::os::fd::AsRawFd as _;
        libc::fcntl(master.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
    }
    use std::io::Read as _;
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(
        seen.contains("req/s") && seen.contains("p99") && seen.contains("/ 3s]"),
        "progress on the terminal: {seen:?}"
    );
    // The report itself still goes to stdout.
    assert!(String::from_utf8_lossy(&out.stdout).contains("latency of 2xx and 304 responses"));
}
