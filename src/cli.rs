//! Command-line interface: subcommands and their flags (clap).
//!
//! Flags of `serve` mirror the fields of [`Config`]; each one given on the
//! command line overrides the config file. The flags of `bench` live with
//! the load generator (`bench/args.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::bench::args::BenchArgs;
use crate::config::{AckPolicy, Config, ConfigError, DispatchPolicy, FsyncPolicy, Placement};

#[derive(Debug, Parser)]
#[command(
    name = "uringnotes",
    version,
    about = "A distributed notes web server: thread-per-core io_uring, durable rkyv log",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the notes server.
    Serve(Box<ServeArgs>),
    /// Check whether this machine can run the server as configured, and say
    /// what to change (exit status 1 if something must change).
    Doctor(Box<ServeArgs>),
    /// Load-test an HTTP server (closed loop or constant rate) and report
    /// latency percentiles; `bench compare A.json B.json` compares two runs.
    Bench(Box<BenchArgs>),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file; flags given here override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Data directory (node id and log) [default: ./uringnotes-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Number of cores to run on, one executor each [default: all online cores].
    #[arg(long, value_name = "N")]
    pub cores: Option<usize>,
    /// Node name shown on pages and in /_status [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// When to fdatasync the log: `always` (acknowledge only durable notes) or
    /// `never` (UNSAFE: for benchmarks only, acknowledged notes can be lost) [default: always].
    #[arg(long, value_enum, value_name = "POLICY")]
    pub fsync: Option<FsyncPolicy>,
    /// Largest request head in bytes (431 beyond) [default: 16384].
    #[arg(long, value_name = "BYTES")]
    pub header_bytes_max: Option<usize>,
    /// Longest request target in bytes (414 beyond) [default: 8192].
    #[arg(long, value_name = "BYTES")]
    pub uri_bytes_max: Option<usize>,
    /// Largest request body in bytes (413 beyond) [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub body_bytes_max: Option<usize>,
    /// Largest note text in UTF-8 bytes (413 beyond) [default: 4096].
    #[arg(long, value_name = "BYTES")]
    pub note_text_bytes_max: Option<usize>,
    /// Notes per HTML page [default: 100].
    #[arg(long, value_name = "N")]
    pub page_notes: Option<usize>,
    /// Time allowed for a whole request head, from its first byte (408 beyond) [default: 10000].
    #[arg(long, value_name = "MS")]
    pub header_timeout_ms: Option<u64>,
    /// Time allowed for a whole request body [default: 30000].
    #[arg(long, value_name = "MS")]
    pub body_timeout_ms: Option<u64>,
    /// Time a client has to take a response before it is disconnected [default: 30000].
    #[arg(long, value_name = "MS")]
    pub send_timeout_ms: Option<u64>,
    /// Idle keep-alive connections are closed after this [default: 60000].
    #[arg(long, value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Grace period for in-flight requests on SIGTERM/SIGINT [default: 10000].
    #[arg(long, value_name = "MS")]
    pub shutdown_timeout_ms: Option<u64>,
    /// Open connections per core; the excess gets 503 [default: 16384].
    #[arg(long, value_name = "N")]
    pub connections_max_per_core: Option<usize>,
    /// listen(2) backlog per core [default: 4096].
    #[arg(long, value_name = "N")]
    pub listen_backlog: Option<u32>,
    /// SO_SNDBUF of each HTTP connection; 0 = kernel autotuning [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub send_buffer_bytes: Option<usize>,
    /// Log segment size limit in bytes [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub segment_bytes_max: Option<u64>,
    /// Open live-update streams (GET /events) per core; the excess gets 503 [default: 1024].
    #[arg(long, value_name = "N")]
    pub sse_subscribers_max_per_core: Option<usize>,
    /// PEM certificate chain, leaf first; with --tls-key, --listen serves HTTPS (re-read on SIGHUP).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (ECDSA, RSA or Ed25519; re-read on SIGHUP).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Plain-HTTP address that redirects every request to the HTTPS origin (needs --tls-cert).
    #[arg(long, value_name = "ADDR")]
    pub redirect_http: Option<SocketAddr>,
    /// Send Strict-Transport-Security: max-age=SECONDS on HTTPS responses [default: no header].
    #[arg(long, value_name = "SECONDS")]
    pub hsts_max_age: Option<u64>,
    /// Time a TLS handshake may take from the accept [default: 10000].
    #[arg(long, value_name = "MS")]
    pub tls_handshake_timeout_ms: Option<u64>,
    /// TLS handshakes in progress per core; the excess is closed at once [default: 1024].
    #[arg(long, value_name = "N")]
    pub tls_handshakes_max_per_core: Option<usize>,
    /// Operator listener (plain HTTP) for /metrics, /_status, /healthz and the fault
    /// endpoints; those are then 404 on --listen (/healthz stays).
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Log filter in RUST_LOG syntax (RUST_LOG, if set, wins) [default: info].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// CPUs to pin shards to, e.g. `1` or `0,1` [default: the first --cores CPUs].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub cpus: Option<Vec<usize>>,
    /// Pin shard executors to their CPUs: auto (pinned on bare metal or with
    /// --cpus, unpinned in a VM), pinned, unpinned [default: auto].
    #[arg(long, value_name = "HOW")]
    pub placement: Option<Placement>,
    /// Peer protocol address (TCP for data, UDP for membership); enables clustering.
    #[arg(long, value_name = "ADDR")]
    pub peer_listen: Option<SocketAddr>,
    /// Address peers should dial, if not --peer-listen (e.g. behind a wildcard bind).
    #[arg(long, value_name = "ADDR")]
    pub peer_advertise: Option<SocketAddr>,
    /// File with the shared cluster secret; never sent over the network.
    /// Give it twice during a cookie rotation: the first dials, either is accepted.
    #[arg(long, value_name = "FILE")]
    pub cookie_file: Vec<PathBuf>,
    /// A cluster member's peer address to join (repeatable; one live member is enough).
    #[arg(long, value_name = "ADDR")]
    pub join: Vec<SocketAddr>,
    /// When writes are acknowledged: `all` (local fsync + every peer up) or `local` [default: all].
    #[arg(long, value_enum, value_name = "POLICY")]
    pub ack: Option<AckPolicy>,
    /// Longest a write waits for peer acknowledgements [default: 5000].
    #[arg(long, value_name = "MS")]
    pub ack_timeout_ms: Option<u64>,
    /// Where requests run: `local`, `random` (any shard of the cluster) or `p2c` [default: p2c].
    #[arg(long, value_enum, value_name = "POLICY")]
    pub dispatch: Option<DispatchPolicy>,
    /// In-flight requests above which p2c sends work elsewhere [default: 32].
    #[arg(long, value_name = "N")]
    pub dispatch_overload_inflight: Option<u64>,
    /// Do not add the `X-Served-By: node/core` response header.
    #[arg(long)]
    pub no_served_by: bool,
    /// Enable the /_admin fault-injection endpoints: make a shard panic, stall or
    /// slow down, split the cluster (tests and demos only).
    #[arg(long)]
    pub fault_injection: bool,
    /// A shard silent (no heartbeat) this long is replaced, e.g. `1s`, `500ms` [default: 1s].
    #[arg(long = "stall-timeout", value_name = "DURATION", value_parser = parse_duration_ms)]
    pub stall_timeout_ms: Option<u64>,
    /// More shard restarts than this within --restart-window: exit with status 3 [default: 5].
    #[arg(long, value_name = "N")]
    pub max_restarts: Option<u32>,
    /// The window --max-restarts counts in, e.g. `10s` [default: 10s].
    #[arg(long = "restart-window", value_name = "DURATION", value_parser = parse_duration_ms)]
    pub restart_window_ms: Option<u64>,
}

/// Parses a duration such as `1s`, `500ms` or `1m 30s` into milliseconds.
fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (try e.g. 1s or 500ms)"))?;
    u64::try_from(d.as_millis()).map_err(|_| "duration too large".to_string())
}

impl ServeArgs {
    /// Builds the effective configuration: defaults, then the file, then flags.
    pub fn to_config(&self) -> Result<Config, ConfigError> {
        let mut cfg = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        macro_rules! overlay {
            ($($field:ident),* $(,)?) => {
                $( if let Some(v) = &self.$field { cfg.$field = v.clone(); } )*
            };
        }
        overlay!(
            listen,
            data_dir,
            cores,
            node_name,
            fsync,
            header_bytes_max,
            uri_bytes_max,
            body_bytes_max,
            note_text_bytes_max,
            page_notes,
            header_timeout_ms,
            body_timeout_ms,
            send_timeout_ms,
            idle_timeout_ms,
            shutdown_timeout_ms,
            connections_max_per_core,
            listen_backlog,
            send_buffer_bytes,
            segment_bytes_max,
            sse_subscribers_max_per_core,
            tls_handshake_timeout_ms,
            tls_handshakes_max_per_core,
            log_level,
            cpus,
            placement,
            ack,
            ack_timeout_ms,
            dispatch,
            dispatch_overload_inflight,
            stall_timeout_ms,
            max_restarts,
            restart_window_ms,
        );
        macro_rules! overlay_option {
            ($($field:ident),* $(,)?) => {
                $( if self.$field.is_some() { cfg.$field = self.$field.clone(); } )*
            };
        }
        overlay_option!(
            peer_listen,
            peer_advertise,
            tls_cert,
            tls_key,
            redirect_http,
            hsts_max_age,
            admin_listen,
        );
        if !self.cookie_file.is_empty() {
            cfg.cookie_file = self.cookie_file.clone();
        }
        if !self.join.is_empty() {
            cfg.join = self.join.clone();
        }
        if self.no_served_by {
            cfg.served_by = false;
        }
        if self.fault_injection {
            cfg.fault_injection = true;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_override_defaults() {
        let cli = Cli::try_parse_from([
            "uringnotes",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cores",
            "1",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("parsed as serve");
        };
        let cfg = args.to_config().unwrap();
        assert_eq!(cfg.listen.port(), 0);
        assert_eq!(cfg.cores, 1);
        assert_eq!(cfg.stall_timeout_ms, 1000);
        assert!(!cfg.fault_injection);
    }

    #[test]
    fn cookie_file_may_be_given_twice_the_first_dials() {
        let cli = Cli::try_parse_from([
            "uringnotes",
            "serve",
            "--peer-listen",
            "127.0.0.1:0",
            "--cookie-file",
            "new",
            "--cookie-file",
            "old",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("parsed as serve");
        };
        let cfg = args.to_config().unwrap();
        assert_eq!(
            cfg.cookie_file,
            vec![PathBuf::from("new"), PathBuf::from("old")]
        );
    }

    #[test]
    fn supervision_flags_take_durations() {
        let cli = Cli::try_parse_from([
            "uringnotes",
            "serve",
            "--stall-timeout",
            "500ms",
            "--restart-window",
            "1m",
            "--max-restarts",
            "2",
            "--fault-injection",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        let cfg = args.to_config().unwrap();
        assert_eq!(cfg.stall_timeout_ms, 500);
        assert_eq!(cfg.restart_window_ms, 60_000);
        assert_eq!(cfg.max_restarts, 2);
        assert!(cfg.fault_injection);
        assert!(Cli::try_parse_from(["uringnotes", "serve", "--stall-timeout", "soon"]).is_err());
    }
}
