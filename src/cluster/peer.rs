//! One authenticated TCP connection to another node.
//!
//! Life of a connection:
//! 1. **Handshake** ([`handshake_initiator`] / [`handshake_acceptor`]):
//!    Hello → Challenge → Auth → Welcome, with version negotiation and the
//!    mutual cookie proof of `auth.rs`. Anything unexpected ends it with a
//!    clear log line on the side that saw it (and a `Refuse` frame with the
//!    reason where the protocol allows).
//! 2. **Established** ([`PeerConn::run`]): a single task reads frames,
//!    writes the outbox, and wakes on new notes. Reading and writing happen
//!    in the same poll so two peers sending each other large batches can
//!    never deadlock on full socket buffers.
//!
//! Any framing or decoding error drops this connection only (the node and
//! its other peers carry on); the dialer reconnects with backoff, and
//! anti-entropy on reconnect resends whatever was lost.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use futures_lite::FutureExt as _;
use glommio::net::TcpStream;
use rustc_hash::FxHashMap;

use super::auth::{self, Cookie};
use super::frame::{self, Decoded, FrameError, FrameKind, PROTOCOL_VERSION};
use super::wire::{self, Challenge, Hello, NodeIdentity, SeqRange, WireError};
use super::SocketRegistration;
use crate::store::note::Origin;

/// Time allowed for the whole handshake.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// A connection that has received nothing (not even a heartbeat) for this
/// long is dropped.
pub const PEER_SILENCE_TIMEOUT_MS: u64 = 5_000;
/// Heartbeat (vector) period.
pub const HEARTBEAT_MS: u64 = 500;
/// Stop filling the outbox beyond this many bytes (flow control).
pub const OUTBOX_HIGH_WATER_BYTES: usize = 2 * 1024 * 1024;
/// Most ranges a peer may have asked for (`Holes`) and not yet been
/// answered; more are dropped (the peer asks again on its next connect).
pub const REPAIR_RANGES_QUEUED_MAX: usize = wire::HOLE_RANGES_PER_FRAME_MAX;
/// Read buffer growth step.
const READ_CHUNK_BYTES: usize = 64 * 1024;

const ROLE_ACCEPTOR: &[u8] = b"acceptor";
const ROLE_INITIATOR: &[u8] = b"initiator";

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("connection closed")]
    Closed,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("bad message: {0}")]
    Wire(#[from] WireError),
    #[error("unexpected {0:?} frame")]
    Unexpected(FrameKind),
    #[error("refused by peer: {0}")]
    RefusedByPeer(String),
    #[error("authentication failed: the peer does not know our cookie")]
    PeerFailedAuth,
    #[error(
        "incompatible protocol version: peer speaks {min}..={max}, we speak {PROTOCOL_VERSION}"
    )]
    Version { min: u8, max: u8 },
    #[error("handshake timed out")]
    Timeout,
    #[error("connected to ourselves")]
    SelfConnection,
    #[error("peer {0} is blocked by the partition test hook")]
    Blocked(String),
    #[error("peer silent for {0} ms")]
    Silent(u64),
    #[error("{0}")]
    Local(String),
}

/// A TCP stream with a frame read buffer.
pub struct FramedStream {
    /// The socket's record in shard 0's registry (so the watchdog ends the
    /// connection if the shard fails); released before the stream closes.
    registration: Option<SocketRegistration>,
    pub stream: TcpStream,
    rbuf: Vec<u8>,
    /// Bytes of `rbuf` holding data.
    rlen: usize,
}

impl FramedStream {
    pub fn new(stream: TcpStream) -> FramedStream {
        let _ = stream.set_nodelay(true);
        FramedStream {
            registration: None,
            stream,
            rbuf: Vec::new(),
            rlen: 0,
        }
    }

    /// Keeps the socket's registration (from `ClusterHost::register_socket`) for
    /// as long as the connection lives.
    pub fn registered(mut self, registration: Option<SocketRegistration>) -> FramedStream {
        self.registration = registration;
        self
    }

    /// The next complete frame already buffered, as (kind, payload, size).
    fn buffered_frame(&self) -> Result<Option<(FrameKind, Vec<u8>, usize)>, FrameError> {
        match frame::decode(&self.rbuf[..self.rlen])? {
            Decoded::Frame {
                kind,
                payload,
                total_bytes,
            } => Ok(Some((kind, payload.to_vec(), total_bytes))),
            Decoded::Incomplete => Ok(None),
        }
    }

    fn consume(&mut self, n: usize) {
        self.rbuf.copy_within(n..self.rlen, 0);
        self.rlen -= n;
        // Give back memory after a large frame.
        if self.rlen == 0 && self.rbuf.len() > 4 * READ_CHUNK_BYTES {
            self.rbuf = Vec::new();
        }
    }

    /// Reads whatever is available (non-blocking step of a poll).
    fn poll_fill(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<usize, PeerError>> {
        if self.rbuf.len() - self.rlen < READ_CHUNK_BYTES / 2 {
            let max = frame::FRAME_HEADER_BYTES
                + frame::FRAME_PAYLOAD_BYTES_MAX
                + frame::FRAME_TRAILER_BYTES;
            let new_len = (self.rbuf.len() + READ_CHUNK_BYTES).min(max + READ_CHUNK_BYTES);
            self.rbuf.resize(new_len, 0);
        }
        let rlen = self.rlen;
        match Pin::new(&mut self.stream).poll_read(cx, &mut self.rbuf[rlen..]) {
            Poll::Ready(Ok(0)) => Poll::Ready(Err(PeerError::Closed)),
            Poll::Ready(Ok(n)) => {
                self.rlen += n;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Reads one frame (handshake use: nothing else is going on).
    pub async fn read_frame(&mut self) -> Result<(FrameKind, Vec<u8>), PeerError> {
        loop {
            if let Some((kind, payload, n)) = self.buffered_frame()? {
                self.consume(n);
                return Ok((kind, payload));
            }
            poll_fn(|cx| self.poll_fill(cx)).await?;
        }
    }

    pub async fn write_frame(&mut self, kind: FrameKind, payload: &[u8]) -> Result<(), PeerError> {
        self.stream.write_all(&frame::encode(kind, payload)).await?;
        Ok(())
    }
}

/// What our side of a handshake knows.
pub struct LocalSide<'a> {
    pub me: &'a NodeIdentity,
    pub cookie: &'a Cookie,
    /// Refuses peers blocked by the partition hook (by name).
    pub is_blocked: &'a dyn Fn(&str) -> bool,
}

async fn with_timeout<T>(
    fut: impl std::future::Future<Output = Result<T, PeerError>>,
) -> Result<T, PeerError> {
    fut.or(async {
        glommio::timer::sleep(Duration::from_millis(HANDSHAKE_TIMEOUT_MS)).await;
        Err(PeerError::Timeout)
    })
    .await
}

/// Runs the dialing side of the handshake; returns the peer's identity.
pub async fn handshake_initiator(
    io: &mut FramedStream,
    local: &LocalSide<'_>,
) -> Result<NodeIdentity, PeerError> {
    with_timeout(async {
        let nonce = auth::nonce();
        let hello = Hello {
            version_min: PROTOCOL_VERSION,
            version_max: PROTOCOL_VERSION,
            from: local.me.clone(),
            nonce,
        };
        io.write_frame(FrameKind::Hello, &hello.encode()).await?;
        let (kind, payload) = io.read_frame().await?;
        let challenge = match kind {
            FrameKind::Challenge => Challenge::decode(&payload)?,
            FrameKind::Refuse => {
                return Err(PeerError::RefusedByPeer(
                    String::from_utf8_lossy(&payload).into_owned(),
                ))
            }
            other => return Err(PeerError::Unexpected(other)),
        };
        let peer = challenge.from.clone();
        if peer.node == local.me.node {
            return Err(PeerError::SelfConnection);
        }
        if (local.is_blocked)(&peer.name) {
            return Err(PeerError::Blocked(peer.name));
        }
        let ids = (peer.node, local.me.node);
        if challenge.version != PROTOCOL_VERSION
            || !local.cookie.verify(
                ROLE_ACCEPTOR,
                &challenge.nonce,
                &nonce,
                ids,
                &challenge.proof,
            )
        {
            let _ = io
                .write_frame(
                    FrameKind::Refuse,
                    b"authentication failed: your proof does not match our cookie",
                )
                .await;
            return Err(PeerError::PeerFailedAuth);
        }
        let proof = local.cookie.proof(
            ROLE_INITIATOR,
            &nonce,
            &challenge.nonce,
            (local.me.node, peer.node),
        );
        io.write_frame(FrameKind::Auth, &proof).await?;
        let (kind, payload) = io.read_frame().await?;
        match kind {
            FrameKind::Welcome => Ok(peer),
            FrameKind::Refuse => Err(PeerError::RefusedByPeer(
                String::from_utf8_lossy(&payload).into_owned(),
            )),
            other => Err(PeerError::Unexpected(other)),
        }
    })
    .await
}

/// Runs the accepting side of the handshake; returns the peer's identity.
pub async fn handshake_acceptor(
    io: &mut FramedStream,
    local: &LocalSide<'_>,
) -> Result<NodeIdentity, PeerError> {
    with_timeout(async {
        let (kind, payload) = match io.read_frame().await {
            Ok(f) => f,
            Err(PeerError::Frame(FrameError::BadVersion(v))) => {
                // The Refuse frame's format is frozen across versions, so a
                // newer node can read why it was turned away.
                let reason = format!(
                    "incompatible protocol version: you speak {v}, this node speaks {PROTOCOL_VERSION}"
                );
                let _ = io.write_frame(FrameKind::Refuse, reason.as_bytes()).await;
                return Err(PeerError::Version { min: v, max: v });
            }
            Err(e) => return Err(e),
        };
        if kind != FrameKind::Hello {
            return Err(PeerError::Unexpected(kind));
        }
        let hello = Hello::decode(&payload)?;
        if !(hello.version_min..=hello.version_max).contains(&PROTOCOL_VERSION) {
            let reason = format!(
                "incompatible protocol version: you speak {}..={}, this node speaks {PROTOCOL_VERSION}",
                hello.version_min, hello.version_max
            );
            let _ = io.write_frame(FrameKind::Refuse, reason.as_bytes()).await;
            return Err(PeerError::Version {
                min: hello.version_min,
                max: hello.version_max,
            });
        }
        let peer = hello.from.clone();
        if peer.node == local.me.node {
            return Err(PeerError::SelfConnection);
        }
        if (local.is_blocked)(&peer.name) {
            return Err(PeerError::Blocked(peer.name));
        }
        let nonce = auth::nonce();
        let proof = local.cookie.proof(ROLE_ACCEPTOR, &nonce, &hello.nonce, (local.me.node, peer.node));
        let challenge = Challenge {
            version: PROTOCOL_VERSION,
            from: local.me.clone(),
            nonce,
            proof,
        };
        io.write_frame(FrameKind::Challenge, &challenge.encode()).await?;
        let (kind, payload) = io.read_frame().await?;
        match kind {
            FrameKind::Auth => {}
            FrameKind::Refuse => {
                return Err(PeerError::RefusedByPeer(String::from_utf8_lossy(&payload).into_owned()))
            }
            other => return Err(PeerError::Unexpected(other)),
        }
        if !local.cookie.verify(ROLE_INITIATOR, &hello.nonce, &nonce, (peer.node, local.me.node), &payload) {
            let _ = io
                .write_frame(FrameKind::Refuse, b"authentication failed: wrong cookie")
                .await;
            return Err(PeerError::PeerFailedAuth);
        }
        io.write_frame(FrameKind::Welcome, b"").await?;
        Ok(peer)
    })
    .await
}

/// Replication and liveness state of one established connection.
pub struct PeerConn {
    pub peer: NodeIdentity,
    /// Node id of the side that dialed (decides which of two duplicate
    /// connections survives).
    pub initiator: u32,
    pub established: Instant,
    outbox: RefCell<VecDeque<Vec<u8>>>,
    outbox_bytes: Cell<usize>,
    waker: Cell<Option<Waker>>,
    /// Set by `wake()`: the task has work (e.g. the index grew and the pump
    /// has notes to send) even if no I/O is ready.
    woken: Cell<bool>,
    closed: Cell<bool>,
    /// The peer's latest version vector (what it holds, durably).
    pub vector: RefCell<FxHashMap<Origin, u64>>,
    /// The peer's latest per-core load.
    pub loads: RefCell<Vec<u32>>,
    /// Highest sequence per origin already queued to this peer.
    pub sent: RefCell<FxHashMap<Origin, u64>>,
    /// Whether the peer's first vector has arrived (replication starts then).
    pub synced: Cell<bool>,
    /// Ranges the peer told us it lacks (`Holes`), still to be answered
    /// with the notes we have in them; at most `REPAIR_RANGES_QUEUED_MAX`.
    pub repairs: RefCell<VecDeque<SeqRange>>,
    pub last_heard: Cell<Instant>,
}

impl PeerConn {
    pub fn new(peer: NodeIdentity, initiator: u32) -> Rc<PeerConn> {
        Rc::new(PeerConn {
            peer,
            initiator,
            established: Instant::now(),
            outbox: RefCell::default(),
            outbox_bytes: Cell::new(0),
            waker: Cell::new(None),
            woken: Cell::new(false),
            closed: Cell::new(false),
            vector: RefCell::default(),
            loads: RefCell::default(),
            sent: RefCell::default(),
            synced: Cell::new(false),
            repairs: RefCell::default(),
            last_heard: Cell::new(Instant::now()),
        })
    }

    /// Queues a frame and wakes the connection task.
    pub fn send(&self, kind: FrameKind, payload: &[u8]) {
        if self.closed.get() {
            return;
        }
        let f = frame::encode(kind, payload);
        self.outbox_bytes.set(self.outbox_bytes.get() + f.len());
        self.outbox.borrow_mut().push_back(f);
        self.wake();
    }

    pub fn outbox_bytes(&self) -> usize {
        self.outbox_bytes.get()
    }

    pub fn wake(&self) {
        self.woken.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Asks the connection task to close the connection.
    pub fn close(&self) {
        self.closed.set(true);
        self.wake();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }
}

/// Callbacks from a connection task to its owner (the cluster).
pub trait PeerHandler {
    /// Handles one frame; an error drops the connection.
    fn on_frame(
        self: Rc<Self>,
        conn: &Rc<PeerConn>,
        kind: FrameKind,
        payload: Vec<u8>,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<(), PeerError>> + '_>>;
    /// Fills the outbox (replication pump); called whenever the task runs.
    fn pump(&self, conn: &Rc<PeerConn>);
    /// A heartbeat tick: queue a vector.
    fn heartbeat(&self, conn: &Rc<PeerConn>);
    /// The connection is established and our first vector is queued.
    fn established(&self, conn: &Rc<PeerConn>);
}

/// Runs an established connection until it fails or is closed.
pub async fn run<H: PeerHandler>(
    handler: Rc<H>,
    conn: Rc<PeerConn>,
    mut io: FramedStream,
) -> PeerError {
    let mut heartbeat = glommio::timer::Timer::new(Duration::from_millis(HEARTBEAT_MS));
    handler.heartbeat(&conn);
    handler.established(&conn);
    let mut write_offset = 0usize;
    loop {
        if conn.closed.get() {
            return PeerError::Local("closed locally".into());
        }
        // Frames already received.
        loop {
            let next = match io.buffered_frame() {
                Ok(f) => f,
                Err(e) => return e.into(),
            };
            let Some((kind, payload, n)) = next else {
                break;
            };
            io.consume(n);
            conn.last_heard.set(Instant::now());
            if let Err(e) = Rc::clone(&handler).on_frame(&conn, kind, payload).await {
                return e;
            }
            if conn.closed.get() {
                return PeerError::Local("closed locally".into());
            }
        }
        handler.pump(&conn);
        if conn.last_heard.get().elapsed() > Duration::from_millis(PEER_SILENCE_TIMEOUT_MS) {
            return PeerError::Silent(PEER_SILENCE_TIMEOUT_MS);
        }
        // Wait for input, output room, a wake-up or the heartbeat.
        let step = poll_fn(|cx| {
            // A wake-up is progress: without this, a note indexed here
            // waited for the next heartbeat (up to HEARTBEAT_MS) to be sent.
            let mut progressed = conn.woken.replace(false);
            // Write as much of the outbox as the socket takes now.
            loop {
                let mut outbox = conn.outbox.borrow_mut();
                let Some(front) = outbox.front() else { break };
                match Pin::new(&mut io.stream).poll_write(cx, &front[write_offset..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(PeerError::Closed)),
                    Poll::Ready(Ok(n)) => {
                        write_offset += n;
                        conn.outbox_bytes
                            .set(conn.outbox_bytes.get().saturating_sub(n));
                        if write_offset == front.len() {
                            outbox.pop_front();
                            write_offset = 0;
                            // Room in the outbox: the pump may add more.
                            progressed = true;
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => break,
                }
            }
            match io.poll_fill(cx) {
                Poll::Ready(Ok(_)) => progressed = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
            if Pin::new(&mut heartbeat).poll(cx).is_ready() {
                heartbeat.reset(Duration::from_millis(HEARTBEAT_MS));
                handler.heartbeat(&conn);
                progressed = true;
            }
            if conn.closed.get() {
                progressed = true;
            }
            conn.waker.set(Some(cx.waker().clone()));
            if progressed {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await;
        if let Err(e) = step {
            return e;
        }
    }
}

/// Encodes a `Notes` frame payload from archived payloads.
pub fn notes_payload(payloads: &[&[u8]]) -> Vec<u8> {
    wire::encode_notes(payloads.iter().copied())
}
