//! uringnotes: a distributed notes web server, thread-per-core on io_uring.
//!
//! The map of the house, top to bottom (every import points down this
//! list; `tests/layering.rs` checks that the module graph has no cycle):
//!
//! - [`cli`]: the command line (`serve`, `bench`, `doctor`).
//! - [`node`]: process start-up and shutdown, signals, the exit status.
//! - [`doctor`]: `uringnotes doctor`, the preflight check of a machine.
//! - [`watchdog`]: supervision of the shards: stall and crash detection,
//!   restarts, restart intensity.
//! - [`shard`]: one core's server, the layer that wires the ones below:
//!   accept loop, connections, deadlines, cross-core mailboxes, dispatch.
//! - [`metrics`]: per-core counters and their Prometheus rendering.
//! - [`api`]: what each URL does (the route table, the HTML page, the notes
//!   API, live updates, operator endpoints), seeing its core through a view.
//! - [`cluster`]: peer protocol, membership (SWIM), replication and repair,
//!   cross-node forwarding, run by core 0.
//! - [`config`]: every option and limit, from defaults, file and flags.
//! - [`store`]: notes on disk (append-only checksummed rkyv log, group commit,
//!   recovery) and in memory (the one index every core shares, and the
//!   per-core feed).
//! - [`bench`]: the built-in load generator (`uringnotes bench`); it uses
//!   only `http`, `tls`, `encoding` and `host`.
//! - [`http`]: the HTTP/1.1 core (head parsing, body decoding for both
//!   roles, responses, content codings, entity tags).
//! - [`tls`]: HTTPS with rustls, sans-I/O: certificates and their checks,
//!   the server's reloadable configuration, the record-layer glue a shard
//!   drives, the bench's client configuration.
//! - leaves: [`net`] (socket set-up), [`fault`] (fault injection kinds),
//!   [`encoding`] (escaping and form decoding), [`host`] (uname, process
//!   limits), [`logging`] (journald-friendly lines, SIGHUP reload),
//!   [`sd_notify`] (systemd readiness).
//!
//! `ARCHITECTURE.md` follows one request and one note through these files.

pub mod api;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod doctor;
pub mod encoding;
pub mod fault;
pub mod host;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod node;
pub mod sd_notify;
pub mod shard;
pub mod store;
pub mod tls;
pub mod watchdog;
