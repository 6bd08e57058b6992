//! A certificate chain and its private key, read from PEM files and checked.
//!
//! The certificate file holds the full chain, leaf first (certbot's
//! `fullchain.pem`); the key file one private key: PKCS#8, SEC1 (EC) or
//! PKCS#1 (RSA), ECDSA, RSA or Ed25519. What is checked, and by whom:
//! - readable and well-formed, the key usable by the provider, and the key
//!   belonging to the leaf certificate (their public keys compared):
//!   [`read_pair`], at start, on every reload, and by the doctor;
//! - the leaf valid now (neither expired nor not yet valid):
//!   [`CertPair::check_validity`], at start and on reload (a bad pair is
//!   refused: at start the server does not start, on reload the old pair
//!   stays); the doctor also warns [`EXPIRY_WARN_DAYS`] ahead;
//! - the chain in order (each certificate issued by the next):
//!   [`chain_order`], a warning at start and reload (clients that build
//!   their own path still connect), a WARN in the doctor.
//!
//! Files are read whole, up to [`PEM_FILE_BYTES_MAX`]: a certificate
//! chain is a few KiB, and the size bound keeps a wrong path (a log file, a
//! device) from being read into memory.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Largest PEM file read (certificate chain or key).
pub const PEM_FILE_BYTES_MAX: u64 = 1 << 20;
/// Most certificates in a chain: a leaf and a few intermediates. More is
/// a wrong file (a CA bundle), and every handshake would send them all.
pub const CHAIN_CERTS_MAX: usize = 8;
/// The doctor warns when the certificate expires within this many days
/// (certbot renews 30 days ahead, so this means renewal is failing).
pub const EXPIRY_WARN_DAYS: i64 = 14;

/// Why a certificate and key cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read the {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the {what} file {path} is larger than {PEM_FILE_BYTES_MAX} bytes: not a PEM file")]
    TooLarge { what: &'static str, path: PathBuf },
    #[error("{path}: no PEM certificate (-----BEGIN CERTIFICATE-----) found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {count} certificates; at most {CHAIN_CERTS_MAX} (the leaf and its intermediates) are served")]
    LongChain { path: PathBuf, count: usize },
    #[error("{path}: no PEM private key found (expected PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)")]
    NoKey { path: PathBuf },
    #[error("{path}: malformed PEM: {why}")]
    Pem { path: PathBuf, why: String },
    #[error("{path}: certificate {index} of the chain cannot be parsed: {why}")]
    Parse {
        path: PathBuf,
        index: usize,
        why: String,
    },
    #[error("{path}: the private key cannot be used: {why}")]
    Key { path: PathBuf, why: String },
    #[error("the private key in {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("the certificate in {path} expired on {date}")]
    Expired { path: PathBuf, date: String },
    #[error("the certificate in {path} is not valid before {date}")]
    NotYetValid { path: PathBuf, date: String },
}

/// What the server and the doctor need to know of one certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// Subject and issuer as text (RFC 4514 style), for messages.
    pub subject: String,
    pub issuer: String,
    /// Serial number, hex bytes separated by colons.
    pub serial: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    /// The DER encodings of subject and issuer: "issued by" compares these.
    raw_subject: Vec<u8>,
    raw_issuer: Vec<u8>,
}

impl CertInfo {
    /// Parses one DER certificate.
    pub fn parse(der: &[u8]) -> Result<CertInfo, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
        let validity = cert.validity();
        Ok(CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string(),
            not_before_unix: validity.not_before.timestamp(),
            not_after_unix: validity.not_after.timestamp(),
            raw_subject: cert.subject().as_raw().to_vec(),
            raw_issuer: cert.issuer().as_raw().to_vec(),
        })
    }

    /// Issued by itself (a root, or a self-signed certificate).
    pub fn self_issued(&self) -> bool {
        self.raw_subject == self.raw_issuer
    }

    /// Whole days from `now_unix` until it expires (negative once expired).
    pub fn days_left(&self, now_unix: i64) -> i64 {
        (self.not_after_unix - now_unix).div_euclid(86_400)
    }
}

/// A chain and its key, read and checked to belong together.
#[derive(Debug, Clone)]
pub struct CertPair {
    /// What rustls serves: the chain and a signing key.
    pub certified: Arc<CertifiedKey>,
    /// Each certificate of the chain, leaf first.
    pub chain: Vec<CertInfo>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl CertPair {
    /// The leaf certificate.
    pub fn leaf(&self) -> &CertInfo {
        // `read_pair` never builds an empty chain.
        &self.chain[0]
    }

    /// Refuses a leaf that is expired or not yet valid at `now_unix`.
    pub fn check_validity(&self, now_unix: i64) -> Result<(), CertError> {
        let leaf = self.leaf();
        if now_unix > leaf.not_after_unix {
            return Err(CertError::Expired {
                path: self.cert_path.clone(),
                date: unix_date(leaf.not_after_unix),
            });
        }
        if now_unix < leaf.not_before_unix {
            return Err(CertError::NotYetValid {
                path: self.cert_path.clone(),
                date: unix_date(leaf.not_before_unix),
            });
        }
        Ok(())
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A Unix time as an HTTP date ("Sun, 06 Nov 1994 08:49:37 GMT").
pub fn unix_date(unix: i64) -> String {
    let t = if unix >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix as u64)
    } else {
        std::time::UNIX_EPOCH
    };
    httpdate::fmt_http_date(t)
}

/// Reads a file of at most [`PEM_FILE_BYTES_MAX`] bytes.
fn read_bounded(what: &'static str, path: &Path) -> Result<Vec<u8>, CertError> {
    let read_err = |source| CertError::Read {
        what,
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(PEM_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > PEM_FILE_BYTES_MAX {
        return Err(CertError::TooLarge {
            what,
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// Reads the certificate chain in `cert_path` (PEM, leaf first).
pub fn read_chain(cert_path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    read_certificates(cert_path, Some(CHAIN_CERTS_MAX))
}

/// Reads every PEM certificate in `cert_path` (at least one; at most
/// `count_max` when given).
pub fn read_certificates(
    cert_path: &Path,
    count_max: Option<usize>,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let bytes = read_bounded("certificate", cert_path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            path: cert_path.to_owned(),
            why: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    if count_max.is_some_and(|max| chain.len() > max) {
        return Err(CertError::LongChain {
            path: cert_path.to_owned(),
            count: chain.len(),
        });
    }
    Ok(chain)
}

/// Reads the private key in `key_path` (PEM).
pub fn read_key(key_path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let bytes = read_bounded("key", key_path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => CertError::NoKey {
            path: key_path.to_owned(),
        },
        e => CertError::Pem {
            path: key_path.to_owned(),
            why: e.to_string(),
        },
    })
}

/// Reads both files and checks that they make a servable pair (see the
/// module doc); validity in time is checked separately
/// ([`CertPair::check_validity`]), so the doctor can report it apart.
pub fn read_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertPair, CertError> {
    let chain_der = read_chain(cert_path)?;
    let chain = chain_der
        .iter()
        .enumerate()
        .map(|(index, der)| {
            CertInfo::parse(der).map_err(|why| CertError::Parse {
                path: cert_path.to_owned(),
                index,
                why,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let key_der = read_key(key_path)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| CertError::Key {
            path: key_path.to_owned(),
            why: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain_der, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(CertError::Mismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            })
        }
        // The provider cannot tell (no public key for this key type): the
        // first handshake will show it.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(CertError::Parse {
                path: cert_path.to_owned(),
                index: 0,
                why: e.to_string(),
            })
        }
    }
    Ok(CertPair {
        certified: Arc::new(certified),
        chain,
        cert_path: cert_path.to_owned(),
        key_path: key_path.to_owned(),
    })
}

/// Whether each certificate of the chain was issued by the next one: `Err`
/// says where the order breaks. (A missing intermediate shows as the last
/// certificate not being self-issued; that is normal, roots are left out.)
pub fn chain_order(chain: &[CertInfo]) -> Result<(), String> {
    for (i, pair) in chain.windows(2).enumerate() {
        if pair[0].raw_issuer != pair[1].raw_subject {
            return Err(format!(
                "certificate {} ({}) is not the issuer of certificate {} (issued by {}); \
                 the file must list the leaf first, then each issuer",
                i + 1,
                pair[1].subject,
                i,
                pair[0].issuer
            ));
        }
    }
    Ok(())
}
