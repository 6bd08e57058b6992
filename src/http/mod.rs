//! The HTTP/1.1 protocol core, independent of sockets and routes.
//!
//! - [`request`]: head parsing and framing rules (first pass over the buffer).
//! - [`body`]: the body decoder (length, chunked, until close) of both roles.
//! - [`response`]: writing responses into a buffer; complete responses that
//!   travel between cores and nodes, and the closing error replies.
//! - [`client`]: the client role, reading responses (for `uringnotes bench`).
//! - [`coding`]: content codings: `Accept-Encoding` negotiation, gzip and brotli.
//! - [`conditional`]: entity tags and `If-None-Match`.
//! - [`date`]: the cached `Date` header.
//! - [`error`]: every refusal and its status code.
//!
//! The connection state machine that drives these over a socket lives in
//! `shard/conn.rs`. Nothing here knows about routes, shards or the store.

pub mod body;
pub mod client;
pub mod coding;
pub mod conditional;
pub mod date;
pub mod error;
pub mod request;
pub mod response;

pub use error::HttpError;

/// `v` without the optional whitespace (spaces and tabs, RFC 9110 section
/// 5.6.3) around it, as around header values and list elements.
pub fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}
