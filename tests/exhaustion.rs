//! Resource exhaustion: tens of thousands of connections.
//!
//! This machine (and CI) caps open files per process at 20,000 and does not
//! let even root raise it, so the 20,000 client connections are split
//! between this test and a second copy of this test binary
//! ([`exhaustion_client_helper`], run as a child process).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Server;

fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit read and write only the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

/// Opens `n` connections, sends one request on each, and counts the answers.
fn open_and_ask(addr: SocketAddr, n: usize) -> (Vec<TcpStream>, [usize; 3]) {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        match TcpStream::connect(addr) {
            Ok(c) => conns.push(c),
            Err(e) => panic!("connect {i} failed: {e}"),
        }
    }
    let req = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    for c in conns.iter_mut() {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = c.write_all(req);
    }
    let mut counts = [0usize; 3]; // 200, 503, anything else
    for c in conns.iter_mut() {
        let mut buf = [0u8; 512];
        match c.read(&mut buf) {
            Ok(n) if buf[..n].starts_with(b"HTTP/1.1 200") => counts[0] += 1,
            Ok(n) if buf[..n].starts_with(b"HTTP/1.1 503") => counts[1] += 1,
            _ => counts[2] += 1,
        }
    }
    (conns, counts)
}

/// Not a test on its own: the second half of the clients, run as a child
/// process by the test below (it is ignored in normal runs).
#[test]
#[ignore]
fn exhaustion_client_helper() {
    let Ok(addr) = std::env::var("EXHAUSTION_ADDR") else {
        return;
    };
    raise_nofile();
    let n: usize = std::env::var("EXHAUSTION_COUNT").unwrap().parse().unwrap();
    let (_conns, c) = open_and_ask(addr.parse().unwrap(), n);
    // A file, not stdout: the test harness may capture a child's output.
    let out = std::env::var("EXHAUSTION_OUT").unwrap();
    std::fs::write(format!("{out}.tmp"), format!("{} {} {}", c[0], c[1], c[2])).unwrap();
    std::fs::rename(format!("{out}.tmp"), &out).unwrap();
    // Hold the connections until the parent closes our stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

#[test]
fn twenty_thousand_mostly_idle_connections_with_bounded_memory() {
    raise_nofile();
    let s = Server::start(&["--cores", "2", "--connections-max-per-core", "9000"]);
    let before = rss_kib(s.pid());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("helper-counts");
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "exhaustion_client_helper",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("EXHAUSTION_ADDR", s.addr.to_string())
        .env("EXHAUSTION_COUNT", "10000")
        .env("EXHAUSTION_OUT", &out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (mut conns, mine) = open_and_ask(s.addr, 10_000);
    assert!(
        common::wait_until(Duration::from_secs(120), || out.exists()),
        "the client helper did not finish"
    );
    let v: Vec<usize> = std::fs::read_to_string(&out)
        .unwrap()
        .split(' ')
        .map(|x| x.parse().unwrap())
        .collect();
    let theirs = [v[0], v[1], v[2]];
    let ok = mine[0] + theirs[0];
    let rejected = mine[1] + theirs[1];
    let other = mine[2] + theirs[2];
    assert_eq!(
        ok + rejected + other,
        20_000,
        "the helper reported {theirs:?}"
    );
    // 18,000 fit under the per-core limits; the excess gets a clean 503.
    assert!(
        ok >= 17_000,
        "served {ok}, rejected {rejected}, other {other}"
    );
    assert!(
        rejected >= 1_000,
        "the per-core limit did not reject the excess: {rejected}"
    );
    assert!(other <= 200, "{other} connections got neither 200 nor 503");
    let with_all = rss_kib(s.pid());
    assert!(
        with_all < before + 80 * 1024,
        "RSS grew from {before} KiB to {with_all} KiB with ~18,000 idle connections"
    );
    // Half the clients leave; the server answers new requests again.
    drop(helper.stdin.take());
    let _ = helper.wait();
    conns.truncate(5_000);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.get("/healthz").status, 200);
    drop(conns);
}
