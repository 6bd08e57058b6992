//! One encrypted, authenticated TCP connection to another node.
//!
//! Life of a connection:
//! 1. **Handshake** (`handshake.rs`): clear frames carrying the Noise
//!    handshake, read with [`FramedStream::read_clear_frame`]; it leaves
//!    the stream in sealed mode ([`FramedStream::start_sealed`]) and hands
//!    back the sending half ([`Sealer`]).
//! 2. **Established** ([`run`]): a single task opens sealed frames,
//!    writes the outbox (frames are sealed when queued, by
//!    [`PeerConn::send`], so the outbox holds only ciphertext), and wakes
//!    on new notes. Reading and writing happen in the same poll so two peers
//!    sending each other large batches can never deadlock on full socket
//!    buffers.
//!
//! Any framing, authentication or decoding error drops this connection
//! only (the node and its other peers carry on), with a log line naming the
//! peer; a frame is handed on only once all of it has opened, so nothing of
//! a damaged frame is applied. The dialer reconnects with backoff, and
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

use super::frame::{
    self, Decoded, FrameError, FrameKind, LEGACY_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use super::seal::{self, Opener, SealError, Sealer};
use super::wire::{self, NodeIdentity, SeqRange, WireError};
use super::SocketRegistration;
use crate::store::note::Origin;

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
/// Largest clear frame on the wire (the handshake's).
const CLEAR_FRAME_BYTES_MAX: usize =
    frame::FRAME_HEADER_BYTES + frame::HANDSHAKE_PAYLOAD_BYTES_MAX + frame::FRAME_TRAILER_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("connection closed")]
    Closed,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("sealed stream: {0}; dropped, nothing of that frame applied")]
    Seal(#[from] SealError),
    #[error("handshake: {0}")]
    Noise(#[from] snow::Error),
    #[error(
        "connection closed in the middle of a frame (truncated); nothing of that frame applied"
    )]
    Truncated,
    #[error("{0} runs the old peer protocol version {LEGACY_PROTOCOL_VERSION} (unencrypted peer traffic) and cannot join: upgrade it to this version (protocol {PROTOCOL_VERSION})")]
    LegacyPeer(String),
    #[error("bad message: {0}")]
    Wire(#[from] WireError),
    #[error("unexpected {0:?} frame")]
    Unexpected(FrameKind),
    #[error("refused by peer: {0}")]
    RefusedByPeer(String),
    #[error("authentication failed: the peer's handshake does not open with our cookie (a different cookie?)")]
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

/// A handshake frame, as read in the clear.
pub struct ClearFrame {
    /// `PROTOCOL_VERSION` or `LEGACY_PROTOCOL_VERSION`.
    pub version: u8,
    pub kind: FrameKind,
    pub payload: Vec<u8>,
}

/// A TCP stream with a read buffer: clear frames during the handshake,
/// sealed records after it.
pub struct FramedStream {
    /// The socket's record in shard 0's registry (so the watchdog ends the
    /// connection if the shard fails); released before the stream closes.
    registration: Option<SocketRegistration>,
    pub stream: TcpStream,
    rbuf: Vec<u8>,
    /// `rbuf[rstart..rend]` holds bytes read and not yet taken.
    rstart: usize,
    rend: usize,
    /// Set once the handshake has the keys: from then on every byte read
    /// belongs to a sealed record.
    opener: Option<Opener>,
}

impl FramedStream {
    pub fn new(stream: TcpStream) -> FramedStream {
        let _ = stream.set_nodelay(true);
        FramedStream {
            registration: None,
            stream,
            rbuf: Vec::new(),
            rstart: 0,
            rend: 0,
            opener: None,
        }
    }

    /// Keeps the socket's registration (from `ClusterHost::register_socket`) for
    /// as long as the connection lives.
    pub fn registered(mut self, registration: Option<SocketRegistration>) -> FramedStream {
        self.registration = registration;
        self
    }

    /// From now on, bytes read are sealed records opened by `opener`.
    pub fn start_sealed(&mut self, opener: Opener) {
        self.opener = Some(opener);
    }

    /// Sets the largest sealed frame payload accepted from now on.
    pub fn limit_sealed_payload(&mut self, bytes: usize) {
        if let Some(o) = self.opener.as_mut() {
            o.limit_payload(bytes);
        }
    }

    /// The next complete clear frame already buffered, and its size.
    fn buffered_clear_frame(&self) -> Result<Option<(ClearFrame, usize)>, FrameError> {
        match frame::decode(&self.rbuf[self.rstart..self.rend])? {
            Decoded::Frame {
                version,
                kind,
                payload,
                total_bytes,
            } => Ok(Some((
                ClearFrame {
                    version,
                    kind,
                    payload: payload.to_vec(),
                },
                total_bytes,
            ))),
            Decoded::Incomplete => Ok(None),
        }
    }

    /// The next sealed frame whose records are all buffered, opened.
    fn buffered_sealed_frame(&mut self) -> Result<Option<(FrameKind, Vec<u8>)>, PeerError> {
        let Some(opener) = self.opener.as_mut() else {
            return Err(PeerError::Local(
                "a sealed frame read before the handshake ended".into(),
            ));
        };
        let opened = opener.open(&self.rbuf[self.rstart..self.rend])?;
        self.consume(opened.consumed);
        Ok(opened.frame)
    }

    fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.rend - self.rstart);
        self.rstart += n;
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
            // Give back memory after a large read.
            if self.rbuf.len() > 4 * READ_CHUNK_BYTES {
                self.rbuf = Vec::new();
            }
        }
    }

    /// Reads whatever is available (non-blocking step of a poll).
    fn poll_fill(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<usize, PeerError>> {
        if self.rbuf.len() - self.rend < READ_CHUNK_BYTES / 2 {
            // Room first by moving what is left to the front (bytes are
            // taken in whole records, so this is at most one record).
            if self.rstart > 0 {
                self.rbuf.copy_within(self.rstart..self.rend, 0);
                self.rend -= self.rstart;
                self.rstart = 0;
            }
            // One unit (clear frame or record) plus a read's worth, at most.
            let unit_max = if self.opener.is_some() {
                seal::RECORD_BYTES_MAX
            } else {
                CLEAR_FRAME_BYTES_MAX
            };
            if self.rbuf.len() - self.rend < READ_CHUNK_BYTES / 2 {
                let new_len = (self.rbuf.len() + READ_CHUNK_BYTES).min(unit_max + READ_CHUNK_BYTES);
                self.rbuf.resize(new_len, 0);
            }
        }
        let rend = self.rend;
        if rend == self.rbuf.len() {
            // Cannot happen: whole units are taken before reading more, and
            // the buffer holds one unit plus a read. A read into no room
            // would look like the end of the stream, so say what it is.
            debug_assert!(false, "peer read buffer full");
            return Poll::Ready(Err(PeerError::Local("peer read buffer full".into())));
        }
        match Pin::new(&mut self.stream).poll_read(cx, &mut self.rbuf[rend..]) {
            Poll::Ready(Ok(0)) => {
                let cut =
                    self.rend > self.rstart || self.opener.as_ref().is_some_and(Opener::in_frame);
                Poll::Ready(Err(if cut {
                    PeerError::Truncated
                } else {
                    PeerError::Closed
                }))
            }
            Poll::Ready(Ok(n)) => {
                self.rend += n;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Reads one clear frame (handshake use: nothing else is going on).
    pub async fn read_clear_frame(&mut self) -> Result<ClearFrame, PeerError> {
        loop {
            if let Some((f, n)) = self.buffered_clear_frame()? {
                self.consume(n);
                return Ok(f);
            }
            poll_fn(|cx| self.poll_fill(cx)).await?;
        }
    }

    /// Reads one sealed frame (handshake use: nothing else is going on).
    pub async fn read_sealed_frame(&mut self) -> Result<(FrameKind, Vec<u8>), PeerError> {
        loop {
            if let Some(f) = self.buffered_sealed_frame()? {
                return Ok(f);
            }
            poll_fn(|cx| self.poll_fill(cx)).await?;
        }
    }

    /// Writes a clear frame in `version`'s framing.
    pub async fn write_clear(
        &mut self,
        version: u8,
        kind: FrameKind,
        payload: &[u8],
    ) -> Result<(), PeerError> {
        self.write_all(&frame::encode_versioned(version, kind, payload))
            .await
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), PeerError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }
}

/// Replication and liveness state of one established connection.
pub struct PeerConn {
    pub peer: NodeIdentity,
    /// Node id of the side that dialed (decides which of two duplicate
    /// connections survives).
    pub initiator: u32,
    pub established: Instant,
    /// Seals every frame as it is queued: the outbox order is the nonce order.
    sealer: RefCell<Sealer>,
    /// Sealed frames, in order.
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
    pub fn new(peer: NodeIdentity, initiator: u32, sealer: Sealer) -> Rc<PeerConn> {
        Rc::new(PeerConn {
            peer,
            initiator,
            established: Instant::now(),
            sealer: RefCell::new(sealer),
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

    /// Seals and queues a frame and wakes the connection task.
    pub fn send(&self, kind: FrameKind, payload: &[u8]) {
        if self.closed.get() {
            return;
        }
        let records = payload.len() / seal::RECORD_PLAINTEXT_BYTES_MAX + 1;
        let mut f = Vec::with_capacity(
            seal::SEALED_HEADER_BYTES
                + payload.len()
                + records * (seal::RECORD_LENGTH_BYTES + seal::TAG_BYTES),
        );
        if let Err(e) = self.sealer.borrow_mut().seal(kind, payload, &mut f) {
            tracing::warn!(peer = %self.peer.name, error = %e, "cannot seal a frame; closing the connection");
            self.close();
            return;
        }
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
            let next = match io.buffered_sealed_frame() {
                Ok(f) => f,
                Err(e) => return e,
            };
            let Some((kind, payload)) = next else {
                break;
            };
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
