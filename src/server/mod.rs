//! Starting and stopping the server: the main thread's job.
//!
//! The main thread opens the data directory, recovers the log, binds one
//! listening socket per core and starts one pinned glommio executor per core
//! (`shard.rs`). After that it serves no traffic: it waits for events
//! (a shard became ready, a shard exited, a signal) and decides what the
//! process does (report, shut down, exit with a status).
//!
//! - [`shard`]: one core's state and tasks.
//! - [`conn`]: the HTTP connection loop.
//! - [`conn_table`]: connection deadlines and limits.
//! - [`inbox`]: cross-core lock-free mailboxes.
//! - [`bufpool`]: per-core buffer pools.
//! - [`listener`]: SO_REUSEPORT listening sockets.

pub mod bufpool;
pub mod conn;
pub mod conn_table;
pub mod inbox;
pub mod listener;
pub mod shard;

use std::io::Write as _;
use std::os::fd::IntoRawFd;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

use crate::config::{Config, FsyncPolicy};
use crate::store::{recovery, DataDir, StoreError};
use inbox::Inbox;
use shard::{NodeInfo, Shared};

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
    #[error("shard {core} failed to start: {reason}")]
    ShardStart { core: usize, reason: String },
    #[error("shard {core} stopped unexpectedly: {reason}")]
    ShardDied { core: usize, reason: String },
}

/// What the main thread waits for.
enum Event {
    Ready(usize),
    Exited {
        core: usize,
        outcome: Result<(), String>,
    },
    Signal(i32),
}

/// Time allowed for every shard to come up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the server until SIGTERM/SIGINT (Ok) or a fatal failure (Err).
pub fn run(config: Config) -> Result<(), ServerError> {
    if config.fsync == FsyncPolicy::Never {
        tracing::warn!("fsync = never: acknowledged notes can be lost on a crash or power failure (benchmarking only)");
    }
    let data = DataDir::open(&config.data_dir)?;
    let recovered = recovery::recover(&data.path, true)?;
    log_recovery(&recovered.report);
    let cpus = select_cpus(config.cores)?;
    raise_nofile_limit();
    let (sockets, bound) = listener::bind_all(config.listen, cpus.len(), config.listen_backlog)
        .map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;

    let cores = cpus.len();
    let shared = Arc::new(Shared {
        node: NodeInfo {
            id: data.node_id,
            name: config.node_name.clone(),
        },
        data_dir: data.path.clone(),
        listen: bound,
        cpus: cpus.clone(),
        inboxes: (0..cores).map(|_| Inbox::default()).collect(),
        metrics: crate::metrics::new_all(cores),
        heartbeats: (0..cores).map(|_| AtomicU64::new(0)).collect(),
        recovered_log_bytes: recovered.report.bytes,
        recovered: recovered.index,
        next_segment_by_core: recovered.next_segment_by_core,
        started: Instant::now(),
        config,
    });

    let (events_tx, events) = mpsc::channel::<Event>();
    spawn_signal_thread(events_tx.clone());
    for (core, (cpu, socket)) in cpus.iter().zip(sockets).enumerate() {
        spawn_shard(
            Arc::clone(&shared),
            core,
            *cpu,
            socket.into_raw_fd(),
            events_tx.clone(),
        )?;
    }

    let mut ready = 0;
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while ready < cores {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(Event::Ready(core)) => {
                tracing::debug!(core, "shard ready");
                ready += 1;
            }
            Ok(Event::Exited { core, outcome }) => {
                shutdown_all(&shared);
                return Err(ServerError::ShardStart {
                    core,
                    reason: outcome
                        .err()
                        .unwrap_or_else(|| "exited during start-up".into()),
                });
            }
            Ok(Event::Signal(_)) => {
                shutdown_all(&shared);
                return Ok(());
            }
            Err(_) => {
                shutdown_all(&shared);
                return Err(ServerError::ShardStart {
                    core: ready,
                    reason: "timed out starting".into(),
                });
            }
        }
    }
    tracing::info!(
        listen = %bound,
        cores,
        cpus = ?cpus,
        node = %format_args!("{:08x}", shared.node.id),
        name = %shared.node.name,
        notes = shared.recovered.len(),
        "uringnotes serving"
    );
    // The one line on stdout: scripts and tests wait for it.
    println!("uringnotes listening on http://{bound}");
    let _ = std::io::stdout().flush();

    let mut exited = 0usize;
    loop {
        match events.recv() {
            Ok(Event::Signal(sig)) if sig == libc::SIGHUP => {
                tracing::info!("SIGHUP: nothing to reload in this build");
            }
            Ok(Event::Signal(sig)) => {
                tracing::info!(signal = sig, "shutting down: finishing in-flight requests");
                shutdown_all(&shared);
                let grace = Duration::from_millis(shared.config.shutdown_timeout_ms)
                    + Duration::from_secs(5);
                let deadline = Instant::now() + grace;
                while exited < cores {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match events.recv_timeout(left) {
                        Ok(Event::Exited { .. }) => exited += 1,
                        Ok(_) => {}
                        Err(_) => {
                            tracing::error!("shards did not stop in time; exiting anyway");
                            break;
                        }
                    }
                }
                tracing::info!("stopped");
                return Ok(());
            }
            Ok(Event::Exited { core, outcome }) => {
                let reason = match outcome {
                    Ok(()) => "its executor returned".to_string(),
                    Err(e) => e,
                };
                shutdown_all(&shared);
                return Err(ServerError::ShardDied { core, reason });
            }
            Ok(Event::Ready(_)) => {}
            Err(_) => return Ok(()),
        }
    }
}

fn shutdown_all(shared: &Shared) {
    for inbox in shared.inboxes.iter() {
        inbox.request_shutdown();
    }
}

fn spawn_shard(
    shared: Arc<Shared>,
    core: usize,
    cpu: usize,
    listener_fd: std::os::fd::RawFd,
    events: mpsc::Sender<Event>,
) -> Result<(), ServerError> {
    let ready_tx = events.clone();
    let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name(&format!("shard-{core}"))
        .spawn(move || async move {
            let _ = ready_tx.send(Event::Ready(core));
            shard::run(shared, core, listener_fd).await;
        })
        .map_err(|e| ServerError::ShardStart {
            core,
            reason: e.to_string(),
        })?;
    // glommio reports executor start-up failures (e.g. the memlock limit)
    // only on join: a thread per shard joins it and reports the outcome.
    std::thread::Builder::new()
        .name(format!("join-{core}"))
        .spawn(move || {
            let outcome = handle.join().map_err(|e| e.to_string());
            let _ = events.send(Event::Exited { core, outcome });
        })
        .map_err(|e| ServerError::ShardStart {
            core,
            reason: e.to_string(),
        })?;
    Ok(())
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

/// The CPUs to pin shards to: the first `cores` of those this process may run on.
fn select_cpus(cores: usize) -> Result<Vec<usize>, ServerError> {
    let available: Vec<usize> = core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_default();
    if available.is_empty() {
        return Err(ServerError::Cores(
            "cannot list the CPUs this process may run on".into(),
        ));
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

/// Raises the soft open-files limit to the hard limit: every connection is
/// a descriptor, and the default soft limit (1024) is far below what one core
/// can hold.
pub(crate) fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
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
