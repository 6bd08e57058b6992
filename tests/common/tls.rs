//! HTTPS for the tests: a test CA made on the spot with `rcgen`, server
//! certificates it issues (ECDSA P-256 or RSA, any serial, any validity),
//! and a rustls client over a real TCP connection speaking the same raw
//! HTTP/1.1 as the plain [`Client`](super::Client).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned, SupportedProtocolVersion};

use super::{Client, Response, Server};

/// A TLS connection the test client speaks HTTP over.
pub type TlsConn = StreamOwned<ClientConnection, TcpStream>;

/// Names every test certificate is valid for: localhost and the loopback
/// addresses the cluster tests use.
pub fn test_names() -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    names.extend((1..=9).map(|i| format!("127.0.0.{i}")));
    names
}

/// A certificate authority for one test, with its certificate in a file.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub dir: PathBuf,
}

/// What a leaf certificate should look like.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub serial: u64,
    pub rsa: bool,
    /// Days from now its validity ends (negative: already expired).
    pub days_valid: i64,
}

impl Default for Leaf {
    fn default() -> Leaf {
        Leaf {
            serial: 1,
            rsa: false,
            days_valid: 90,
        }
    }
}

/// The files of an issued certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
}

impl TestCa {
    /// A CA whose certificate is written to `dir/ca.pem`.
    pub fn new(dir: &Path) -> TestCa {
        std::fs::create_dir_all(dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "uringnotes test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let issuer = CertifiedIssuer::self_signed(params, key).unwrap();
        std::fs::write(dir.join("ca.pem"), issuer.pem()).unwrap();
        TestCa {
            issuer,
            dir: dir.to_owned(),
        }
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Issues a server certificate and writes `NAME.crt` and `NAME.key`.
    pub fn issue(&self, name: &str, leaf: &Leaf) -> Issued {
        let mut params = CertificateParams::new(test_names()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("uringnotes test {name}"));
        params.serial_number = Some(leaf.serial.into());
        let now = time::OffsetDateTime::now_utc();
        let at = |days: i64| now + time::Duration::days(days);
        params.not_before = at(leaf.days_valid.min(0) - 30);
        params.not_after = at(leaf.days_valid);
        let key = if leaf.rsa {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap()
        } else {
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
        };
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let issued = Issued {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
            der: cert.der().clone(),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }
}

/// The serve flags for `issued`.
pub fn tls_flags(issued: &Issued) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        issued.cert.to_str().unwrap().into(),
        "--tls-key".into(),
        issued.key.to_str().unwrap().into(),
    ]
}

/// A client configuration trusting `ca` only, for the given TLS versions.
pub fn client_config(
    ca: &TestCa,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca_der()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// A client configuration for TLS 1.3 and 1.2, without resumption.
pub fn client(ca: &TestCa) -> Arc<ClientConfig> {
    client_config(ca, rustls::ALL_VERSIONS)
}

/// The same, resuming sessions (rustls's in-memory ticket store).
pub fn resuming_client(ca: &TestCa) -> Arc<ClientConfig> {
    let mut config = ClientConfig::clone(&client(ca));
    config.resumption = rustls::client::Resumption::default();
    Arc::new(config)
}

/// The value of a counter in Prometheus text.
pub fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
}

/// Opens a TLS connection to `addr` (verifying the name `localhost`) and
/// completes the handshake.
pub fn try_connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> std::io::Result<Client<TlsConn>> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::clone(config), name).map_err(std::io::Error::other)?;
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    // The client's last flight (its Finished) goes now, not with the first
    // request: the server's handshake is complete when this returns.
    while stream.conn.wants_write() {
        stream.conn.write_tls(&mut stream.sock)?;
    }
    Ok(Client::over(stream))
}

pub fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> Client<TlsConn> {
    try_connect(addr, config).expect("a TLS connection")
}

/// The serial number (hex, as the server logs it) of the certificate the
/// server presented on this connection.
pub fn peer_serial(c: &Client<TlsConn>) -> String {
    let der = &c.stream.conn.peer_certificates().expect("a certificate")[0];
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial_as_string()
}

impl Server {
    /// One HTTPS request on a fresh connection.
    pub fn https(
        &self,
        config: &Arc<ClientConfig>,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Response {
        let headers: &[(&str, &str)] = if body.is_empty() {
            &[]
        } else {
            &[("Content-Type", "text/plain")]
        };
        connect(self.addr, config).request(method, path, headers, body)
    }
}

/// Reads what the server sends until it closes (or 5 s pass).
pub fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends raw bytes on a plain TCP connection to a TLS port.
pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    s
}
