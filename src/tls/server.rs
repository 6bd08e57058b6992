//! The server's TLS configuration: one for the whole process.
//!
//! Built once at start ([`ServerTls::new`]) and shared: each shard keeps a
//! clone of the `Arc<ServerConfig>` and hands it to every connection it
//! accepts. What the clones share:
//! - the certificate, behind an `ArcSwap` ([`ReloadableCert`]): a full
//!   handshake loads it once (a pointer load and a reference count), and
//!   [`ServerTls::reload`] (SIGHUP) stores a new one. Handshakes that
//!   already loaded the old one finish with it; open connections are not
//!   touched (their keys no longer depend on the certificate);
//! - the session-ticket keys (rustls's ticketer, `Send + Sync`, rotated
//!   every 6 hours), so a ticket issued on one core resumes on any other;
//! - the stateful session cache (for TLS 1.2 clients without tickets), a
//!   small mutex-guarded map used only during handshakes.
//!
//! Protocols: TLS 1.3 and 1.2 with the provider's cipher suites; ALPN
//! `http/1.1` only (a client that offers ALPN without it gets a
//! `no_application_protocol` alert); no client certificates; no early data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::certs::{self, CertError, CertPair};

/// Why the server's TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificate every new handshake uses; swapped whole by a reload.
#[derive(Debug)]
pub struct ReloadableCert {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The process's TLS configuration and the files it came from.
pub struct ServerTls {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    resolver: Arc<ReloadableCert>,
    config: Arc<ServerConfig>,
}

impl ServerTls {
    /// Reads and checks the pair (refusing an expired one) and builds the
    /// configuration. Returns the pair too, for the start-up log.
    pub fn new(cert_path: &Path, key_path: &Path) -> Result<(ServerTls, CertPair), TlsSetupError> {
        let provider = super::provider();
        let pair = certs::read_pair(cert_path, key_path, &provider)?;
        pair.check_validity(certs::now_unix())?;
        let resolver = Arc::new(ReloadableCert {
            current: ArcSwap::new(Arc::clone(&pair.certified)),
        });
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![super::ALPN_HTTP11.to_vec()];
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
        Ok((
            ServerTls {
                cert_path: cert_path.to_owned(),
                key_path: key_path.to_owned(),
                provider,
                resolver,
                config: Arc::new(config),
            },
            pair,
        ))
    }

    /// The configuration new connections are made with.
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// Reads the files again; if they make a good pair, new handshakes use
    /// it from now on. A bad pair (unreadable, mismatched, expired or not
    /// yet valid) changes nothing and says why.
    pub fn reload(&self) -> Result<CertPair, CertError> {
        let pair = certs::read_pair(&self.cert_path, &self.key_path, &self.provider)?;
        pair.check_validity(certs::now_unix())?;
        self.resolver.current.store(Arc::clone(&pair.certified));
        Ok(pair)
    }
}
