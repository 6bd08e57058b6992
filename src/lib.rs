//! uringnotes: a distributed notes web server, thread-per-core on io_uring.
//!
//! The map of the house:
//! - [`config`] / [`cli`]: every option and limit, from defaults, file and flags.
//! - [`server`]: process start-up and shutdown; per-core shards, their accept
//!   loops, connections, deadlines and cross-core mailboxes.
//! - [`http`]: the HTTP/1.1 core (head parsing, chunked bodies, responses).
//! - [`routes`]: what each URL does (HTML page, notes API, operator endpoints).
//! - [`store`]: notes on disk (append-only checksummed rkyv log, group commit,
//!   recovery) and in memory (the per-core index).
//! - [`metrics`]: per-core counters and their Prometheus rendering.
//! - [`encoding`]: escaping and form decoding at the edges.
//! - [`bench`]: the built-in load generator (`uringnotes bench`).
//!
//! `ARCHITECTURE.md` follows one request and one note through these files.

pub mod bench;
pub mod cli;
pub mod config;
pub mod encoding;
pub mod http;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod store;
