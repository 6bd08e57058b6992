//! Helpers for the `uringnotes bench` tests: running the real binary, and
//! small blocking HTTP servers with known behaviour (a fixed delay, a single
//! stall, a fixed error status, silence, hang-ups, garbage) to measure it
//! against. Plain std threads: a thread per connection, no runtime, so what
//! the server does is obvious and its timing is not itself under test.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_uringnotes");

/// Longest a stub connection thread waits for a request before giving up,
/// so no thread outlives a test for long.
const STUB_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What a stub server does with each request.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Answers 200 after sleeping this long.
    Delay(Duration),
    /// Answers 200 at once, except that request number `at_request` (from 1,
    /// counted over all connections) holds every answer of the whole server
    /// for `stall`.
    StallOnce { at_request: u64, stall: Duration },
    /// Answers every request with this status.
    Status(u16),
    /// Reads requests and never answers.
    Silent,
    /// Closes the connection as soon as a request head arrived.
    HangUp,
    /// Answers with bytes that are not HTTP.
    Garbage,
}

/// A running stub server; stops accepting when dropped.
pub struct Stub {
    pub addr: SocketAddr,
    /// Requests received (heads parsed).
    pub requests: Arc<AtomicU64>,
    /// Set once a `StallOnce` server has stalled.
    pub stalled: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Stub {
    pub fn start(behaviour: Behaviour) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind stub");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let stalled = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        // Every answer passes through this lock, so one request holding it
        // stalls the whole server (like a GC pause or a blocked event loop).
        let answer_lock = Arc::new(Mutex::new(()));
        let accept = {
            let (requests, stalled, stop) = (requests.clone(), stalled.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let (requests, stalled, lock) =
                        (requests.clone(), stalled.clone(), answer_lock.clone());
                    std::thread::spawn(move || {
                        serve(conn, behaviour, &requests, &stalled, &lock);
                    });
                }
            })
        };
        Stub {
            addr,
            requests,
            stalled,
            stop,
            accept: Some(accept),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut conn: TcpStream,
    behaviour: Behaviour,
    requests: &AtomicU64,
    stalled: &AtomicBool,
    answer_lock: &Mutex<()>,
) {
    let _ = conn.set_nodelay(true);
    let _ = conn.set_read_timeout(Some(STUB_READ_TIMEOUT));
    // Sleep as exactly as the kernel can: the default 50 µs timer slack
    // would add itself to every delayed answer.
    // SAFETY: prctl on the calling thread with plain integer arguments.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // One whole request (head and Content-Length body) at the front of buf?
        let Some(request_bytes) = whole_request(&buf) else {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        buf.drain(..request_bytes);
        let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
        let answer: &[u8] = match behaviour {
            Behaviour::Delay(d) => {
                std::thread::sleep(d);
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            }
            Behaviour::StallOnce { at_request, stall } => {
                let _held = answer_lock.lock().unwrap_or_else(|e| e.into_inner());
                if n == at_request {
                    stalled.store(true, Ordering::SeqCst);
                    std::thread::sleep(stall);
                }
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            }
            Behaviour::Status(500) => {
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops"
            }
            Behaviour::Status(404) => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            Behaviour::Status(code) => panic!("stub has no canned answer for {code}"),
            Behaviour::Silent => continue,
            Behaviour::HangUp => return,
            Behaviour::Garbage => b"THIS IS NOT HTTP\r\n\r\n",
        };
        if conn.write_all(answer).is_err() {
            return;
        }
    }
}

/// The length of the first whole request in `buf`, if there is one.
fn whole_request(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let body_len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    (buf.len() >= head_end + body_len).then_some(head_end + body_len)
}

/// A finished `uringnotes bench` run.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `uringnotes bench ARGS...` to completion.
pub fn bench(args: &[&str]) -> Run {
    let out: Output = Command::new(BIN)
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run uringnotes bench");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Run {
    /// Panics with the whole output unless the run exited 0.
    pub fn assert_ok(&self) -> &Run {
        assert_eq!(
            self.code,
            Some(0),
            "bench failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Reads a `--json` report.
pub fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("read report");
    serde_json::from_str(&text).expect("report is JSON")
}

/// A field of a report as u64 (panics with the report if absent).
pub fn u(v: &serde_json::Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(|x| x.as_u64())
        .unwrap_or_else(|| panic!("no integer at {pointer} in {v:#}"))
}
