//! The HTTP/1.1 protocol core, independent of sockets and routes.
//!
//! - [`request`]: head parsing and framing rules (first pass over the buffer).
//! - [`body`]: the chunked body decoder.
//! - [`response`]: writing responses into a buffer.
//! - [`date`]: the cached `Date` header.
//! - [`error`]: every refusal and its status code.
//!
//! The connection state machine that drives these over a socket lives in
//! `server/conn.rs`.

pub mod body;
pub mod date;
pub mod error;
pub mod request;
pub mod response;

pub use error::HttpError;
