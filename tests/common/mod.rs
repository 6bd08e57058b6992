//! Test harness: start the real `uringnotes` binary on an ephemeral port and
//! talk raw HTTP/1.1 to it over real sockets (or HTTPS: `tls.rs`).
#![allow(dead_code)]

pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_uringnotes");

/// A running server process; killed (SIGKILL) on drop unless stopped.
pub struct Server {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub stderr_log: PathBuf,
    /// The peer protocol address, for cluster nodes.
    pub peer_addr: Option<SocketAddr>,
    /// `https` when the server has a certificate, else `http`.
    pub scheme: &'static str,
    /// The admin and redirect listeners, when started with them.
    pub admin_addr: Option<SocketAddr>,
    pub redirect_addr: Option<SocketAddr>,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server with a fresh data dir and extra flags.
    pub fn start(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let mut s = Server::start_in(&data_dir, extra);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on an existing data dir (for restarts).
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Server {
        Self::try_start_in(data_dir, extra).expect("server failed to start")
    }

    pub fn try_start_in(data_dir: &Path, extra: &[&str]) -> Result<Server, String> {
        Self::try_start_in_env(data_dir, extra, &[])
    }

    /// Starts a server with a fresh data dir, extra flags and environment
    /// changes (`None` removes a variable; `RUST_LOG` defaults to `info`).
    pub fn start_env(extra: &[&str], env: &[(&str, Option<&str>)]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let mut s =
            Server::try_start_in_env(&data_dir, extra, env).expect("server failed to start");
        s._tmp = Some(tmp);
        s
    }

    pub fn try_start_in_env(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, Option<&str>)],
    ) -> Result<Server, String> {
        let stderr_log = data_dir.with_extension(format!("stderr.{}.log", std::process::id()));
        std::fs::create_dir_all(data_dir.parent().unwrap()).unwrap();
        let stderr_file = std::fs::File::create(&stderr_log).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("serve");
        if !extra.contains(&"--listen") {
            cmd.arg("--listen").arg("127.0.0.1:0");
        }
        // Tests run many debug-build servers at once on two CPUs; under that
        // oversubscription a healthy shard can miss the production 1 s
        // heartbeat deadline and be restarted, which drops its connections.
        // Tests that exercise the watchdog set their own stall timeout.
        if !extra.contains(&"--stall-timeout") {
            cmd.arg("--stall-timeout").arg("10s");
        }
        cmd.arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr_file));
        for (name, value) in env {
            match value {
                Some(v) => cmd.env(name, v),
                None => cmd.env_remove(name),
            };
        }
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<(&'static str, String)>();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                for (kind, prefix) in [
                    ("http", "uringnotes listening on http://"),
                    ("https", "uringnotes listening on https://"),
                    ("peer", "uringnotes peer protocol on "),
                    ("admin", "uringnotes admin on http://"),
                    ("redirect", "uringnotes redirect on http://"),
                ] {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        let _ = tx.send((kind, rest.trim().to_string()));
                    }
                }
            }
        });
        let wants = |flag: &str| extra.contains(&flag);
        let mut found: Vec<(&'static str, String)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        // The listening line comes last but for the peer, admin and
        // redirect lines printed right after it.
        let complete = |found: &[(&str, String)]| {
            let has = |k: &str| found.iter().any(|(kind, _)| *kind == k);
            (has("http") || has("https"))
                && (!wants("--peer-listen") || has("peer"))
                && (!wants("--admin-listen") || has("admin"))
                && (!wants("--redirect-http") || has("redirect"))
        };
        while !complete(&found) {
            let left = deadline.saturating_duration_since(Instant::now());
            let listening = found.iter().any(|(k, _)| *k == "http" || *k == "https");
            // Once listening, the other lines follow at once.
            let wait = if listening {
                left.min(Duration::from_secs(5))
            } else {
                left
            };
            match rx.recv_timeout(wait) {
                Ok(line) => found.push(line),
                Err(_) => break,
            }
        }
        let get = |kind: &str| {
            found
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, a)| a.parse::<SocketAddr>().unwrap())
        };
        let (scheme, addr) = match (get("http"), get("https")) {
            (Some(a), _) => ("http", a),
            (None, Some(a)) => ("https", a),
            (None, None) => {
                let _ = child.kill();
                let status = child.wait().ok();
                return Err(format!(
                    "server did not start (exit {status:?}); stderr:\n{}",
                    std::fs::read_to_string(&stderr_log).unwrap_or_default()
                ));
            }
        };
        Ok(Server {
            child: Some(child),
            addr,
            data_dir: data_dir.to_owned(),
            stderr_log,
            peer_addr: get("peer"),
            scheme,
            admin_addr: get("admin"),
            redirect_addr: get("redirect"),
            _tmp: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// kill -9, and wait for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("server did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// One request on a fresh connection.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.connect().request(method, path, headers, body)
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    pub fn post_note(&self, text: &str) -> Response {
        let body = serde_json::json!({ "text": text }).to_string();
        self.request(
            "POST",
            "/notes",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    }

    /// All notes via the JSON API, following cursors.
    pub fn all_notes(&self) -> Vec<serde_json::Value> {
        self.connect().all_notes()
    }

    /// The exit status, waiting up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let c = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl<S: Read + Write> Client<S> {
    /// All notes as this connection's core sees them, following cursors.
    pub fn all_notes(&mut self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut before: Option<String> = None;
        let client = self;
        loop {
            let path = match &before {
                Some(b) => format!("/notes?limit=1000&before={b}"),
                None => "/notes?limit=1000".to_string(),
            };
            let r = client.request("GET", &path, &[], b"");
            assert_eq!(r.status, 200, "GET {path}: {}", r.text());
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            out.extend(v["notes"].as_array().unwrap().iter().cloned());
            match v["next_before"].as_str() {
                Some(b) => before = Some(b.to_string()),
                None => return out,
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            // The server's side of a failed test.
            let stderr = self.stderr();
            let lines: Vec<&str> = stderr.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "--- server stderr (last {} lines) ---\n{}",
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A raw HTTP/1.1 client over one connection: TCP, or TLS over TCP
/// (`tls::connect`).
pub struct Client<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
}

impl<S> Client<S> {
    /// A client speaking over an established stream.
    pub fn over(stream: S) -> Client<S> {
        Client {
            stream,
            buf: Vec::new(),
        }
    }
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr, Duration::from_secs(20)).expect("connect")
    }

    /// Connects with a read timeout; an error instead of a panic.
    pub fn try_connect(addr: SocketAddr, read_timeout: Duration) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(read_timeout))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }
}

impl<S: Read + Write> Client<S> {
    /// One request; `None` if the connection failed or closed before a
    /// whole response arrived.
    pub fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Option<Response> {
        self.stream
            .write_all(&build_request(method, path, headers, body))
            .ok()?;
        self.read_response_for(method == "HEAD")
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.send(&build_request(method, path, headers, body));
        self.read_response_for(method == "HEAD").expect("response")
    }

    pub fn read_response(&mut self) -> Option<Response> {
        self.read_response_for(false)
    }

    /// Reads one response (the body by Content-Length; none for HEAD/1xx/204/304).
    pub fn read_response_for(&mut self, head_request: bool) -> Option<Response> {
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            if !self.fill() {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.trim().to_string(), v.trim().to_string())
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let body_len = if head_request || status == 204 || status == 304 || status < 200 {
            0
        } else {
            len
        };
        while self.buf.len() < head_end + body_len {
            if !self.fill() {
                return None;
            }
        }
        let body = self.buf[head_end..head_end + body_len].to_vec();
        self.buf.drain(..head_end + body_len);
        Some(Response {
            status,
            headers,
            body,
        })
    }

    /// Reads until EOF; true if the server closed the connection.
    pub fn closed_by_server(&mut self) -> bool {
        let mut b = [0u8; 1024];
        loop {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    fn fill(&mut self) -> bool {
        let mut b = [0u8; 16 * 1024];
        match self.stream.read(&mut b) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&b[..n]);
                true
            }
        }
    }
}

pub fn build_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends raw bytes on a new connection and returns the first response.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Response> {
    let mut c = Client::connect(addr);
    c.send(bytes);
    c.read_response()
}

/// What one request of [`ask_in_background`] got: how long it took, and
/// its status and body (None: no answer, the connection ended or timed out).
pub type Outcome = (Duration, Option<(u16, String)>);

/// Sends `GET path` on `client` again and again, in a thread, for `run`
/// or until a request gets no answer; joins to every request's outcome.
pub fn ask_in_background(
    mut client: Client,
    path: &'static str,
    run: Duration,
) -> std::thread::JoinHandle<Vec<Outcome>> {
    std::thread::spawn(move || {
        let mut outcomes = Vec::new();
        let end = Instant::now() + run;
        while Instant::now() < end {
            let asked = Instant::now();
            let r = client.try_request("GET", path, &[], b"");
            let answered = r.is_some();
            outcomes.push((asked.elapsed(), r.map(|r| (r.status, r.text()))));
            if !answered {
                break;
            }
        }
        outcomes
    })
}

/// The core serving this connection (from `/_status`).
pub fn core_of(c: &mut Client) -> Option<usize> {
    let r = c.try_request("GET", "/_status", &[], b"")?;
    (r.status == 200).then(|| r.json()["served_by_core"].as_u64().unwrap() as usize)
}

/// A connection to `core` (new connections land on a core by hash), with
/// a 5 s read timeout.
pub fn connect_to(addr: SocketAddr, core: usize) -> Client {
    for _ in 0..500 {
        if let Ok(mut c) = Client::try_connect(addr, Duration::from_secs(5)) {
            if core_of(&mut c) == Some(core) {
                return c;
            }
        }
    }
    panic!("no connection landed on core {core} in 500 attempts");
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A cluster's scratch space: a temporary directory holding each node's
/// data directory and the shared cookie file. Each cluster test file adds
/// its own `start` (how it runs a node) in an `impl Net` block.
pub struct Net {
    pub dir: tempfile::TempDir,
    pub cookie: PathBuf,
}

impl Net {
    pub fn new() -> Net {
        let dir = tempfile::tempdir().expect("tempdir");
        let cookie = dir.path().join("cookie");
        std::fs::write(&cookie, "test-cluster-cookie-0123456789abcdef\n").expect("cookie file");
        Net { dir, cookie }
    }

    pub fn data(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Byte ranges (offset, length) of each record in a log segment, after its
/// 16-byte header: what a test needs to damage one record on purpose.
pub fn record_offsets(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 16;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        out.push((pos, 8 + len));
        pos += 8 + len;
    }
    out
}
