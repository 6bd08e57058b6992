//! One benchmark connection's byte stream: a [`Socket`] of the event loop,
//! plain or with TLS (an `https` target).
//!
//! With TLS, a rustls client connection does the record layer in memory:
//! - [`Wire::connect`] opens the TCP connection and completes the
//!   handshake, and says how long it took and whether it was resumed; the
//!   client's last handshake flight (its Finished) waits to go out with the
//!   first request, as browsers send it;
//! - [`Wire::write_all`] seals the requests into records in a buffer the
//!   connection keeps, and sends it with one `send`;
//! - [`Wire::read`] hands out decrypted bytes, reading and decrypting more
//!   ciphertext only when none are left.
//!
//! Bounds: ciphertext is read [`CIPHERTEXT_READ_BYTES`] at a time, less than
//! what rustls buffers as received plaintext (16 KiB), so a read never
//! overflows it (plaintext is handed out before the next read).

use std::io::{self, Read as _, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, HandshakeKind};

use super::reactor::{Reactor, Socket};

/// Ciphertext read from the socket at a time.
pub const CIPHERTEXT_READ_BYTES: usize = 8 * 1024;

/// A connection's byte stream.
pub struct Wire {
    socket: Socket,
    tls: Option<Box<TlsState>>,
}

/// The TLS side of a connection.
struct TlsState {
    conn: ClientConnection,
    /// Ciphertext read from the socket (reused).
    cipher_in: Vec<u8>,
    /// Records to send (reused).
    cipher_out: Vec<u8>,
}

/// How a TLS handshake went.
#[derive(Debug, Clone, Copy)]
pub struct Handshake {
    /// From the start of the TCP connect to a usable connection.
    pub took: Duration,
    pub resumed: bool,
}

/// Why a connection could not be made.
#[derive(Debug)]
pub enum ConnectError {
    /// The TCP connection failed.
    Tcp(io::Error),
    /// TCP worked; the TLS handshake did not.
    Handshake(io::Error),
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Wire {
    /// Connects to `addr`, with TLS when `tls` is given; everything by
    /// `deadline`. Returns the handshake's timing for TLS.
    pub async fn connect(
        reactor: &std::rc::Rc<Reactor>,
        addr: std::net::SocketAddr,
        tls: Option<(&Arc<ClientConfig>, &ServerName<'static>)>,
        deadline: Instant,
    ) -> Result<(Wire, Option<Handshake>), ConnectError> {
        let started = Instant::now();
        let socket = Socket::connect(reactor, addr, deadline)
            .await
            .map_err(ConnectError::Tcp)?;
        let Some((config, name)) = tls else {
            return Ok((Wire { socket, tls: None }, None));
        };
        let conn = ClientConnection::new(Arc::clone(config), name.clone())
            .map_err(|e| ConnectError::Handshake(invalid(e)))?;
        let mut wire = Wire {
            socket,
            tls: Some(Box::new(TlsState {
                conn,
                cipher_in: vec![0; CIPHERTEXT_READ_BYTES],
                cipher_out: Vec::new(),
            })),
        };
        wire.handshake(deadline)
            .await
            .map_err(ConnectError::Handshake)?;
        let resumed = wire
            .tls
            .as_ref()
            .is_some_and(|t| t.conn.handshake_kind() == Some(HandshakeKind::Resumed));
        Ok((
            wire,
            Some(Handshake {
                took: started.elapsed(),
                resumed,
            }),
        ))
    }

    async fn handshake(&mut self, deadline: Instant) -> io::Result<()> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return Ok(());
        };
        while tls.conn.is_handshaking() {
            if tls.conn.wants_write() {
                tls.cipher_out.clear();
                while tls.conn.wants_write() {
                    tls.conn.write_tls(&mut tls.cipher_out)?;
                }
                self.socket.write_all(&tls.cipher_out, deadline).await?;
            }
            if !tls.conn.is_handshaking() {
                break;
            }
            let n = self.socket.read(&mut tls.cipher_in, deadline).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            feed(&mut tls.conn, &tls.cipher_in[..n])?;
        }
        Ok(())
    }

    /// Sends all of `plain`, encrypted for TLS.
    pub async fn write_all(&mut self, plain: &[u8], deadline: Instant) -> io::Result<()> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return self.socket.write_all(plain, deadline).await;
        };
        tls.conn.writer().write_all(plain)?;
        tls.cipher_out.clear();
        while tls.conn.wants_write() {
            tls.conn.write_tls(&mut tls.cipher_out)?;
        }
        self.socket.write_all(&tls.cipher_out, deadline).await
    }

    /// Reads what is there (at least one byte; 0 at the end of the stream),
    /// waiting if nothing is; `TimedOut` if nothing came by `deadline`.
    pub async fn read(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return self.socket.read(buf, deadline).await;
        };
        loop {
            match tls.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            let n = self.socket.read(&mut tls.cipher_in, deadline).await?;
            if n == 0 {
                return Ok(0);
            }
            feed(&mut tls.conn, &tls.cipher_in[..n])?;
            if tls.conn.wants_write() {
                // A key update to answer: rare, and sent at once.
                tls.cipher_out.clear();
                while tls.conn.wants_write() {
                    tls.conn.write_tls(&mut tls.cipher_out)?;
                }
                self.socket.write_all(&tls.cipher_out, deadline).await?;
            }
        }
    }

    /// Closes both directions (the descriptor is closed on drop).
    pub fn shutdown(&self) {
        self.socket.shutdown();
    }
}

/// Processes ciphertext `bytes` into the connection.
fn feed(conn: &mut ClientConnection, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        conn.read_tls(&mut bytes)?;
        conn.process_new_packets().map_err(invalid)?;
    }
    Ok(())
}
