//! Cluster authentication: a shared secret (the "cookie", as in Erlang)
//! that is never sent over the network.
//!
//! Mutual challenge-response: each side sends a fresh random nonce; each
//! proves it knows the cookie by returning HMAC-SHA256(cookie, role ||
//! own nonce || other nonce || both node ids). The role labels make the two
//! proofs different, so one side's proof can never be replayed as the
//! other's; fresh nonces make an old proof useless on a new connection.
//! Proofs are compared in constant time (`Mac::verify_slice`).
//!
//! The same key tags every membership datagram (see `membership.rs`).

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::wire::{NONCE_BYTES, PROOF_BYTES};

type HmacSha256 = Hmac<Sha256>;

/// Shortest cookie accepted; shorter secrets are guessable.
pub const COOKIE_BYTES_MIN: usize = 16;
/// Bytes of the truncated HMAC tag on membership datagrams.
pub const DATAGRAM_TAG_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CookieError {
    #[error("cannot read cookie file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cookie file {0} holds fewer than {COOKIE_BYTES_MIN} bytes; use a long random secret (e.g. `head -c 32 /dev/urandom | base64 > FILE`)")]
    TooShort(String),
}

/// The shared secret.
#[derive(Clone)]
pub struct Cookie(Vec<u8>);

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
        Ok(Cookie(trimmed.to_vec()))
    }

    pub fn from_bytes(b: &[u8]) -> Cookie {
        Cookie(b.to_vec())
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length.
        <HmacSha256 as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
    }

    fn proof_mac(
        &self,
        role: &[u8],
        own: &[u8; NONCE_BYTES],
        other: &[u8; NONCE_BYTES],
        ids: (u32, u32),
    ) -> HmacSha256 {
        let mut m = self.mac();
        m.update(b"uringnotes-peer-v1 ");
        m.update(role);
        m.update(own);
        m.update(other);
        m.update(&ids.0.to_le_bytes());
        m.update(&ids.1.to_le_bytes());
        m
    }

    /// The proof that the side `role` (b"acceptor" or b"initiator") knows the cookie.
    pub fn proof(
        &self,
        role: &[u8],
        own: &[u8; NONCE_BYTES],
        other: &[u8; NONCE_BYTES],
        ids: (u32, u32),
    ) -> [u8; PROOF_BYTES] {
        let out = self
            .proof_mac(role, own, other, ids)
            .finalize()
            .into_bytes();
        let mut p = [0u8; PROOF_BYTES];
        p.copy_from_slice(&out);
        p
    }

    /// Checks a proof in constant time.
    pub fn verify(
        &self,
        role: &[u8],
        own: &[u8; NONCE_BYTES],
        other: &[u8; NONCE_BYTES],
        ids: (u32, u32),
        proof: &[u8],
    ) -> bool {
        self.proof_mac(role, own, other, ids)
            .verify_slice(proof)
            .is_ok()
    }

    /// Tag for a membership datagram.
    pub fn datagram_tag(&self, data: &[u8]) -> [u8; DATAGRAM_TAG_BYTES] {
        let mut m = self.mac();
        m.update(b"uringnotes-swim-v1 ");
        m.update(data);
        let out = m.finalize().into_bytes();
        let mut t = [0u8; DATAGRAM_TAG_BYTES];
        t.copy_from_slice(&out[..DATAGRAM_TAG_BYTES]);
        t
    }

    pub fn verify_datagram(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut m = self.mac();
        m.update(b"uringnotes-swim-v1 ");
        m.update(data);
        m.verify_truncated_left(tag).is_ok()
    }
}

/// A fresh random nonce.
pub fn nonce() -> [u8; NONCE_BYTES] {
    let mut n = [0u8; NONCE_BYTES];
    if getrandom::fill(&mut n).is_err() {
        // getrandom only fails without any entropy source; fall back to
        // time and address bits rather than refusing to start a handshake.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        n[..16].copy_from_slice(&t.to_le_bytes());
        n[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_only_with_the_same_cookie_role_and_nonces() {
        let c = Cookie::from_bytes(b"0123456789abcdef-secret");
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let p = c.proof(b"acceptor", &a, &b, (1, 2));
        assert!(c.verify(b"acceptor", &a, &b, (1, 2), &p));
        assert!(!c.verify(b"initiator", &a, &b, (1, 2), &p), "role is bound");
        assert!(
            !c.verify(b"acceptor", &b, &a, (1, 2), &p),
            "nonces are bound"
        );
        assert!(!c.verify(b"acceptor", &a, &b, (1, 3), &p), "ids are bound");
        let other = Cookie::from_bytes(b"another-secret-0123456789");
        assert!(!other.verify(b"acceptor", &a, &b, (1, 2), &p));
        let t = c.datagram_tag(b"swim");
        assert!(c.verify_datagram(b"swim", &t));
        assert!(!other.verify_datagram(b"swim", &t));
        assert!(!c.verify_datagram(b"swin", &t));
    }
}
