//! Starting and stopping the server: the main thread's job.
//!
//! The main thread opens the data directory, recovers the log, binds one
//! listening socket per core and hands them to the watchdog
//! (`watchdog.rs`), which starts one glommio executor per core (`shard/`;
//! pinned to its CPU or not, `Placement` in config.rs) and supervises them. After that the main thread serves no
//! traffic: it waits for events (every shard is ready, a signal, the
//! watchdog gave up) and decides what the process does (report, shut down,
//! exit with a status).

use std::io::Write as _;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, FsyncPolicy};
use crate::shard::inbox::Inbox;
use crate::shard::listeners::CoreSockets;
use crate::shard::{CoreSlot, Shared};
use crate::store::{durability, recovery, DataDir, NodeInfo, StoreError};
use crate::tls::certs::{self, CertPair};
use crate::tls::server::ServerTls;
use crate::watchdog::{self, Notice};

/// Why the server could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Cores(String),
    #[error("{0}")]
    Config(String),
    #[error("HTTPS: {0}")]
    Tls(String),
    #[error("shard {core} failed to start: {reason}")]
    ShardStart { core: usize, reason: String },
    #[error(
        "shard {core} failed ({reason}); {verdict}; exiting so that the service manager \
         restarts the process"
    )]
    GaveUp {
        core: usize,
        reason: String,
        verdict: String,
    },
    #[error("the watchdog thread is gone; shards are no longer supervised")]
    WatchdogDied,
}

impl ServerError {
    /// The process exit status for this error: 3 when the watchdog gave up
    /// on a shard (restart intensity exceeded), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServerError::GaveUp { .. } => 3,
            _ => 1,
        }
    }
}

/// What the main thread waits for.
enum Event {
    Signal(i32),
    Watchdog(Notice),
}

/// Time allowed for every shard to come up (the watchdog enforces it; this
/// is the main thread's own backstop).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(35);

/// Runs the server until SIGTERM/SIGINT (Ok) or a fatal failure (Err).
pub fn run(config: Config) -> Result<(), ServerError> {
    if config.fsync == FsyncPolicy::Never {
        tracing::warn!("fsync = never: acknowledged notes can be lost on a crash or power failure (benchmarking only)");
    }
    skip_syncs_for_experiment(&config)?;
    let data = DataDir::open(&config.data_dir)?;
    let recovered = recovery::recover(&data.path, true)?;
    log_recovery(&recovered.report);
    let cpus = select_cpus(config.cores, &config.cpus)?;
    let hypervisor = crate::host::hypervisor();
    let pinned = config
        .placement
        .pins(!config.cpus.is_empty(), hypervisor.is_some());
    // The page's script and style sheet, compressed once for every core.
    crate::api::assets::prepare();
    crate::host::raise_nofile_limit();
    let tls = start_tls(&config)?;
    let (sockets, bound) =
        CoreSockets::bind_all(&config, cpus.len()).map_err(|e| ServerError::Listen {
            addr: e.addr,
            source: e.source,
        })?;
    let hsts: Option<&'static str> = match (&tls, config.hsts_max_age) {
        (Some(_), Some(age)) => Some(Box::leak(format!("max-age={age}").into_boxed_str())),
        _ => None,
    };

    let cores = cpus.len();
    let next_segment_by_core = recovered.next_segment_by_core;
    let shared = Arc::new(Shared {
        node: NodeInfo {
            id: data.node_id,
            name: config.node_name.clone(),
        },
        data_dir: data.path.clone(),
        listen: bound.public,
        admin_listen: bound.admin,
        redirect_listen: bound.redirect,
        tls,
        hsts,
        cpus: cpus.clone(),
        pinned,
        inboxes: (0..cores).map(|_| Inbox::default()).collect(),
        metrics: crate::metrics::new_all(cores),
        cores: (0..cores)
            .map(|core| {
                CoreSlot::new(
                    next_segment_by_core
                        .get(&(core as u16))
                        .copied()
                        .unwrap_or(1),
                )
            })
            .collect(),
        recovered_log_bytes: recovered.report.bytes,
        index: Arc::clone(recovered.index.shared()),
        started: Instant::now(),
        cluster: Arc::new(crate::cluster::ClusterShared::new(
            config.peer_listen.is_some(),
            cores,
        )),
        config,
    });

    watchdog::install_panic_hook();
    let (events_tx, events) = mpsc::channel::<Event>();
    spawn_signal_thread(events_tx.clone());
    let watchdog = watchdog::start(
        Arc::clone(&shared),
        sockets,
        Box::new(move |notice| {
            let _ = events_tx.send(Event::Watchdog(notice));
        }),
    )
    .map_err(|reason| ServerError::ShardStart { core: 0, reason })?;
    let stop_wait =
        Duration::from_millis(shared.config.shutdown_timeout_ms) + Duration::from_secs(10);

    match events.recv_timeout(STARTUP_TIMEOUT) {
        Ok(Event::Watchdog(Notice::AllReady)) => {}
        Ok(Event::Watchdog(Notice::StartFailed { core, reason })) => {
            wait_stopped(&events, stop_wait);
            return Err(ServerError::ShardStart { core, reason });
        }
        Ok(Event::Signal(_)) => {
            watchdog.stop();
            wait_stopped(&events, stop_wait);
            return Ok(());
        }
        Ok(Event::Watchdog(other)) => {
            return Err(ServerError::ShardStart {
                core: 0,
                reason: format!("unexpected during start-up: {other:?}"),
            })
        }
        Err(_) => {
            return Err(ServerError::ShardStart {
                core: 0,
                reason: "timed out starting".into(),
            })
        }
    }
    tracing::info!(
        listen = %bound.public,
        https = shared.tls.is_some(),
        admin_listen = ?bound.admin,
        redirect_http = ?bound.redirect,
        cores,
        cpus = ?cpus,
        pinned,
        hypervisor = hypervisor.as_deref().unwrap_or("none seen"),
        node = %format_args!("{:08x}", shared.node.id),
        name = %shared.node.name,
        notes = shared.index.len(),
        stall_timeout_ms = shared.config.stall_timeout_ms,
        max_restarts = shared.config.max_restarts,
        restart_window_ms = shared.config.restart_window_ms,
        fault_injection = shared.config.fault_injection,
        ring_setup = %crate::host::ring_setup(),
        profile_guided = crate::host::profile_guided(),
        "uringnotes serving"
    );
    // The lines on stdout: scripts and tests wait for the first.
    let scheme = if shared.tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!("uringnotes listening on {scheme}://{}", bound.public);
    if let Some(admin) = bound.admin {
        println!("uringnotes admin on http://{admin}");
    }
    if let Some(redirect) = bound.redirect {
        println!("uringnotes redirect on http://{redirect}");
    }
    if let Some(peer) = shared.cluster.bound.get() {
        println!("uringnotes peer protocol on {peer}");
    }
    let _ = std::io::stdout().flush();
    crate::sd_notify::notify("READY=1");

    loop {
        match events.recv() {
            Ok(Event::Signal(sig)) if sig == libc::SIGHUP => {
                crate::logging::reload_from_config(shared.config.config_file.as_deref());
                if let Some(tls) = &shared.tls {
                    reload_tls(tls);
                }
            }
            Ok(Event::Signal(sig)) => {
                tracing::info!(signal = sig, "shutting down: finishing in-flight requests");
                crate::sd_notify::notify("STOPPING=1");
                watchdog.stop();
                wait_stopped(&events, stop_wait);
                tracing::info!("stopped");
                return Ok(());
            }
            Ok(Event::Watchdog(Notice::Escalate {
                core,
                reason,
                verdict,
            })) => {
                // The watchdog is already stopping every shard.
                wait_stopped(&events, stop_wait);
                return Err(ServerError::GaveUp {
                    core,
                    reason,
                    verdict,
                });
            }
            Ok(Event::Watchdog(Notice::Stopped)) => return Err(ServerError::WatchdogDied),
            Ok(Event::Watchdog(other)) => {
                tracing::debug!(notice = ?other, "watchdog notice");
            }
            Err(_) => return Err(ServerError::WatchdogDied),
        }
    }
}

/// Reads the certificate and key for HTTPS (when configured), refusing a
/// pair that cannot be served; logs what will be served.
fn start_tls(config: &Config) -> Result<Option<Arc<ServerTls>>, ServerError> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let (tls, pair) = ServerTls::new(cert, key).map_err(|e| ServerError::Tls(e.to_string()))?;
    log_certificate("serving the TLS certificate", &pair);
    Ok(Some(Arc::new(tls)))
}

/// SIGHUP: the certificate and key are read again; new handshakes use the
/// new pair if it is good, and the old one stays if not.
fn reload_tls(tls: &ServerTls) {
    match tls.reload() {
        Ok(pair) => log_certificate(
            "SIGHUP: TLS certificate reloaded; new handshakes use it",
            &pair,
        ),
        Err(e) => tracing::error!(
            error = %e,
            "SIGHUP: TLS certificate not reloaded; new handshakes keep using the previous one"
        ),
    }
}

fn log_certificate(what: &str, pair: &CertPair) {
    let leaf = pair.leaf();
    let now = certs::now_unix();
    tracing::info!(
        file = %pair.cert_path.display(),
        subject = %leaf.subject,
        issuer = %leaf.issuer,
        serial = %leaf.serial,
        not_after = %certs::unix_date(leaf.not_after_unix),
        days_left = leaf.days_left(now),
        chain = pair.chain.len(),
        "{what}"
    );
    if let Err(why) = certs::chain_order(&pair.chain) {
        tracing::warn!(file = %pair.cert_path.display(), "TLS certificate chain out of order: {why}");
    }
    if leaf.days_left(now) < certs::EXPIRY_WARN_DAYS {
        tracing::warn!(
            file = %pair.cert_path.display(),
            days_left = leaf.days_left(now),
            "the TLS certificate expires soon: is renewal working?"
        );
    }
}

/// Waits (bounded) for the watchdog to report that every shard stopped.
fn wait_stopped(events: &mpsc::Receiver<Event>, wait: Duration) {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(Event::Watchdog(Notice::Stopped)) => return,
            Ok(_) => {}
            Err(_) => {
                tracing::error!("shards did not stop in time; exiting anyway");
                return;
            }
        }
    }
}

fn spawn_signal_thread(events: mpsc::Sender<Event>) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    match signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(mut signals) => {
            let _ = std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || {
                    for sig in signals.forever() {
                        if events.send(Event::Signal(sig)).is_err() {
                            break;
                        }
                    }
                });
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers; SIGTERM will not shut down gracefully")
        }
    }
}

/// The CPUs to pin shards to: those listed in `cpus`, else the first
/// `cores` of those this process may run on (all of them for 0).
fn select_cpus(cores: usize, cpus: &[usize]) -> Result<Vec<usize>, ServerError> {
    let available: Vec<usize> = core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_default();
    if available.is_empty() {
        return Err(ServerError::Cores(
            "cannot list the CPUs this process may run on".into(),
        ));
    }
    if !cpus.is_empty() {
        if let Some(bad) = cpus.iter().find(|c| !available.contains(c)) {
            return Err(ServerError::Cores(format!(
                "--cpus names CPU {bad}, which this process may not run on (allowed: {available:?})"
            )));
        }
        if cores != 0 && cores != cpus.len() {
            return Err(ServerError::Cores(format!(
                "--cores {cores} disagrees with --cpus, which lists {} CPUs",
                cpus.len()
            )));
        }
        return Ok(cpus.to_vec());
    }
    if cores == 0 {
        return Ok(available);
    }
    if cores > available.len() {
        return Err(ServerError::Cores(format!(
            "--cores {cores} asks for more cores than the {} this process may run on",
            available.len()
        )));
    }
    Ok(available[..cores].to_vec())
}

/// The power-cut harness's experiment: leave out the syncs named in
/// `URINGNOTES_UNSAFE_SKIP_SYNC` (`store/durability.rs`). Refused without
/// `--fault-injection`, so a stray variable cannot make a production
/// server lose acknowledged notes.
fn skip_syncs_for_experiment(config: &Config) -> Result<(), ServerError> {
    let Some(list) = std::env::var_os(durability::SKIP_SYNC_ENV) else {
        return Ok(());
    };
    let list = list.to_string_lossy();
    let steps = durability::parse_steps(&list).map_err(ServerError::Config)?;
    if steps.is_empty() {
        return Ok(());
    }
    if !config.fault_injection {
        return Err(ServerError::Config(format!(
            "{} is set ({list}) but --fault-injection is not: refusing to run without those syncs",
            durability::SKIP_SYNC_ENV
        )));
    }
    let names: Vec<&str> = steps.iter().map(|s| s.name()).collect();
    tracing::warn!(
        skipped = %names.join(","),
        "UNSAFE experiment: these syncs are left out; acknowledged notes can be lost on power failure"
    );
    durability::skip(&steps);
    Ok(())
}

fn log_recovery(report: &recovery::RecoveryReport) {
    tracing::info!(
        segments = report.segments,
        records = report.records,
        bytes = report.bytes,
        elapsed_ms = report.elapsed_ms,
        "log recovered"
    );
    for (path, offset, bytes) in &report.truncated {
        tracing::warn!(file = %path.display(), offset, bytes, "cut a torn or corrupt tail off a log segment");
    }
    for (path, offset, bytes) in &report.skipped {
        tracing::error!(file = %path.display(), offset, bytes, "skipped a damaged range inside a log segment; the records in it are not served");
    }
    for (path, why) in &report.rejected {
        tracing::error!(file = %path.display(), why = %why, "ignored a file that is not a readable log segment");
    }
    if report.duplicates > 0 {
        tracing::info!(duplicates = report.duplicates, "ignored duplicate records");
    }
}
