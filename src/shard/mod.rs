//! The shard: one core's server, and the layer that wires the others
//! together.
//!
//! A shard runs on its own pinned glommio executor and owns everything of
//! its core: the listening socket and accept loop, the connections, its
//! copy of the note index and its feed, its log writer, its buffer pools.
//! It is the one place where the layers below meet: it drives the HTTP
//! core (`http`) over its sockets, answers requests through the handlers
//! (`api`, which see it only as a `CoreView`), writes and indexes notes
//! (`store`), and on core 0 runs the cluster (`cluster`, which sees it only
//! as a `ClusterHost`). Nothing below reaches up into it.
//!
//! - [`state`]: the shard's state ([`Shard`], what all shards share).
//! - [`tasks`]: the executor's tasks: run, accept loop, inbox, sweeper, stop.
//! - [`conn`]: the HTTP connection loop (and which listener it came in on).
//! - [`transport`]: what a connection speaks HTTP over: TCP, or TLS over
//!   TCP (the record layer driven from the socket, the handshake).
//! - [`conn_table`]: connection deadlines and limits.
//! - [`dispatch`]: running a request on another core or node.
//! - [`inbox`]: cross-core lock-free mailboxes.
//! - [`bufpool`]: per-core buffer pools.
//! - [`listeners`]: a core's listening sockets (public, admin, redirect),
//!   bound and handed to an incarnation.
//! - [`incarnation`]: one executor serving a core, as its supervisor (the
//!   watchdog) sees it, and the supervisor's event types.
//! - [`view`]: the shard as the handlers see it (`api::CoreView`).
//! - [`cluster_host`]: the shard as the cluster sees it (`cluster::ClusterHost`).

pub mod bufpool;
pub mod cluster_host;
pub mod conn;
pub mod conn_table;
pub mod dispatch;
pub mod inbox;
pub mod incarnation;
pub mod listeners;
pub mod state;
pub mod tasks;
pub mod transport;
pub mod view;

pub use state::{CoreSlot, GaugeUnit, Shard, Shared};
pub use tasks::{panic_message, run, SWEEP_INTERVAL_MS};
