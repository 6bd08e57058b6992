//! One HTTP/1.1 connection: read, parse, dispatch, write, repeat.
//!
//! The loop handles keep-alive and pipelining: every complete request in the
//! read buffer is answered in order, responses accumulate in the write
//! buffer, and the buffer is flushed with one send before the connection
//! waits for more bytes. So a batch of pipelined requests costs one recv and
//! one send.
//!
//! Memory: an idle connection holds no buffer. The read buffer comes from
//! the core's pool when a read succeeds and goes back as soon as a read
//! would block with nothing buffered; the write buffer likewise after each
//! flush. (glommio reads are readiness-based: the buffer is only touched
//! inside `poll_read`, so it need not be held while waiting.)
//!
//! Deadlines are registered in the core's `ConnTable` on each phase change
//! and enforced by the sweeper (see `conn_table.rs`).
//!
//! Fairness: a connection yields its core every `STEPS_PER_YIELD` requests
//! or reads, and after each write batch (`Connection::pace`), however much
//! input is ready; its kernel send buffer is fixed (`send_buffer_bytes`), so
//! a client that never reads blocks the sender after a few responses.
//!
//! A reply that carries an event subscription (`GET /events`) turns the
//! connection into an event stream until it closes (`stream_events`): no
//! more requests are read, and the body is delimited by the close.
//!
//! A panic while serving a request is caught here: it closes this
//! connection only and is logged with the core; the shard keeps serving.
//!
//! The loop is generic over its [`Transport`] (`transport.rs`): plain TCP,
//! or TLS on the public listener when the server has a certificate. An
//! HTTPS connection first completes its handshake ([`serve`]), under its
//! own deadline (`tls_handshake_timeout_ms`) and a cap on the core's
//! handshakes in progress (`tls_handshakes_max_per_core`: beyond it a new
//! connection is closed at once), then runs this same loop over plaintext.
//! Which listener a connection came in on ([`Listener`]) decides what it
//! may ask for (the admin listener's routes) or what it gets (the redirect
//! listener's redirect).
//!
//! Each connection's descriptor is recorded in its shard's socket registry
//! (`incarnation.rs`) for as long as it is open, so that the watchdog can
//! shut it down if the shard's thread gets stuck; it is taken out of the
//! registry before the socket is closed.

use std::cell::Cell;
use std::io;
use std::os::fd::AsRawFd;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use futures_lite::FutureExt as _;
use glommio::net::TcpStream;
use glommio::timer::Timer;

use super::bufpool::BufferPool;
use super::conn_table::{now_ms, Phase};
use super::dispatch;
use super::incarnation::SocketRegistry;
use super::state::{GaugeUnit, Shard};
use super::tasks::panic_message;
use super::transport::{HandshakeError, TlsStream, Transport};
use crate::api::events::{self, After, Subscription};
use crate::api::{self, Audience, Reply, Request, Route};
use crate::http::body::{BodyDecoder, ChunkedDecoder};
use crate::http::request::{self, BodyFraming, HeadLimits, HeadStatus, Method, RequestHead};
use crate::http::response::ResponseMode;
use crate::http::HttpError;
use crate::metrics::CoreMetrics;
use crate::tls::session::ServerSession;

/// Which of its core's listening sockets a connection was accepted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `--listen`: the site, HTTPS when the server has a certificate.
    Public,
    /// `--admin-listen`: the operator endpoints, plain HTTP.
    Admin,
    /// `--redirect-http`: plain HTTP, every request redirected to HTTPS.
    Redirect,
}

/// Sent to a connection that arrives while its core is at the connection limit.
const OVERLOADED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nServer: uringnotes\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 31\r\nRetry-After: 1\r\nConnection: close\r\n\r\n\
too many connections, retry...\n";

/// Answers 503 without reading the request and closes, never blocking:
/// an overloaded core must not spend a task on the excess.
pub fn reject_overloaded(stream: TcpStream) {
    let fd = stream.as_raw_fd();
    // SAFETY: send(2) on a socket we own, from a static buffer.
    unsafe {
        libc::send(
            fd,
            OVERLOADED_RESPONSE.as_ptr().cast(),
            OVERLOADED_RESPONSE.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    drop(stream);
}

/// Sets the connection's kernel send buffer (`send_buffer_bytes`; 0 keeps
/// the kernel's autotuning). Autotuned, a client that pipelines requests and
/// never reads gets up to `tcp_wmem`'s maximum (4 MiB) of responses rendered
/// and queued for it: measured, 1000 such clients held 1.5 GB of kernel
/// memory (the machine's TCP memory pressure threshold) and about a second
/// of CPU. Bounded, each blocks after a few responses until the send
/// timeout cuts it.
fn limit_send_buffer(fd: std::os::fd::RawFd, bytes: usize) {
    if bytes == 0 {
        return;
    }
    let value = bytes.min(libc::c_int::MAX as usize) as libc::c_int;
    // SAFETY: setsockopt(2) on a socket we own, with a c_int option value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Serves one connection accepted on `listener` until it closes.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, listener: Listener) {
    let config = shard.config();
    let tls = match listener {
        Listener::Public => shard.tls_config().map(Arc::clone),
        Listener::Admin | Listener::Redirect => None,
    };
    if tls.is_some() && shard.tls_handshakes.get() >= config.tls_handshakes_max_per_core {
        // Bounded memory under a handshake flood: closed unanswered (a TLS
        // client sees the connection end and may retry).
        shard.metrics().add_tls_handshakes_rejected(1);
        return;
    }
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    limit_send_buffer(fd, config.send_buffer_bytes);
    let slot = if tls.is_some() {
        shard.conns.insert(
            fd,
            Phase::Handshake,
            now_ms() + config.tls_handshake_timeout_ms,
        )
    } else {
        shard
            .conns
            .insert(fd, Phase::Idle, now_ms() + config.idle_timeout_ms)
    };
    shard.sockets().register_connection(slot, fd);
    shard.metrics().connection_opened();
    let guarded = Guarded {
        _registered: Registered {
            sockets: shard.sockets(),
            slot,
            fd,
        },
        stream,
    };
    let outcome = AssertUnwindSafe(async {
        match tls {
            None => Connection::new(&shard, guarded, slot, listener).run().await,
            // Boxed: a TLS session and its handshake are several KiB, and
            // inline they would grow every plain connection's task to the
            // TLS one's size (tests/exhaustion: 6.8 KiB more per idle
            // connection in a debug build).
            Some(config) => Box::pin(serve_tls(&shard, guarded, slot, config)).await,
        }
    })
    .catch_unwind()
    .await;
    // The stream is closed by now (dropped with the connection future), and
    // no other task ran in between, so the sweeper cannot see a stale fd.
    shard.conns.remove(slot);
    shard.metrics().connection_closed();
    if let Err(panic) = outcome {
        tracing::error!(
            core = shard.id(),
            panic = %panic_message(&*panic),
            "request handler panicked; closed that connection only"
        );
    }
}

/// Handshakes, then serves an HTTPS connection.
async fn serve_tls(
    shard: &Shard,
    guarded: Guarded<'_, TcpStream>,
    slot: usize,
    config: Arc<rustls::ServerConfig>,
) {
    let session = match ServerSession::new(config) {
        Ok(session) => session,
        Err(e) => {
            tracing::warn!(core = shard.id(), error = %e, "cannot start a TLS session");
            return;
        }
    };
    let pool = &shard.write_pool;
    let mut guarded = guarded.map(|tcp| TlsStream::new(tcp, session, pool));
    let handshake = {
        let _counted = InProgress::begin(&shard.tls_handshakes);
        guarded.stream.handshake().await
    };
    match handshake {
        Ok(()) => {
            let resumed =
                guarded.stream.session().handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            shard.metrics().tls_handshake_done(resumed);
            shard
                .conns
                .set(slot, Phase::Idle, now_ms() + shard.config().idle_timeout_ms);
            Connection::new(shard, guarded, slot, Listener::Public)
                .run()
                .await;
        }
        Err(e) => {
            shard.metrics().add_tls_handshake_failures(1);
            if tracing::enabled!(tracing::Level::DEBUG) {
                let peer = guarded.stream_peer();
                let timed_out = shard.conns.timed_out(slot);
                match e {
                    HandshakeError::Closed if timed_out => tracing::debug!(
                        core = shard.id(),
                        peer = %peer,
                        "TLS handshake not completed within tls_handshake_timeout_ms; closed"
                    ),
                    e => {
                        tracing::debug!(core = shard.id(), peer = %peer, error = %e, "TLS handshake failed; closed")
                    }
                }
            }
        }
    }
}

/// Counts one in a per-core gauge for as long as it lives (also when a
/// panic unwinds through it).
struct InProgress<'a>(&'a Cell<usize>);

impl<'a> InProgress<'a> {
    fn begin(count: &'a Cell<usize>) -> InProgress<'a> {
        count.set(count.get() + 1);
        InProgress(count)
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// A connection's stream and its registry entry, in the order they must
/// drop: the registry released first, then the descriptor closed.
struct Guarded<'s, T> {
    _registered: Registered<'s>,
    stream: T,
}

impl<'s, T> Guarded<'s, T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Guarded<'s, U> {
        Guarded {
            _registered: self._registered,
            stream: f(self.stream),
        }
    }
}

impl Guarded<'_, TlsStream<'_>> {
    /// The client's address, for a log line.
    fn stream_peer(&self) -> String {
        peer_of(self.stream.fd())
    }
}

/// The peer address of a socket, as text (`?` when unknown).
fn peer_of(fd: std::os::fd::RawFd) -> String {
    // SAFETY: the descriptor stays open for the duration of the call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    socket2::SockRef::from(&fd)
        .peer_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map_or_else(|| "?".to_string(), |a| a.to_string())
}

/// Takes a connection's descriptor out of the shard's socket registry when
/// dropped. It is the first field of [`Connection`] (and of [`Guarded`]), so
/// it is dropped (and the registry released) before the stream closes the
/// descriptor, also when a panic unwinds through the connection.
struct Registered<'s> {
    sockets: &'s SocketRegistry,
    slot: usize,
    fd: std::os::fd::RawFd,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Dropped while a panic unwinds the executor thread: the
            // executor's io_uring may still hold a receive on this socket,
            // which keeps the socket open after its descriptor is closed,
            // so the client would never see the end. End it explicitly.
            // SAFETY: shutdown(2) on our own, still open descriptor.
            unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        }
        self.sockets.release_connection(self.slot, self.fd);
    }
}

/// The read side: a pooled buffer and the unconsumed range in it.
struct ReadBuf {
    buf: Option<Vec<u8>>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    fn data(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b[self.start..self.end],
            None => &[],
        }
    }

    fn consume(&mut self, n: usize) {
        debug_assert!(self.start + n <= self.end);
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
}

struct Connection<'s, T: Transport> {
    /// Must stay declared before `stream` (fields drop in order).
    _registered: Registered<'s>,
    shard: &'s Shard,
    stream: T,
    slot: usize,
    /// The listener it came in on.
    listener: Listener,
    /// What the route table offers it (see `api/routes.rs`, `Audience`).
    audience: Audience,
    /// `Strict-Transport-Security` for its responses (HTTPS only).
    hsts: Option<&'static str>,
    rbuf: ReadBuf,
    /// Pending responses; empty with no capacity while idle.
    wbuf: Vec<u8>,
    limits: HeadLimits,
    /// Closing after an error while the client may still be sending: drain
    /// its bytes briefly after our response, so closing with unread data
    /// does not reset the connection before the client reads the response.
    linger: bool,
    /// Steps since this connection's task last yielded (`pace`).
    steps: u32,
}

/// Pending response bytes above which the connection flushes before
/// answering further pipelined requests (bounds memory per connection).
const WRITE_BUFFER_FLUSH_BYTES: usize = 64 * 1024;

/// Steps (requests answered, reads) a connection takes before its task
/// yields to the other tasks of its core (see `Connection::pace`). A step is a few
/// microseconds to a few tens (a 16 KiB read, a rendered page).
const STEPS_PER_YIELD: u32 = 64;

/// Most bytes drained from a client after an error response.
const LINGER_BYTES_MAX: usize = 1 << 20;
/// Longest time spent draining a client after an error response.
const LINGER_MS: u64 = 2_000;

/// What woke an event stream.
enum Wake {
    News,
    Heartbeat,
    Stop,
}

/// Bytes read at a time (and discarded) from an event-stream client, which
/// has nothing to send: reading only notices when it closes.
const STREAM_DISCARD_BYTES: usize = 512;

/// Resolves when the client closes its side (or the socket fails). Anything
/// it sends meanwhile is discarded.
async fn client_gone<T: Transport>(stream: &mut T) {
    let mut discard = [0u8; STREAM_DISCARD_BYTES];
    loop {
        let n = std::future::poll_fn(|cx| stream.poll_read_plain(cx, &mut discard)).await;
        if !matches!(n, Ok(n) if n > 0) {
            return;
        }
    }
}

/// Why the connection loop stops.
enum Stop {
    /// Closed by the client, an error, a timeout or `Connection: close`.
    Done,
}

impl<'s, T: Transport> Connection<'s, T> {
    fn new(shard: &'s Shard, guarded: Guarded<'s, T>, slot: usize, listener: Listener) -> Self {
        let config = shard.config();
        let audience = match (listener, config.admin_listen.is_some()) {
            (Listener::Admin, _) => Audience::Operator,
            (_, true) => Audience::Public,
            (_, false) => Audience::Everyone,
        };
        let Guarded {
            _registered,
            stream,
        } = guarded;
        Connection {
            _registered,
            shard,
            stream,
            slot,
            listener,
            audience,
            hsts: if T::TLS { shard.hsts() } else { None },
            rbuf: ReadBuf {
                buf: None,
                start: 0,
                end: 0,
            },
            wbuf: Vec::new(),
            limits: HeadLimits {
                header_bytes_max: config.header_bytes_max,
                uri_bytes_max: config.uri_bytes_max,
                body_bytes_max: config.body_bytes_max,
            },
            linger: false,
            steps: 0,
        }
    }

    async fn run(mut self) {
        let _ = self.serve_requests().await;
        if self.flush().await.is_ok() {
            if self.linger {
                self.linger_close().await;
            } else {
                self.stream.close_quietly();
            }
        }
        if let Some(b) = self.rbuf.buf.take() {
            self.shard.read_pool.give(b);
        }
    }

    async fn serve_requests(&mut self) -> Result<(), Stop> {
        loop {
            let head = self.next_head().await?;
            let started = Instant::now();
            self.shard.conns.set(self.slot, Phase::Busy, u64::MAX);
            // Notes acknowledged through other cores, before this request
            // can look for them (they do not wake this core: `inbox.rs`).
            self.shard.index_queued_notes();
            let mode = ResponseMode {
                keep_alive: head.keep_alive && !self.shard.shutting_down(),
                http10: head.version_minor == 0,
                head_only: head.method == Method::Head,
                served_by: self.shard.served_by(),
                hsts: self.hsts,
            };
            // Counted until the reply is recorded, also if the handler
            // panics (the guard's drop ends the count).
            // One request in progress on this core
            // (`uringnotes_requests_inflight`, read by dispatch).
            let inflight = GaugeUnit::begin(
                self.shard,
                CoreMetrics::inflight_add,
                CoreMetrics::inflight_done,
            );
            if self.shard.request_faults_armed() {
                // Where a handler would panic or be slow (`fault.rs`).
                self.shard.apply_request_faults().await;
            }
            if self.wbuf.capacity() == 0 {
                self.wbuf = self.shard.write_pool.take_write();
            }
            let reply = if head.body == BodyFraming::None {
                let raw_head = &self.rbuf.data()[..head.head_bytes];
                let req = Request {
                    head: &head,
                    raw_head,
                    body: &[],
                };
                let reply = answer(
                    self.shard,
                    (self.listener, self.audience),
                    &req,
                    &mut self.wbuf,
                    mode,
                )
                .await;
                self.rbuf.consume(head.head_bytes);
                reply
            } else if let Some(request_bytes) = whole_request_buffered(&head, self.rbuf.data()) {
                // The usual small POST: head and body arrived together, so
                // both are read in place (no copy, no allocation).
                let data = self.rbuf.data();
                let req = Request {
                    head: &head,
                    raw_head: &data[..head.head_bytes],
                    body: &data[head.head_bytes..request_bytes],
                };
                let reply = answer(
                    self.shard,
                    (self.listener, self.audience),
                    &req,
                    &mut self.wbuf,
                    mode,
                )
                .await;
                self.rbuf.consume(request_bytes);
                reply
            } else {
                let raw_head = self.rbuf.data()[..head.head_bytes].to_vec();
                self.rbuf.consume(head.head_bytes);
                match self.read_body(&head).await {
                    Ok(body) => {
                        let req = Request {
                            head: &head,
                            raw_head: &raw_head,
                            body: &body,
                        };
                        answer(
                            self.shard,
                            (self.listener, self.audience),
                            &req,
                            &mut self.wbuf,
                            mode,
                        )
                        .await
                    }
                    Err(Some(e)) => api::error(&mut self.wbuf, mode, Route::Malformed, &e),
                    Err(None) => return Err(Stop::Done),
                }
            };
            drop(inflight);
            let mut reply = reply;
            self.record(&reply, started);
            if let Some(subscription) = reply.stream.take() {
                // Requests pipelined behind the subscription are not
                // answered: the stream owns the connection until it closes.
                self.stream_events(subscription).await;
                return Err(Stop::Done);
            }
            if reply.close {
                self.linger = true;
            }
            if reply.close || !mode.keep_alive {
                return Err(Stop::Done);
            }
            // A client pipelining many requests without reading must not
            // grow our write buffer without bound: send what we have (and
            // wait for the client to take it) before answering more.
            if self.wbuf.len() >= WRITE_BUFFER_FLUSH_BYTES {
                self.flush().await?;
                // A whole batch was sent: the others' turn.
                self.steps = STEPS_PER_YIELD - 1;
            }
            self.pace().await;
        }
    }

    /// Counts one step of work (a request answered, a read); every
    /// `STEPS_PER_YIELD` steps, lets the core's other tasks run.
    ///
    /// Without it one connection could keep its core to itself: reads of
    /// bytes already received and sends into a roomy socket buffer complete
    /// without waiting, so a task answering pipelined requests, reading a
    /// body or draining a client never reaches a real wait while the client
    /// keeps going (measured: 1000 slow readers, each with megabytes of
    /// responses taken by the kernel, and 200 clients streaming oversized
    /// bodies each stalled a core past the watchdog's 1 s stall timeout).
    /// Yielding the task queue (not just the task) also makes the executor
    /// poll for I/O and timers, so other connections, the sweeper and the
    /// heartbeat get their turn between batches.
    async fn pace(&mut self) {
        self.steps += 1;
        if self.steps >= STEPS_PER_YIELD {
            self.steps = 0;
            glommio::executor().yield_task_queue_now().await;
        }
    }

    /// Half-closes and discards what the client still sends, bounded in
    /// bytes and time (the sweeper cuts it at the deadline).
    async fn linger_close(&mut self) {
        self.stream.shutdown_write();
        self.shard
            .conns
            .set(self.slot, Phase::Body, now_ms() + LINGER_MS);
        let mut drained = 0;
        while drained < LINGER_BYTES_MAX {
            self.rbuf.start = 0;
            self.rbuf.end = 0;
            match self.fill().await {
                Ok(n) if n > 0 => drained += n,
                _ => break,
            }
        }
    }

    /// Streams events until the client goes away, falls too far behind,
    /// or the server shuts down. The response head is already in the write
    /// buffer. Waiting costs no buffer: both are taken only to write.
    async fn stream_events(&mut self, mut subscription: Subscription) {
        let shard = self.shard;
        let heartbeat = std::time::Duration::from_millis(events::HEARTBEAT_INTERVAL_MS);
        // Bytes pipelined behind the subscription are never parsed.
        if let Some(b) = self.rbuf.buf.take() {
            shard.read_pool.give(b);
        }
        self.rbuf.start = 0;
        self.rbuf.end = 0;
        loop {
            if self.wbuf.capacity() == 0 {
                self.wbuf = shard.write_pool.take_write();
            }
            let after = subscription.write_ready(&mut self.wbuf);
            if self.flush().await.is_err() || after == After::End {
                return;
            }
            if after == After::More {
                continue;
            }
            shard.conns.set(self.slot, Phase::Stream, u64::MAX);
            let stream = &mut self.stream;
            let news = std::future::poll_fn(|cx| subscription.poll_news(cx).map(|()| Wake::News));
            let timer = async {
                Timer::new(heartbeat).await;
                Wake::Heartbeat
            };
            let gone = async {
                client_gone(stream).await;
                Wake::Stop
            };
            let shutdown = async {
                shard.shutdown_signalled().await;
                Wake::Stop
            };
            match news.or(timer).or(gone).or(shutdown).await {
                Wake::News => {}
                Wake::Heartbeat => {
                    if self.wbuf.capacity() == 0 {
                        self.wbuf = shard.write_pool.take_write();
                    }
                    events::write_heartbeat(&mut self.wbuf);
                }
                Wake::Stop => return,
            }
        }
    }

    fn record(&self, reply: &Reply, started: Instant) {
        let micros = started.elapsed().as_micros() as u64;
        self.shard
            .metrics()
            .record_request(reply.route, reply.status, micros);
    }

    /// Waits for a complete request head, answering and stopping on a
    /// malformed one or a timeout.
    async fn next_head(&mut self) -> Result<RequestHead, Stop> {
        let config = self.shard.config();
        let mut head_started = false;
        loop {
            if !self.rbuf.data().is_empty() {
                match request::parse_head(self.rbuf.data(), &self.limits) {
                    Ok(HeadStatus::Complete(head)) => return Ok(head),
                    Ok(HeadStatus::Partial) => {}
                    Err(e) => {
                        self.refuse(&e);
                        return Err(Stop::Done);
                    }
                }
            }
            // Everything answered so far goes out before we wait.
            self.flush().await?;
            if self.rbuf.data().is_empty() {
                if self.shard.shutting_down() {
                    return Err(Stop::Done);
                }
                self.shard
                    .conns
                    .set(self.slot, Phase::Idle, now_ms() + config.idle_timeout_ms);
            } else if !head_started {
                head_started = true;
                self.shard
                    .conns
                    .set(self.slot, Phase::Head, now_ms() + config.header_timeout_ms);
            }
            match self.fill().await {
                Ok(n) if n > 0 => {
                    if !head_started {
                        head_started = true;
                        self.shard.conns.set(
                            self.slot,
                            Phase::Head,
                            now_ms() + config.header_timeout_ms,
                        );
                    }
                }
                _ => {
                    if self.shard.conns.timed_out(self.slot) && !self.rbuf.data().is_empty() {
                        self.refuse(&HttpError::Timeout);
                    }
                    return Err(Stop::Done);
                }
            }
        }
    }

    /// Writes an error response for a request that could not be framed.
    fn refuse(&mut self, e: &HttpError) {
        if self.wbuf.capacity() == 0 {
            self.wbuf = self.shard.write_pool.take_write();
        }
        let mode = ResponseMode {
            keep_alive: false,
            http10: false,
            head_only: false,
            served_by: self.shard.served_by(),
            hsts: self.hsts,
        };
        let reply = api::error(&mut self.wbuf, mode, Route::Malformed, e);
        self.shard
            .metrics()
            .record_request(reply.route, reply.status, 0);
        self.linger = !matches!(e, HttpError::Timeout);
    }

    /// Reads the body of `head`. `Err(None)` means the client went away or
    /// timed out; `Err(Some(e))` is a framing error to answer.
    async fn read_body(&mut self, head: &RequestHead) -> Result<Vec<u8>, Option<HttpError>> {
        let config = self.shard.config();
        self.shard
            .conns
            .set(self.slot, Phase::Body, now_ms() + config.body_timeout_ms);
        if head.expect_continue && self.rbuf.data().is_empty() {
            self.wbuf
                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            self.flush().await.map_err(|_| None)?;
            self.wbuf = self.shard.write_pool.take_write();
        }
        let mut body = Vec::new();
        let mut decoder = match head.body {
            BodyFraming::None => BodyDecoder::Length { remaining: 0 },
            BodyFraming::Length(n) => {
                body.reserve_exact(n);
                BodyDecoder::Length {
                    remaining: n as u64,
                }
            }
            BodyFraming::Chunked => {
                BodyDecoder::Chunked(ChunkedDecoder::new(config.body_bytes_max))
            }
        };
        loop {
            let consumed = decoder
                .decode(self.rbuf.data(), Some(&mut body))
                .map_err(Some)?;
            self.rbuf.consume(consumed);
            if decoder.is_done() {
                break;
            }
            self.fill_body().await?;
        }
        self.shard.conns.set(self.slot, Phase::Busy, u64::MAX);
        Ok(body)
    }

    async fn fill_body(&mut self) -> Result<(), Option<HttpError>> {
        match self.fill().await {
            Ok(n) if n > 0 => Ok(()),
            _ if self.shard.conns.timed_out(self.slot) => Err(Some(HttpError::Timeout)),
            _ => Err(None),
        }
    }

    /// Reads more bytes into the read buffer. Takes a buffer from the pool
    /// only for the duration of a successful read (see the module doc).
    async fn fill(&mut self) -> io::Result<usize> {
        self.pace().await;
        let pool: &BufferPool = &self.shard.read_pool;
        let rbuf = &mut self.rbuf;
        let stream = &mut self.stream;
        std::future::poll_fn(|cx| {
            let buf = rbuf.buf.get_or_insert_with(|| pool.take_read());
            if rbuf.end == buf.len() {
                // Move the unconsumed bytes to the front to make room.
                buf.copy_within(rbuf.start..rbuf.end, 0);
                rbuf.end -= rbuf.start;
                rbuf.start = 0;
            }
            debug_assert!(rbuf.end < buf.len(), "fill() called with a full buffer");
            match stream.poll_read_plain(cx, &mut buf[rbuf.end..]) {
                Poll::Ready(Ok(n)) => {
                    rbuf.end += n;
                    Poll::Ready(Ok(n))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => {
                    if rbuf.start == rbuf.end {
                        if let Some(b) = rbuf.buf.take() {
                            pool.give(b);
                        }
                        rbuf.start = 0;
                        rbuf.end = 0;
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Sends everything in the write buffer, then returns it to the pool.
    async fn flush(&mut self) -> Result<(), Stop> {
        if self.wbuf.is_empty() {
            if self.wbuf.capacity() != 0 {
                self.shard.write_pool.give(std::mem::take(&mut self.wbuf));
            }
            return Ok(());
        }
        let config = self.shard.config();
        self.shard
            .conns
            .set(self.slot, Phase::Send, now_ms() + config.send_timeout_ms);
        let result = self.stream.write_all_plain(&self.wbuf).await;
        self.shard.conns.set(self.slot, Phase::Busy, u64::MAX);
        let buf = std::mem::take(&mut self.wbuf);
        self.shard.write_pool.give(buf);
        result.map_err(|_| Stop::Done)
    }
}

/// Answers one request with what the listener it came in on offers.
#[inline]
async fn answer(
    shard: &Shard,
    (listener, audience): (Listener, Audience),
    req: &Request<'_>,
    out: &mut Vec<u8>,
    mode: ResponseMode,
) -> Reply {
    if listener == Listener::Redirect {
        return api::redirect::answer(req, out, mode, shard.shared().listen.port());
    }
    dispatch::handle(shard, req, out, mode, audience).await
}

/// With a `Content-Length` body already complete in `buffered` (which starts
/// with the head), the bytes of head and body together.
fn whole_request_buffered(head: &RequestHead, buffered: &[u8]) -> Option<usize> {
    match head.body {
        BodyFraming::Length(n) => {
            let total = head.head_bytes.checked_add(n)?;
            (buffered.len() >= total).then_some(total)
        }
        BodyFraming::None | BodyFraming::Chunked => None,
    }
}
