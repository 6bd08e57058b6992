//! What a connection speaks HTTP over: a plain TCP stream, or TLS over one.
//!
//! The HTTP connection loop (`conn.rs`) is generic over [`Transport`]: it
//! reads plaintext requests and writes plaintext responses, and the same
//! parser, limits, deadlines and fairness apply either way. The loop is
//! compiled once per transport, so the plain-HTTP path calls glommio's
//! `TcpStream` exactly as before (no branch, no indirection).
//!
//! [`TlsStream`] is the byte transform of the HTTPS path, driving the
//! sans-I/O record layer (`tls/session.rs`) from the socket:
//! - reading: decrypted plaintext buffered in the session is handed out
//!   first; only when there is none is the socket read, through an adapter
//!   that turns glommio's `Pending` into `WouldBlock` (glommio has then
//!   registered the task's waker, so returning `Pending` is sound);
//! - writing: the plaintext is sealed into records in a ciphertext buffer
//!   taken from the core's write pool (at most `SEAL_CHUNK_BYTES` of
//!   plaintext at a time) and sent; the buffer goes back to the pool after
//!   each write, so an idle TLS connection holds no buffer of ours;
//! - the handshake ([`TlsStream::handshake`]) runs before the HTTP loop, on
//!   this core, under the connection's handshake deadline (the sweeper
//!   shuts the socket down when it passes, and the handshake's read ends).
//!
//! Records the session queues without a response to carry them (TLS 1.3
//! session tickets after the handshake, a key update) go out with the next
//! response: no extra send per connection. A TLS 1.2 handshake is the
//! exception: its client waits for the server's Finished, so that flight is
//! sent at once.

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWriteExt};
use glommio::net::TcpStream;

use super::bufpool::BufferPool;
use crate::tls::session::{Plain, ServerSession};

/// A byte stream the HTTP loop reads requests from and writes responses to.
pub trait Transport {
    /// Responses travel encrypted (the HSTS header applies).
    const TLS: bool;

    fn fd(&self) -> RawFd;

    /// Reads plaintext into `buf`; `Ok(0)` at the end of the stream.
    fn poll_read_plain(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;

    /// Writes all of `buf` (plaintext).
    fn write_all_plain<'a>(
        &'a mut self,
        buf: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + 'a;

    /// Ends our sending direction (TLS: a close_notify first) without
    /// waiting, before the connection drains what the client still sends.
    fn shutdown_write(&mut self);

    /// About to be closed after a normal end: TLS sends a close_notify if
    /// the socket takes it at once; plain TCP has nothing to say.
    fn close_quietly(&mut self);
}

impl Transport for TcpStream {
    const TLS: bool = false;

    #[inline]
    fn fd(&self) -> RawFd {
        self.as_raw_fd()
    }

    #[inline]
    fn poll_read_plain(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(self).poll_read(cx, buf)
    }

    #[inline]
    fn write_all_plain<'a>(
        &'a mut self,
        buf: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + 'a {
        AsyncWriteExt::write_all(self, buf)
    }

    fn shutdown_write(&mut self) {
        // SAFETY: shutdown(2) on our own socket.
        unsafe { libc::shutdown(self.as_raw_fd(), libc::SHUT_WR) };
    }

    fn close_quietly(&mut self) {}
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client went away, or the handshake deadline passed (the sweeper
    /// shut the socket down).
    #[error("the connection ended during the handshake")]
    Closed,
    /// The client sent something that is not acceptable TLS (plaintext
    /// HTTP, garbage, an unsupported or malformed hello); an alert was sent.
    #[error("{0}")]
    Refused(io::Error),
    #[error("socket error: {0}")]
    Io(io::Error),
}

/// TLS over a TCP connection, on the core that accepted it.
pub struct TlsStream<'s> {
    tcp: TcpStream,
    session: ServerSession,
    /// Ciphertext being sent; taken from `pool` for each write and given
    /// back after it (empty, no capacity, between writes).
    out: Vec<u8>,
    pool: &'s BufferPool,
}

/// glommio's readiness-based read as a blocking-style `io::Read` for
/// rustls: `Pending` becomes `WouldBlock` (the waker is registered).
struct PollRead<'a, 'b> {
    tcp: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl io::Read for PollRead<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.tcp).poll_read(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<'s> TlsStream<'s> {
    pub fn new(tcp: TcpStream, session: ServerSession, pool: &'s BufferPool) -> TlsStream<'s> {
        TlsStream {
            tcp,
            session,
            out: Vec::new(),
            pool,
        }
    }

    /// The completed handshake's kind and version, for metrics and logs.
    pub fn session(&self) -> &ServerSession {
        &self.session
    }

    /// Runs the handshake to its end (see the module doc for when its last
    /// flight is sent).
    pub async fn handshake(&mut self) -> Result<(), HandshakeError> {
        while self.session.is_handshaking() {
            if self.session.wants_write() {
                self.send_pending().await.map_err(HandshakeError::Io)?;
            }
            let session = &mut self.session;
            let tcp = &mut self.tcp;
            let read = poll_fn(|cx| {
                let mut source = PollRead { tcp: &mut *tcp, cx };
                match session.receive(&mut source) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
                    other => Poll::Ready(other),
                }
            })
            .await;
            match read {
                Ok(0) => return Err(HandshakeError::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    self.send_now();
                    return Err(HandshakeError::Refused(e));
                }
                Err(e) => return Err(HandshakeError::Io(e)),
            }
        }
        if self.session.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3)
            && self.session.wants_write()
        {
            self.send_pending().await.map_err(HandshakeError::Io)?;
        }
        Ok(())
    }

    /// Sends every record the session has queued.
    async fn send_pending(&mut self) -> io::Result<()> {
        if self.out.capacity() == 0 {
            self.out = self.pool.take_write();
        }
        self.session.take_ciphertext(&mut self.out);
        let result = self.tcp.write_all(&self.out).await;
        self.pool.give(std::mem::take(&mut self.out));
        result
    }

    /// Sends what the session has queued if the socket takes it now (an
    /// alert before closing); never waits.
    fn send_now(&mut self) {
        let mut records = Vec::new();
        self.session.take_ciphertext(&mut records);
        if records.is_empty() {
            return;
        }
        // SAFETY: send(2) on our own socket from a live buffer.
        unsafe {
            libc::send(
                self.tcp.as_raw_fd(),
                records.as_ptr().cast(),
                records.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
    }

    async fn write_all_sealed(&mut self, plaintext: &[u8]) -> io::Result<()> {
        let mut taken = 0;
        loop {
            if self.out.capacity() == 0 {
                self.out = self.pool.take_write();
            }
            if taken < plaintext.len() {
                taken += self.session.seal(&plaintext[taken..], &mut self.out)?;
            } else {
                self.session.take_ciphertext(&mut self.out);
            }
            if !self.out.is_empty() {
                self.tcp.write_all(&self.out).await?;
                self.out.clear();
            }
            if taken == plaintext.len() && !self.session.wants_write() {
                return Ok(());
            }
        }
    }
}

impl Transport for TlsStream<'_> {
    const TLS: bool = true;

    fn fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }

    fn poll_read_plain(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.session.read_plaintext(buf) {
                Ok(Plain::Data(n)) => return Poll::Ready(Ok(n)),
                Ok(Plain::Closed) => return Poll::Ready(Ok(0)),
                Ok(Plain::NeedCiphertext) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            let mut source = PollRead {
                tcp: &mut self.tcp,
                cx: &mut *cx,
            };
            match self.session.receive(&mut source) {
                // The end of the stream, and nothing was left to hand out.
                Ok(0) => return Poll::Ready(Ok(0)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => {
                    // Not TLS any more (or a fatal alert from the peer): say
                    // why if we can, and end.
                    self.send_now();
                    return Poll::Ready(Err(e));
                }
            }
        }
    }

    async fn write_all_plain(&mut self, buf: &[u8]) -> io::Result<()> {
        let result = self.write_all_sealed(buf).await;
        if self.out.capacity() != 0 {
            self.pool.give(std::mem::take(&mut self.out));
        }
        result
    }

    fn shutdown_write(&mut self) {
        self.close_quietly();
        // SAFETY: shutdown(2) on our own socket.
        unsafe { libc::shutdown(self.tcp.as_raw_fd(), libc::SHUT_WR) };
    }

    fn close_quietly(&mut self) {
        self.session.close_notify();
        self.send_now();
    }
}
