//! One server-side TLS connection's record layer, with no I/O of its own:
//! the byte transform between a socket and the HTTP connection loop.
//!
//! - ciphertext in: [`ServerSession::receive`] reads what a source yields
//!   (the shard passes an adapter over its non-blocking socket, so
//!   `WouldBlock` passes through; tests and the fuzz target pass byte
//!   slices) and decrypts it; handshake messages advance the handshake;
//! - plaintext out: [`ServerSession::read_plaintext`];
//! - plaintext responses in, ciphertext out: [`ServerSession::seal`]
//!   appends TLS records to a buffer the caller sends; handshake flights,
//!   session tickets and alerts are taken with
//!   [`ServerSession::take_ciphertext`].
//!
//! Bounds (memory per connection): rustls buffers at most one TLS record
//! being received (16 KiB and a bit; 64 KiB while a handshake message is
//! being joined, the most it accepts), and at most [`SEAL_CHUNK_BYTES`] of
//! plaintext per [`seal`](ServerSession::seal) call, whose records are
//! moved to the caller's buffer at once. Received plaintext is handed out
//! before more ciphertext is read, so it never exceeds one record.
//!
//! Errors: anything the peer sends that is not acceptable TLS (garbage,
//! plaintext HTTP, a bad handshake) is an `InvalidData` error, after which
//! rustls has queued a fatal alert ([`ServerSession::take_ciphertext`]
//! gets it); nothing a peer sends can make this panic (`fuzz/`,
//! `tls_records`).

use std::io::{self, Write as _};
use std::sync::Arc;

use rustls::{HandshakeKind, ProtocolVersion, ServerConfig, ServerConnection};

/// Most plaintext one [`ServerSession::seal`] call encrypts: four full TLS
/// records, so the ciphertext buffer of a connection stays within about
/// 64 KiB however large the response.
pub const SEAL_CHUNK_BYTES: usize = 64 * 1024;

/// What [`ServerSession::read_plaintext`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plain {
    /// This many bytes of plaintext were copied out.
    Data(usize),
    /// None buffered: more ciphertext is needed.
    NeedCiphertext,
    /// The peer ended the connection (close_notify, or the end of the TCP
    /// stream: HTTP/1.1 frames its own messages, so a missing close_notify
    /// is not treated as an attack, as other servers do).
    Closed,
}

/// A server connection's TLS state.
pub struct ServerSession {
    conn: ServerConnection,
}

impl ServerSession {
    pub fn new(config: Arc<ServerConfig>) -> Result<ServerSession, rustls::Error> {
        let mut conn = ServerConnection::new(config)?;
        conn.set_buffer_limit(Some(SEAL_CHUNK_BYTES));
        Ok(ServerSession { conn })
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Full or resumed, once the handshake is done.
    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.conn.handshake_kind()
    }

    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// Reads ciphertext from `source` once and processes it. `Ok(0)`: the
    /// source has ended. `WouldBlock` and other errors of the source pass
    /// through. `InvalidData`: the peer sent something that is not
    /// acceptable TLS; an alert may be waiting in
    /// [`take_ciphertext`](Self::take_ciphertext).
    pub fn receive(&mut self, source: &mut dyn io::Read) -> io::Result<usize> {
        let n = self.conn.read_tls(source)?;
        // Also at the end of the stream: rustls then learns that no more
        // is coming (a handshake cut short is an error).
        self.conn
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(n)
    }

    /// Copies decrypted application data into `buf`.
    pub fn read_plaintext(&mut self, buf: &mut [u8]) -> io::Result<Plain> {
        use io::Read as _;
        if buf.is_empty() {
            return Ok(Plain::Data(0));
        }
        match self.conn.reader().read(buf) {
            Ok(0) => Ok(Plain::Closed),
            Ok(n) => Ok(Plain::Data(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Plain::NeedCiphertext),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Plain::Closed),
            Err(e) => Err(e),
        }
    }

    /// Encrypts up to [`SEAL_CHUNK_BYTES`] of `plaintext` and appends the
    /// records (after anything else pending) to `out`; returns how much of
    /// `plaintext` was taken. Only after the handshake.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
        let chunk = &plaintext[..plaintext.len().min(SEAL_CHUNK_BYTES)];
        let n = self.conn.writer().write(chunk)?;
        self.take_ciphertext(out);
        if n == 0 && !chunk.is_empty() {
            // Closed for writing (close_notify sent) or over the limit
            // with nothing to drain: nothing more will go.
            return Err(io::ErrorKind::WriteZero.into());
        }
        Ok(n)
    }

    /// Whether records (a handshake flight, session tickets, an alert, a
    /// key update) are waiting to be sent.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Appends every pending record to `out`.
    pub fn take_ciphertext(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            // Writing into a Vec cannot fail; 0 means nothing was left.
            match self.conn.write_tls(out) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }

    /// Queues a close_notify alert (sent with the next
    /// [`take_ciphertext`](Self::take_ciphertext)).
    pub fn close_notify(&mut self) {
        self.conn.send_close_notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    fn test_config() -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cert_der = CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap();
        let key_der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        let provider = crate::tls::provider();
        let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert_der.clone()], key_der)
            .unwrap();
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert_der).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// Moves every pending record of the client into the server session.
    fn client_to_server(client: &mut rustls::ClientConnection, server: &mut ServerSession) {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let mut rest = &wire[..];
        while !rest.is_empty() {
            server.receive(&mut rest).unwrap();
        }
    }

    fn server_to_client(server: &mut ServerSession, client: &mut rustls::ClientConnection) {
        let mut wire = Vec::new();
        server.take_ciphertext(&mut wire);
        let mut rest = &wire[..];
        while !rest.is_empty() {
            client.read_tls(&mut rest).unwrap();
            client.process_new_packets().unwrap();
        }
    }

    #[test]
    fn a_request_and_its_response_cross_the_record_layer() {
        let (server_config, client_config) = test_config();
        let mut server = ServerSession::new(server_config).unwrap();
        let mut client =
            rustls::ClientConnection::new(client_config, "localhost".try_into().unwrap()).unwrap();
        while server.is_handshaking() || client.is_handshaking() {
            client_to_server(&mut client, &mut server);
            server_to_client(&mut server, &mut client);
        }
        client
            .writer()
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .unwrap();
        client_to_server(&mut client, &mut server);
        let mut buf = [0u8; 64];
        assert_eq!(
            server.read_plaintext(&mut buf).unwrap(),
            Plain::Data(18),
            "the request, decrypted"
        );
        assert_eq!(&buf[..18], b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(
            server.read_plaintext(&mut buf).unwrap(),
            Plain::NeedCiphertext
        );
        // A response larger than one seal: taken in chunks.
        let response = vec![b'x'; SEAL_CHUNK_BYTES + 1000];
        let mut wire = Vec::new();
        let mut sent = 0;
        while sent < response.len() {
            sent += server.seal(&response[sent..], &mut wire).unwrap();
        }
        assert!(wire.len() > response.len(), "records add framing");
        let mut rest = &wire[..];
        let mut got = Vec::new();
        while !rest.is_empty() {
            client.read_tls(&mut rest).unwrap();
            client.process_new_packets().unwrap();
            let mut chunk = [0u8; 4096];
            loop {
                match io::Read::read(&mut client.reader(), &mut chunk) {
                    Ok(n) if n > 0 => got.extend_from_slice(&chunk[..n]),
                    _ => break,
                }
            }
        }
        assert_eq!(got, response);
        client.send_close_notify();
        client_to_server(&mut client, &mut server);
        assert_eq!(server.read_plaintext(&mut buf).unwrap(), Plain::Closed);
    }

    #[test]
    fn plaintext_http_is_refused_with_an_alert() {
        let (server_config, _) = test_config();
        let mut server = ServerSession::new(server_config).unwrap();
        let mut request = &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..];
        let e = server.receive(&mut request).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let mut alert = Vec::new();
        server.take_ciphertext(&mut alert);
        assert_eq!(alert.first(), Some(&21), "a TLS alert record: {alert:?}");
    }

    #[test]
    fn a_handshake_cut_short_is_an_error_not_a_hang() {
        let (server_config, client_config) = test_config();
        let mut server = ServerSession::new(server_config).unwrap();
        let mut client =
            rustls::ClientConnection::new(client_config, "localhost".try_into().unwrap()).unwrap();
        let mut hello = Vec::new();
        client.write_tls(&mut hello).unwrap();
        let mut half = &hello[..hello.len() / 2];
        server.receive(&mut half).unwrap();
        assert!(server.is_handshaking());
        let mut end: &[u8] = &[];
        assert_eq!(server.receive(&mut end).unwrap_or(0), 0);
        assert!(server.is_handshaking());
    }
}
