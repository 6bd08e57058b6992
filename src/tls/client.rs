//! The client side, for `uringnotes bench` against an `https://` target.
//!
//! Trust is either a CA file (`--cacert`: PEM, one or more certificates)
//! or nothing (`--insecure`: any certificate is accepted, but the server's
//! handshake signature is still verified, so a benchmark does the same
//! cryptographic work as a verifying client).
//!
//! Key exchange: X25519, then P-256, and nothing post-quantum, as an
//! OpenSSL 3.0 client offers: a benchmark compares servers under the same
//! client, and a hybrid group would make each handshake cost more on a
//! server that supports it than on one that does not.
//!
//! Resumption: a benchmark that reconnects per request opens many
//! connections at once; rustls's default store keeps 8 TLS 1.3 tickets per
//! server, so most of them would make full handshakes. [`TicketStore`]
//! keeps up to [`TICKETS_KEPT_MAX`] (each is used once, as TLS 1.3 asks).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientSessionStore, Resumption, Tls12ClientSessionValue};
use rustls::client::{Tls13ClientSessionValue, WebPkiServerVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, NamedGroup, RootCertStore, SignatureScheme};

use super::certs::{self, CertError};

/// Session tickets kept for resumption (a few per connection of a run).
pub const TICKETS_KEPT_MAX: usize = 65_536;

/// Whom the client trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Certificates issued by the CAs in this PEM file.
    CaFile(PathBuf),
    /// Anything (`--insecure`).
    Anyone,
}

/// Why a client configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("{path}: not a usable CA certificate: {why}")]
    BadCa { path: PathBuf, why: String },
    #[error("TLS client configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The client's crypto provider: the server's, with X25519 and P-256 only.
pub fn client_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::kx_group;
    let mut provider = Arc::unwrap_or_clone(super::provider());
    provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1];
    Arc::new(provider)
}

/// A client configuration: `trust`, ALPN `http/1.1`, TLS 1.3 and 1.2, and
/// session resumption when `resume` (else every handshake is a full one).
pub fn config(trust: &Trust, resume: bool) -> Result<Arc<ClientConfig>, ClientTlsError> {
    config_for(trust, resume, rustls::ALL_VERSIONS)
}

/// The same, offering only `versions`.
pub fn config_for(
    trust: &Trust,
    resume: bool,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<Arc<ClientConfig>, ClientTlsError> {
    let provider = client_provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)?;
    let mut config = match trust {
        Trust::CaFile(path) => {
            let roots = load_roots(path)?;
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| ClientTlsError::BadCa {
                        path: path.clone(),
                        why: e.to_string(),
                    })?;
            builder.with_webpki_verifier(verifier).with_no_client_auth()
        }
        Trust::Anyone => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![super::ALPN_HTTP11.to_vec()];
    config.resumption = if resume {
        Resumption::store(Arc::new(TicketStore::default()))
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

fn load_roots(path: &Path) -> Result<RootCertStore, ClientTlsError> {
    let mut roots = RootCertStore::empty();
    for der in certs::read_certificates(path, None)? {
        roots.add(der).map_err(|e| ClientTlsError::BadCa {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// `--insecure`: accepts any certificate, verifies handshake signatures.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Resumption state of a benchmark, which talks to one server: many
/// single-use TLS 1.3 tickets, the last TLS 1.2 session, the key-exchange
/// group the server chose.
#[derive(Debug, Default)]
pub struct TicketStore {
    inner: Mutex<Tickets>,
}

#[derive(Debug, Default)]
struct Tickets {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: VecDeque<Tls13ClientSessionValue>,
}

impl TicketStore {
    fn with<R>(&self, f: impl FnOnce(&mut Tickets) -> R) -> R {
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            // A panic elsewhere while holding it: the tickets are still usable.
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }
}

impl ClientSessionStore for TicketStore {
    fn set_kx_hint(&self, _server_name: ServerName<'static>, group: NamedGroup) {
        self.with(|t| t.kx_hint = Some(group));
    }

    fn kx_hint(&self, _server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.with(|t| t.kx_hint)
    }

    fn set_tls12_session(&self, _server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.with(|t| t.tls12 = Some(value));
    }

    fn tls12_session(&self, _server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.with(|t| t.tls12.clone())
    }

    fn remove_tls12_session(&self, _server_name: &ServerName<'static>) {
        self.with(|t| t.tls12 = None);
    }

    fn insert_tls13_ticket(
        &self,
        _server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.with(|t| {
            if t.tls13.len() >= TICKETS_KEPT_MAX {
                t.tls13.pop_front();
            }
            t.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(
        &self,
        _server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        // Newest first: the oldest may have expired.
        self.with(|t| t.tls13.pop_back())
    }
}

/// The name the client asks for and verifies: the URL's host, as an IP
/// address or a DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| format!("{host:?}: {e}"))
}
