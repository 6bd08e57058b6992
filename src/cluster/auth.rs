//! The cluster's shared secret (the "cookie", as in Erlang) and the keys
//! derived from it. The cookie itself never leaves the node.
//!
//! One cookie file yields two independent 32-byte keys (HKDF-SHA256, with
//! a label per use, so that no key is ever used for two purposes):
//! - the Noise pre-shared key of every peer connection (`handshake.rs`):
//!   each connection's keys come from it and from both sides' fresh
//!   ephemeral keys, so they are new for every connection;
//! - the key that seals membership datagrams (`datagram.rs`).
//!
//! During a cookie rotation a node holds two cookies ([`Cookies`]): the
//! first is the one it dials and sends datagrams with, and a peer or a
//! datagram is accepted under either. Invariant: a [`Cookies`] holds 1 to
//! [`COOKIE_FILES_MAX`] cookies.
//!
//! Nodes of protocol version 1 tagged their membership datagrams with
//! HMAC-SHA256 of the cookie; that check is kept only to recognise such a
//! node and say so in the log (it is never accepted).

use std::path::{Path, PathBuf};

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Shortest cookie accepted; shorter secrets are guessable.
pub const COOKIE_BYTES_MIN: usize = 16;
pub use crate::config::COOKIE_FILES_MAX;
/// Bytes of every key derived from a cookie (ChaCha20-Poly1305 and the
/// Noise PSK both take 32).
pub const KEY_BYTES: usize = 32;
/// Bytes of the truncated HMAC tag that protocol-1 nodes put in front of
/// their membership datagrams.
pub const LEGACY_DATAGRAM_TAG_BYTES: usize = 16;

/// HKDF salt: binds the derived keys to this protocol, so the same cookie
/// file used by something else yields unrelated keys.
const KDF_SALT: &[u8] = b"uringnotes cookie kdf v2";
const LABEL_PEER_PSK: &[u8] = b"peer connection noise psk";
const LABEL_DATAGRAM: &[u8] = b"membership datagram key";

#[derive(Debug, thiserror::Error)]
pub enum CookieError {
    #[error("cannot read cookie file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cookie file {0} holds fewer than {COOKIE_BYTES_MIN} bytes; use a long random secret (e.g. `head -c 32 /dev/urandom | base64 > FILE`)")]
    TooShort(String),
    #[error("no cookie file given")]
    None,
    #[error("{0} cookie files given; at most {COOKIE_FILES_MAX} (the new one and the old one, during a rotation)")]
    TooMany(usize),
}

/// One shared secret and the keys derived from it.
#[derive(Clone)]
pub struct Cookie {
    secret: Vec<u8>,
    peer_psk: [u8; KEY_BYTES],
    datagram_key: [u8; KEY_BYTES],
}

impl std::fmt::Debug for Cookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cookie(<secret>)")
    }
}

impl Cookie {
    /// Reads the cookie file; surrounding whitespace (a trailing newline) is ignored.
    pub fn load(path: &Path) -> Result<Cookie, CookieError> {
        let raw = std::fs::read(path).map_err(|source| CookieError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let trimmed = raw.trim_ascii();
        if trimmed.len() < COOKIE_BYTES_MIN {
            return Err(CookieError::TooShort(path.display().to_string()));
        }
        Ok(Cookie::from_bytes(trimmed))
    }

    pub fn from_bytes(b: &[u8]) -> Cookie {
        let kdf = Hkdf::<Sha256>::new(Some(KDF_SALT), b);
        let derive = |label: &[u8]| {
            let mut key = [0u8; KEY_BYTES];
            // 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
            kdf.expand(label, &mut key)
                .unwrap_or_else(|_| unreachable!("HKDF expands to 32 bytes"));
            key
        };
        Cookie {
            secret: b.to_vec(),
            peer_psk: derive(LABEL_PEER_PSK),
            datagram_key: derive(LABEL_DATAGRAM),
        }
    }

    /// The Noise pre-shared key of peer connections.
    pub fn peer_psk(&self) -> &[u8; KEY_BYTES] {
        &self.peer_psk
    }

    /// The key that seals membership datagrams.
    pub fn datagram_key(&self) -> &[u8; KEY_BYTES] {
        &self.datagram_key
    }

    /// True if `datagram` is a membership datagram of a protocol-1 node
    /// holding this cookie (an HMAC tag, then foca's bytes in the clear).
    pub fn is_legacy_datagram(&self, datagram: &[u8]) -> bool {
        if datagram.len() <= LEGACY_DATAGRAM_TAG_BYTES {
            return false;
        }
        let (tag, data) = datagram.split_at(LEGACY_DATAGRAM_TAG_BYTES);
        let Ok(mut m) = <HmacSha256 as Mac>::new_from_slice(&self.secret) else {
            return false;
        };
        m.update(b"uringnotes-swim-v1 ");
        m.update(data);
        m.verify_truncated_left(tag).is_ok()
    }
}

/// The cookies a node holds: one, or two during a rotation.
#[derive(Clone, Debug)]
pub struct Cookies(Vec<Cookie>);

impl Cookies {
    /// Loads the cookie files in order: the first is the one to dial with.
    pub fn load(paths: &[PathBuf]) -> Result<Cookies, CookieError> {
        if paths.len() > COOKIE_FILES_MAX {
            return Err(CookieError::TooMany(paths.len()));
        }
        let cookies = paths
            .iter()
            .map(|p| Cookie::load(p))
            .collect::<Result<Vec<_>, _>>()?;
        Cookies::new(cookies)
    }

    pub fn new(cookies: Vec<Cookie>) -> Result<Cookies, CookieError> {
        match cookies.len() {
            0 => Err(CookieError::None),
            n if n > COOKIE_FILES_MAX => Err(CookieError::TooMany(n)),
            _ => Ok(Cookies(cookies)),
        }
    }

    /// The cookie this node dials peers and sends datagrams with.
    pub fn dialing(&self) -> &Cookie {
        // The constructors refuse an empty list.
        &self.0[0]
    }

    /// Every cookie a peer or a datagram may prove, the dialing one first.
    pub fn accepted(&self) -> &[Cookie] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_the_cookie_and_differ_by_use() {
        let a = Cookie::from_bytes(b"0123456789abcdef-secret");
        let a2 = Cookie::from_bytes(b"0123456789abcdef-secret");
        let b = Cookie::from_bytes(b"another-secret-0123456789");
        assert_eq!(a.peer_psk(), a2.peer_psk(), "derivation is deterministic");
        assert_ne!(a.peer_psk(), b.peer_psk());
        assert_ne!(
            a.peer_psk(),
            a.datagram_key(),
            "one key per use, never shared"
        );
        assert_ne!(
            &a.peer_psk()[..],
            &a.secret[..KEY_BYTES.min(a.secret.len())]
        );
    }

    #[test]
    fn a_protocol_1_datagram_is_recognised_only_with_its_cookie() {
        let c = Cookie::from_bytes(b"0123456789abcdef-secret");
        let mut m = <HmacSha256 as Mac>::new_from_slice(b"0123456789abcdef-secret").unwrap();
        m.update(b"uringnotes-swim-v1 ");
        m.update(b"swim");
        let mut datagram = m.finalize().into_bytes()[..LEGACY_DATAGRAM_TAG_BYTES].to_vec();
        datagram.extend_from_slice(b"swim");
        assert!(c.is_legacy_datagram(&datagram));
        assert!(!Cookie::from_bytes(b"another-secret-0123456789").is_legacy_datagram(&datagram));
        datagram[18] ^= 1;
        assert!(!c.is_legacy_datagram(&datagram));
        assert!(!c.is_legacy_datagram(b"short"));
    }

    #[test]
    fn one_or_two_cookies_the_first_dials() {
        let a = Cookie::from_bytes(b"0123456789abcdef-new");
        let b = Cookie::from_bytes(b"0123456789abcdef-old");
        assert!(matches!(Cookies::new(vec![]), Err(CookieError::None)));
        assert!(matches!(
            Cookies::new(vec![a.clone(), b.clone(), a.clone()]),
            Err(CookieError::TooMany(3))
        ));
        let both = Cookies::new(vec![a.clone(), b]).unwrap();
        assert_eq!(both.dialing().peer_psk(), a.peer_psk());
        assert_eq!(both.accepted().len(), 2);
    }
}
