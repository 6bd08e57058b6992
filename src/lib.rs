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
//! - [`cluster`]: peer protocol, membership (SWIM), replication and
//!   cross-node dispatch, run by core 0.
//! - [`watchdog`]: supervision of the shards: stall and crash detection,
//!   restarts, restart intensity.
//! - [`metrics`]: per-core counters and their Prometheus rendering.
//! - [`net`]: socket set-up (SO_REUSEPORT listeners, the membership socket).
//! - [`encoding`]: escaping and form decoding at the edges.
//! - [`logging`]: journald-friendly log lines, log filter reload on SIGHUP.
//! - [`sd_notify`]: readiness notification for systemd.
//! - [`doctor`]: `uringnotes doctor`, the preflight check of a machine.
//! - [`bench`]: the built-in load generator (`uringnotes bench`).
//!
//! `ARCHITECTURE.md` follows one request and one note through these files.

pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod doctor;
pub mod encoding;
pub mod host;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod routes;
pub mod sd_notify;
pub mod server;
pub mod store;
pub mod watchdog;
