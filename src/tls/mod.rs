//! TLS (HTTPS): rustls, sans-I/O, for the server's shards and for the load
//! generator. A leaf room: it imports nothing of ours.
//!
//! - [`certs`]: reading a PEM certificate chain and private key, and
//!   checking them (readable, the key belongs to the certificate, the
//!   certificate is valid now, the chain is in order) for the server, its
//!   reload and `uringnotes doctor`;
//! - [`server`]: the server's TLS configuration, built once and shared by
//!   every shard: TLS 1.3 and 1.2, ALPN `http/1.1`, one session-ticket key
//!   set for all cores (so a client resumes on any core), and the
//!   certificate behind an atomically swapped pointer that SIGHUP replaces
//!   ([`server::ServerTls::reload`]); a handshake reads it once;
//! - [`session`]: the record-layer glue around one server connection: it
//!   takes ciphertext from whatever the caller reads it from, hands out
//!   plaintext, and turns plaintext into ciphertext in a buffer the caller
//!   sends. It does no I/O of its own, which is what lets the shard drive
//!   it from its io_uring socket and the fuzz target from bytes;
//! - [`client`]: the client side for `uringnotes bench` (a trusted CA file,
//!   or no verification with `--insecure`).
//!
//! Invariant: nothing here takes a lock on the request path. The only
//! shared state, the certificate pointer and the ticket keys, is read during
//! handshakes (the ticketer's read lock is uncontended; it is written once
//! per rotation, every few hours).
//!
//! The crypto provider is aws-lc-rs ([`provider`]): rustls's default, with
//! assembly for P-256, X25519 and AES-GCM on x86-64.

pub mod certs;
pub mod client;
pub mod server;
pub mod session;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// ALPN protocol the server offers (and the bench client asks for): this
/// server speaks HTTP/1.1 only.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The crypto provider of every TLS configuration here. Key exchange
/// groups in the server's order of preference: the hybrid post-quantum
/// group first (browsers offer it), then X25519, P-256, P-384 (the
/// provider's default order puts P-384, the slowest, before X25519).
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::{self, kx_group};
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = vec![
        kx_group::X25519MLKEM768,
        kx_group::X25519,
        kx_group::SECP256R1,
        kx_group::SECP384R1,
    ];
    Arc::new(provider)
}
