//! Server configuration: every limit and timeout, with its default.
//!
//! A value comes from, in increasing precedence: the defaults below, the TOML
//! file given by `--config`, then command-line flags. Every limit the server
//! enforces is a field here (or a named constant where it must not be tuned),
//! so an operator can find all of them in one place; `tools/uringnotes.toml`
//! documents each one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::store::FsyncPolicy;

/// Hard ceiling for `note_text_bytes_max`: a note must fit in one log record.
pub const NOTE_TEXT_BYTES_MAX_LIMIT: usize = 256 * 1024;
/// Largest `hsts_max_age` (two years, what browsers' preload lists ask for,
/// times five): a typo of a few more digits is refused, not pinned for decades.
pub const HSTS_MAX_AGE_S_MAX: u64 = 5 * 2 * 365 * 86_400;
/// Smallest `stall_timeout_ms`: shards beat every 100 ms
/// (`SWEEP_INTERVAL_MS`), and a busy core may be late by a tick or two.
pub const STALL_TIMEOUT_MS_MIN: u64 = 300;

/// Cookie files a node may hold at once: the current one and, during a
/// rotation, the other one (README, "Rotating the cookie").
pub const COOKIE_FILES_MAX: usize = 2;

/// When a write is acknowledged in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AckPolicy {
    /// After the local fsync and an acknowledgement from every peer currently up.
    All,
    /// After the local fsync only; peers catch up asynchronously.
    Local,
}

/// Where a request is executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DispatchPolicy {
    /// On the core that accepted the connection.
    Local,
    /// On a uniformly random shard of the cluster (like the original's process group).
    Random,
    /// Locally until this shard is overloaded, then on the less loaded of two
    /// random shards (power of two choices) if that one is not overloaded.
    P2c,
}

/// How shard executors are placed on CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Pinned on bare metal or when `cpus` lists CPUs; unpinned under a
    /// hypervisor, where waking a pinned executor on another CPU is a VM
    /// exit (perf/RESULTS.md, "Placement").
    Auto,
    /// Each executor pinned to its own CPU (`cpus`, or the first `cores`).
    Pinned,
    /// One executor per core as always, but the kernel's scheduler places
    /// them (as nginx places its workers by default).
    Unpinned,
}

impl Placement {
    /// Whether executors are pinned: `cpus_listed` is true when the operator
    /// named the CPUs, `under_hypervisor` when the machine is a VM.
    pub fn pins(self, cpus_listed: bool, under_hypervisor: bool) -> bool {
        match self {
            Placement::Pinned => true,
            Placement::Unpinned => false,
            Placement::Auto => cpus_listed || !under_hypervisor,
        }
    }
}

/// The validated configuration of `uringnotes serve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP listen address. Every core binds it with SO_REUSEPORT.
    pub listen: SocketAddr,
    /// Directory holding the node id and the log segments.
    pub data_dir: PathBuf,
    /// Executors (one per core) to run; 0 means every online core.
    pub cores: usize,
    /// Name shown on pages and in `/_status`; defaults to the host name.
    pub node_name: String,
    pub fsync: FsyncPolicy,

    /// A request head (request line and headers) larger than this gets 431.
    pub header_bytes_max: usize,
    /// A request target longer than this gets 414.
    pub uri_bytes_max: usize,
    /// A request body larger than this gets 413.
    pub body_bytes_max: usize,
    /// A note text larger than this (in UTF-8 bytes) gets 413.
    pub note_text_bytes_max: usize,
    /// Notes per HTML page (older ones are behind an "older" link).
    pub page_notes: usize,

    /// A request head must arrive completely within this time of its first byte (408 otherwise).
    pub header_timeout_ms: u64,
    /// A request body must arrive completely within this time of its head.
    pub body_timeout_ms: u64,
    /// A response must be taken by the client within this time (slow readers are cut off).
    pub send_timeout_ms: u64,
    /// An idle keep-alive connection is closed after this time.
    pub idle_timeout_ms: u64,
    /// On SIGTERM, in-flight requests get this long to finish.
    pub shutdown_timeout_ms: u64,

    /// Open connections per core; excess connections get 503 and are closed.
    pub connections_max_per_core: usize,
    /// listen(2) backlog of each core's socket (the kernel caps it at net.core.somaxconn).
    pub listen_backlog: u32,
    /// SO_SNDBUF of each HTTP connection (the kernel doubles it); 0 leaves
    /// the kernel's autotuning, which lets a client that never reads hold
    /// megabytes of kernel memory and the CPU that filled it.
    pub send_buffer_bytes: usize,
    /// A log segment is closed and a new one started beyond this size.
    pub segment_bytes_max: u64,
    /// Open live-update streams (`GET /events`) per core; the excess gets
    /// 503. Each is a connection, so `connections_max_per_core` caps it too.
    pub sse_subscribers_max_per_core: usize,

    /// PEM certificate chain, leaf first (certbot's `fullchain.pem`). With
    /// `tls_key`, `listen` serves HTTPS. Re-read on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (ECDSA, RSA or Ed25519). Re-read on SIGHUP.
    pub tls_key: Option<PathBuf>,
    /// A plain-HTTP listener that answers every request with a redirect to
    /// the same path on the HTTPS origin (needs TLS).
    pub redirect_http: Option<SocketAddr>,
    /// `Strict-Transport-Security: max-age=N` on every HTTPS response; unset:
    /// no header (needs TLS).
    pub hsts_max_age: Option<u64>,
    /// A TLS handshake must complete within this time of the accept
    /// (slowloris on the handshake); then the connection is closed.
    pub tls_handshake_timeout_ms: u64,
    /// TLS handshakes in progress per core; a connection arriving beyond
    /// this is closed at once (each costs up to 64 KiB while handshaking).
    pub tls_handshakes_max_per_core: usize,
    /// The operator listener (plain HTTP): `/metrics`, `/_status`,
    /// `/healthz` and the fault endpoints; when set, those (but `/healthz`)
    /// are 404 on `listen`.
    pub admin_listen: Option<SocketAddr>,

    /// Log filter (`info`, `debug`, `uringnotes=debug,warn`, ...), in
    /// `RUST_LOG` syntax. `RUST_LOG`, if set, wins. Re-read on SIGHUP.
    pub log_level: String,

    /// The file this configuration was read from (not a file key): SIGHUP
    /// re-reads it for the options that can change while running.
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
    /// CPUs to pin shards to (empty: the first `cores` CPUs this process may use).
    pub cpus: Vec<usize>,
    /// Whether shard executors are pinned to their CPUs (`auto`: pinned on
    /// bare metal or with `cpus` given, unpinned in a VM).
    pub placement: Placement,

    /// Peer protocol listen address; unset means single-node (no cluster).
    pub peer_listen: Option<SocketAddr>,
    /// Address peers should dial (defaults to `peer_listen`; needed when that is a wildcard).
    pub peer_advertise: Option<SocketAddr>,
    /// File holding the shared cluster secret (like an Erlang cookie). Two
    /// during a cookie rotation (`cookie_file = ["new", "old"]`): the first
    /// is used to dial, either is accepted.
    #[serde(deserialize_with = "one_or_more_paths")]
    pub cookie_file: Vec<PathBuf>,
    /// Peer addresses to join at start-up (any one member is enough).
    pub join: Vec<SocketAddr>,
    pub ack: AckPolicy,
    /// Longest a write waits for peers' acknowledgements before it is answered anyway.
    pub ack_timeout_ms: u64,
    pub dispatch: DispatchPolicy,
    /// Requests in progress on a shard above which `p2c` dispatches elsewhere.
    pub dispatch_overload_inflight: u64,
    /// Add `X-Served-By: node/core` to responses.
    pub served_by: bool,

    /// A shard whose heartbeat has not moved for this long is stalled, and
    /// the watchdog replaces it.
    pub stall_timeout_ms: u64,
    /// More shard restarts than this within `restart_window_ms` make the
    /// process exit (status 3) so that its service manager restarts it.
    pub max_restarts: u32,
    /// The window `max_restarts` is counted in.
    pub restart_window_ms: u64,
    /// Enables the `/_admin/*` fault-injection endpoints (`/_admin/fault`,
    /// `/_admin/partition`; tests and demos only; a 404 otherwise).
    pub fault_injection: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./uringnotes-data"),
            cores: 0,
            node_name: default_node_name(),
            fsync: FsyncPolicy::Always,
            header_bytes_max: 16 * 1024,
            uri_bytes_max: 8 * 1024,
            body_bytes_max: 64 * 1024,
            note_text_bytes_max: 4 * 1024,
            page_notes: 100,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            send_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            shutdown_timeout_ms: 10_000,
            connections_max_per_core: 16_384,
            listen_backlog: 4096,
            send_buffer_bytes: 64 * 1024,
            segment_bytes_max: 64 * 1024 * 1024,
            sse_subscribers_max_per_core: 1024,
            tls_cert: None,
            tls_key: None,
            redirect_http: None,
            hsts_max_age: None,
            tls_handshake_timeout_ms: 10_000,
            tls_handshakes_max_per_core: 1024,
            admin_listen: None,
            log_level: "info".into(),
            config_file: None,
            cpus: Vec::new(),
            placement: Placement::Auto,
            peer_listen: None,
            peer_advertise: None,
            cookie_file: Vec::new(),
            join: Vec::new(),
            ack: AckPolicy::All,
            ack_timeout_ms: 5_000,
            dispatch: DispatchPolicy::P2c,
            dispatch_overload_inflight: 32,
            served_by: true,
            stall_timeout_ms: 1_000,
            max_restarts: 5,
            restart_window_ms: 10_000,
            fault_injection: false,
        }
    }
}

/// `cookie_file = "path"` or `cookie_file = ["new", "old"]`.
fn one_or_more_paths<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMore {
        One(PathBuf),
        More(Vec<PathBuf>),
    }
    Ok(match OneOrMore::deserialize(d)? {
        OneOrMore::One(p) => vec![p],
        OneOrMore::More(v) => v,
    })
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML config file; fields it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        config.config_file = Some(path.to_owned());
        Ok(config)
    }

    /// Checks relations between values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if self.header_bytes_max < 1024 {
            return invalid(format!(
                "header_bytes_max = {} is below the 1024-byte minimum",
                self.header_bytes_max
            ));
        }
        if self.uri_bytes_max >= self.header_bytes_max {
            return invalid("uri_bytes_max must be smaller than header_bytes_max".into());
        }
        if self.note_text_bytes_max == 0 || self.note_text_bytes_max > NOTE_TEXT_BYTES_MAX_LIMIT {
            return invalid(format!(
                "note_text_bytes_max must be in 1..={NOTE_TEXT_BYTES_MAX_LIMIT}"
            ));
        }
        if self.body_bytes_max < self.note_text_bytes_max {
            return invalid("body_bytes_max must be at least note_text_bytes_max".into());
        }
        if self.page_notes == 0 || self.page_notes > 10_000 {
            return invalid("page_notes must be in 1..=10000".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return invalid(format!("log_level {:?}: {e}", self.log_level));
        }
        if self.connections_max_per_core == 0 {
            return invalid("connections_max_per_core must be at least 1".into());
        }
        if self.send_buffer_bytes != 0 && !(4096..=64 << 20).contains(&self.send_buffer_bytes) {
            return invalid(
                "send_buffer_bytes must be 0 (kernel autotuning) or in 4 KiB..=64 MiB".into(),
            );
        }
        if self.segment_bytes_max < 64 * 1024 || self.segment_bytes_max > u32::MAX as u64 {
            return invalid("segment_bytes_max must be in 64 KiB..4 GiB".into());
        }
        for (name, ms) in [
            ("header_timeout_ms", self.header_timeout_ms),
            ("body_timeout_ms", self.body_timeout_ms),
            ("send_timeout_ms", self.send_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            if ms < 100 {
                return invalid(format!("{name} = {ms} is below the 100 ms minimum"));
            }
        }
        self.validate_tls()?;
        if self.peer_listen.is_some() && self.cookie_file.is_empty() {
            return invalid("--peer-listen needs --cookie-file (the shared cluster secret)".into());
        }
        if self.cookie_file.len() > COOKIE_FILES_MAX {
            return invalid(format!(
                "at most {} cookie files (the new and the old one, during a rotation)",
                COOKIE_FILES_MAX
            ));
        }
        if !self.join.is_empty() && self.peer_listen.is_none() {
            return invalid("--join needs --peer-listen".into());
        }
        if let Some(addr) = self.peer_listen {
            if addr.ip().is_unspecified() && self.peer_advertise.is_none() {
                return invalid(format!(
                    "peer_listen {addr} is a wildcard address: set peer_advertise to the address peers should dial"
                ));
            }
        }
        if self.ack_timeout_ms < 100 {
            return invalid("ack_timeout_ms must be at least 100".into());
        }
        if self.dispatch_overload_inflight == 0 {
            return invalid("dispatch_overload_inflight must be at least 1".into());
        }
        if !(STALL_TIMEOUT_MS_MIN..=3_600_000).contains(&self.stall_timeout_ms) {
            return invalid(format!(
                "stall_timeout_ms = {} must be in {STALL_TIMEOUT_MS_MIN}..=3600000",
                self.stall_timeout_ms
            ));
        }
        if self.max_restarts > 10_000 {
            return invalid("max_restarts must be at most 10000".into());
        }
        if !(100..=86_400_000).contains(&self.restart_window_ms) {
            return invalid(format!(
                "restart_window_ms = {} must be in 100..=86400000",
                self.restart_window_ms
            ));
        }
        if self.node_name.is_empty()
            || self.node_name.len() > 64
            || !self
                .node_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return invalid(format!(
                "node_name {:?} must be 1-64 characters of [A-Za-z0-9._-]",
                self.node_name
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Whether `listen` serves HTTPS.
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// The TLS, redirect and admin-listener options, and that no two
    /// listeners share an address.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return invalid("tls_cert needs tls_key (the certificate's private key)".into())
            }
            (None, Some(_)) => {
                return invalid("tls_key needs tls_cert (the certificate chain)".into())
            }
            _ => {}
        }
        if !self.tls_enabled() {
            if self.redirect_http.is_some() {
                return invalid(
                    "redirect_http needs HTTPS on listen (tls_cert and tls_key)".into(),
                );
            }
            if self.hsts_max_age.is_some() {
                return invalid("hsts_max_age needs HTTPS on listen (tls_cert and tls_key)".into());
            }
        }
        if self.hsts_max_age.is_some_and(|s| s > HSTS_MAX_AGE_S_MAX) {
            return invalid(format!(
                "hsts_max_age must be at most {HSTS_MAX_AGE_S_MAX} seconds"
            ));
        }
        if self.tls_handshake_timeout_ms < 100 {
            return invalid(format!(
                "tls_handshake_timeout_ms = {} is below the 100 ms minimum",
                self.tls_handshake_timeout_ms
            ));
        }
        if self.tls_handshakes_max_per_core == 0 {
            return invalid("tls_handshakes_max_per_core must be at least 1".into());
        }
        let listeners = [
            ("listen", Some(self.listen)),
            ("redirect_http", self.redirect_http),
            ("admin_listen", self.admin_listen),
            ("peer_listen", self.peer_listen),
        ];
        for (i, (a_name, a)) in listeners.iter().enumerate() {
            for (b_name, b) in &listeners[i + 1..] {
                if let (Some(a), Some(b)) = (a, b) {
                    if a.port() != 0
                        && a.port() == b.port()
                        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
                    {
                        return invalid(format!("{a_name} ({a}) and {b_name} ({b}) overlap: each listener needs its own address"));
                    }
                }
            }
        }
        Ok(())
    }
}

fn default_node_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(64)
        .collect();
    if name.is_empty() {
        "uringnotes".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default()
            .validate()
            .expect("defaults must validate");
    }

    #[test]
    fn a_file_overrides_only_what_it_names() {
        let cfg: Config =
            toml::from_str("listen = \"127.0.0.1:9000\"\nfsync = \"never\"\n").unwrap();
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.fsync, FsyncPolicy::Never);
        assert_eq!(cfg.body_bytes_max, Config::default().body_bytes_max);
    }

    #[test]
    fn supervision_limits_are_checked() {
        let cfg = Config {
            stall_timeout_ms: 50,
            ..Config::default()
        };
        assert!(cfg.validate().is_err(), "a stall timeout below two sweeps");
        let cfg = Config {
            restart_window_ms: 0,
            ..Config::default()
        };
        assert!(cfg.validate().is_err());
        let cfg: Config =
            toml::from_str("stall_timeout_ms = 500\nmax_restarts = 0\nfault_injection = true\n")
                .unwrap();
        cfg.validate().unwrap();
        assert!(cfg.fault_injection);
    }

    #[test]
    fn one_cookie_file_or_two_during_a_rotation() {
        let one: Config = toml::from_str("cookie_file = \"/run/cookie\"\n").unwrap();
        assert_eq!(one.cookie_file, vec![PathBuf::from("/run/cookie")]);
        let two: Config = toml::from_str("cookie_file = [\"new\", \"old\"]\n").unwrap();
        assert_eq!(
            two.cookie_file,
            vec![PathBuf::from("new"), PathBuf::from("old")]
        );
        two.validate().unwrap();
        let three: Config = toml::from_str("cookie_file = [\"a\", \"b\", \"c\"]\n").unwrap();
        assert!(three.validate().is_err(), "at most two cookie files");
    }

    #[test]
    fn tls_options_are_checked_together() {
        let with = |toml_text: &str| toml::from_str::<Config>(toml_text).unwrap().validate();
        assert!(
            with("tls_cert = \"c.pem\"\n").is_err(),
            "a certificate without its key"
        );
        assert!(
            with("tls_key = \"k.pem\"\n").is_err(),
            "a key without its certificate"
        );
        assert!(with("hsts_max_age = 60\n").is_err(), "HSTS over plain HTTP");
        assert!(
            with("redirect_http = \"127.0.0.1:8079\"\n").is_err(),
            "a redirect to no HTTPS"
        );
        with("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\nhsts_max_age = 31536000\nredirect_http = \"127.0.0.1:8079\"\n").unwrap();
        assert!(
            with("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\nhsts_max_age = 99999999999\n")
                .is_err()
        );
        assert!(
            with("admin_listen = \"127.0.0.1:8080\"\n").is_err(),
            "the admin listener on the public address"
        );
        assert!(
            with("admin_listen = \"0.0.0.0:8080\"\n").is_err(),
            "a wildcard overlaps"
        );
        with("admin_listen = \"127.0.0.1:9090\"\n").unwrap();
        assert!(with("tls_handshakes_max_per_core = 0\n").is_err());
        assert!(with("tls_handshake_timeout_ms = 10\n").is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("lisen = \"127.0.0.1:9000\"\n").is_err());
    }
}
