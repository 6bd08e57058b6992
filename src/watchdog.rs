//! The watchdog: supervises the shards the way an OTP supervisor
//! (`one_for_one`) supervises its workers, so that a failed shard is
//! replaced and the rest of the server does not notice.
//!
//! # Where it runs
//!
//! On its own thread ("watchdog"), which serves no traffic and is not
//! pinned: it must keep running while a shard's core is stuck. It is a plain
//! thread rather than a glommio executor because all it does is wait on a
//! channel with a timeout; an executor would add a ring and a task queue,
//! and be exposed to the very failures it watches for. The main thread stays
//! the process owner: it handles signals and turns the watchdog's verdicts
//! into an exit status (`node.rs`).
//!
//! # What it watches
//!
//! Each shard runs as an *incarnation* (`shard/incarnation.rs`): one
//! executor thread pinned to the shard's CPU. The watchdog learns of
//! failures three ways:
//! - **Crash report.** A panic in shard machinery is caught at the task
//!   boundary (`shard/tasks.rs`); the shard reports `Crashed` at once and
//!   then shuts itself down in order (closes its sockets, fails pending
//!   writes, ends every task).
//! - **Thread exit.** A join thread per incarnation reports when the
//!   executor thread ends. An end the watchdog did not ask for is a failure:
//!   in particular a panic that escaped every `catch_unwind` and unwound the
//!   thread. The panic hook ([`install_panic_hook`]) logs every panic with
//!   its thread (`shard-N-…`) and location and keeps the message, so the
//!   failure reason names it. Whenever an incarnation's thread ends, or it
//!   is replaced because it stalled, the other cores are told
//!   (`CoreMsg::ShardLost`): requests they dispatched to it that it had
//!   taken are answered 502 at once (`dispatch::fail_lost`) instead of at
//!   the dispatch timeout or when the stuck thread wakes up.
//! - **Stall.** Every shard's sweeper bumps a heartbeat every
//!   `SWEEP_INTERVAL_MS` (100 ms). A heartbeat that has not moved for
//!   `--stall-timeout` means the executor thread is stuck (a blocking call,
//!   an endless loop in a task, a deadlock).
//!
//! # What a restart is
//!
//! On a failure the watchdog, in this order:
//! 1. **fences** the incarnation's lease on the core's note stream
//!    (`store/lease.rs`), getting back the last sequence number it handed
//!    out. From then on the old executor can number no note, write no byte
//!    to the log, and must hand any note it still finishes to its
//!    successor. This is what makes it safe to start a successor while the
//!    old thread may still be alive;
//! 2. **cuts it off**: shuts down its listening socket through the
//!    watchdog's own duplicate of it (`shutdown(SHUT_RD)` on a listener
//!    takes it out of the `SO_REUSEPORT` group, so the kernel sends new
//!    connections to the other cores at once, and fails its pending
//!    accepts), and shuts down every connection in its socket registry, so
//!    their clients see them end instead of hanging. Connections of other
//!    shards are not touched;
//! 3. checks the **restart intensity**: more than `--max-restarts` restarts
//!    within `--restart-window` (across all shards, as in OTP) means
//!    restarting does not help; the watchdog reports the shard and the
//!    reason to the main thread, which shuts down and exits with status 3
//!    so that systemd restarts the whole process;
//! 4. **starts a successor**: a new executor pinned to the same CPU, with a
//!    freshly bound `SO_REUSEPORT` listener, a lease starting after the old
//!    one's last number, and a new segment for its writes. Before it
//!    serves, it rereads its own core's segments written since start-up,
//!    without repair (`store/recovery.rs`, `rescan_core_since`), into the
//!    process's one shared index (the rest of the log is in it already).
//!    The core's inbox queue outlives incarnations, so notes other cores
//!    publish during the rescan are waiting for it. Everything acknowledged
//!    before the failure was durable before it was acknowledged, so it is in
//!    the log, and in the index.
//!
//! Once the old thread has ended, the watchdog closes any socket still in
//! its registry. glommio does not reliably drop the tasks still pending
//! when an executor returns or unwinds: tearing it down drops some (those
//! whose wakers it holds) and leaks others (reference cycles). Measured with
//! glommio 0.9: an unwound executor kept its listener and connections open,
//! unserved, and leaked six descriptors and its blocking-pool thread. So
//! every socket's owner takes it out of the registry *before* closing it,
//! in its `Drop`, and what is still registered after the thread ended was
//! never dropped and never will be: the watchdog's close is its only one.
//! (Closing a descriptor its owner closes too is not a harmless leak fix:
//! the number may belong to another socket by then, or to an executor's
//! eventfd, whose loss stalls that executor.) The shards avoid the leak on
//! every path they control by ending all their tasks before their executor
//! returns; only a panic that escapes to glommio leaves one behind (logged).
//! Independently of all this, glommio 0.9 leaks one eventfd per executor
//! that ends, even an empty one (measured: start and join an empty
//! executor four times, four eventfds remain): a restart costs one
//! descriptor.
//!
//! # Stalls, and why a stuck thread is not killed
//!
//! A thread cannot be killed safely, and glommio has no way to interrupt
//! one. So a stalled incarnation is *abandoned*: fenced, cut off and
//! replaced as above, while its thread stays blocked. Starting the
//! successor on the same CPU works while the stuck executor still exists
//! (checked by experiment: `Placement::Fixed` only sets an affinity). When
//! the old thread wakes up it finds its lease fenced and stops: it accepts
//! nothing (its listener was shut down), its connections were already
//! ended, it writes nothing, it stops counting in the core's metrics, and it
//! never registers for the core's inbox again.
//!
//! One limit: a stalled thread's io_uring keeps working in the kernel. An
//! accept the executor had submitted before it stalled still completes, so
//! the first connection that reaches its listener during the stall (before
//! the watchdog shuts the listener down) is accepted for the stuck thread
//! and waits until that thread wakes up and closes it. Every other
//! connection queued there is reset when the listener is shut down. The
//! same holds, for a few microseconds, for a thread that is unwinding.
//!
//! In a cluster, shard 0 also runs the cluster (peer listener, membership
//! socket, peer connections). Their sockets are in the same registry, so a
//! failed shard 0's cluster ends with it: peers see their connections end,
//! and the successor starts a new cluster on the same port, with a new
//! SWIM incarnation. To its peers that is a restart of the node: they
//! reconnect, exchange version vectors and send each other what is
//! missing. The other shards keep serving meanwhile.
//!
//! # glommio 0.9 behaviour relied on (read in its source, then measured)
//!
//! - `task/raw.rs`, `RawTask::run`: a task whose poll panics is closed and
//!   the panic propagates into the executor's run loop, out of
//!   `LocalExecutor::run` and the executor thread; `ExecutorJoinHandle::join`
//!   returns an error ("thread panicked"). The process survives when the
//!   task is in the default queue (it aborts for other queues, #689).
//! - `executor/multitask.rs`, `spawn_and_run`: `spawn_local` polls the new
//!   task once right away, inside the spawner's poll; a panic in that first
//!   poll unwinds into the spawner (so `fault.rs`'s uncaught panic waits
//!   for its second poll).
//! - `io/glommio_file.rs`, `Drop for GlommioFile`: dropping an open file
//!   only queues its close on the ring; an executor that ends right after
//!   never closes it (the log writer closes its segment explicitly).
//! - `net/tcp_socket.rs`, `shared_accept`: a non-blocking `accept(2)`, then
//!   an io_uring accept; hence the limit above, and the shard shutting its
//!   listener down rather than dropping a pending accept (an accept already
//!   in the kernel completes anyway, and glommio drops that descriptor
//!   without closing it).
//! - `sys/mod.rs`, `ReactorGlobalState`: executor ids only grow, so a
//!   successor never shares an id with a dead executor's leaked tasks.
//! - `Placement::Fixed(cpu)` sets an affinity and nothing else: a second
//!   executor on a CPU whose executor is stuck starts and serves.
//!
//! # What panics never do
//!
//! They never take the process down: every task runs in glommio's default
//! task queue (a panic in a non-default queue aborts the process,
//! DataDog/glommio#689), nothing uses `spawn_blocking` (a panicking closure
//! hangs its caller), a request handler's panic closes only its connection
//! (`shard/conn.rs`), and a shard's panic stops only that shard.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant, SystemTime};

use glommio::{LocalExecutorBuilder, Placement};

use crate::shard::inbox::CoreMsg;
use crate::shard::incarnation::{Event, ExitReason, Failure, Incarnation, Report};
use crate::shard::listeners::{Bound, CoreSockets};
use crate::shard::{self, Shared};
use crate::store::lease::StreamLease;

/// I/O memory each shard's executor preallocates and registers with
/// io_uring (pinned: it counts in RSS and against the memlock limit).
/// glommio reserves it for direct (DMA) file I/O and defaults to 10 MiB;
/// uringnotes writes its log through buffered files, and only the SWIM
/// datagrams of the cluster draw on it (a few KiB each), so 1 MiB keeps 9 MiB
/// of pinned memory per core for the notes.
pub const IO_MEMORY_BYTES: usize = 1 << 20;

/// Time allowed for a shard to become ready, at start-up or after a restart
/// (a restart rebuilds the index from the log first).
pub const SHARD_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Panic messages kept for the join threads to pick up.
const PANIC_MESSAGES_MAX: usize = 64;

/// What the watchdog tells the main thread.
#[derive(Debug)]
pub enum Notice {
    /// Every shard is serving (once, at start-up).
    AllReady,
    /// A shard failed before every shard was serving: no restarts then.
    StartFailed { core: usize, reason: String },
    /// Restarting is not helping (or not possible): exit so that the
    /// service manager restarts the process.
    Escalate {
        core: usize,
        /// Why the shard failed.
        reason: String,
        /// Why it is not restarted.
        verdict: String,
    },
    /// Every shard has stopped (or the stop deadline passed).
    Stopped,
}

/// The supervision limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub stall_timeout: Duration,
    pub max_restarts: u32,
    pub restart_window: Duration,
    /// Time allowed to shards to stop on `Event::Stop`.
    pub stop_timeout: Duration,
}

impl Policy {
    pub fn from_config(config: &crate::config::Config) -> Policy {
        Policy {
            stall_timeout: Duration::from_millis(config.stall_timeout_ms),
            max_restarts: config.max_restarts,
            restart_window: Duration::from_millis(config.restart_window_ms),
            stop_timeout: Duration::from_millis(config.shutdown_timeout_ms)
                + Duration::from_secs(5),
        }
    }

    /// How often the watchdog looks at heartbeats: a tenth of the stall
    /// timeout, within 10..=100 ms.
    fn tick(&self) -> Duration {
        (self.stall_timeout / 10).clamp(Duration::from_millis(10), Duration::from_millis(100))
    }
}

/// OTP's restart intensity: at most `max` restarts within `window`.
#[derive(Debug)]
pub struct RestartIntensity {
    max: u32,
    window: Duration,
    /// Times of the restarts within the window, oldest first.
    recent: VecDeque<Instant>,
}

impl RestartIntensity {
    pub fn new(max: u32, window: Duration) -> RestartIntensity {
        RestartIntensity {
            max,
            window,
            recent: VecDeque::new(),
        }
    }

    /// Records a restart at `now` if the limit allows it; false when this
    /// restart would be one more than `max` within the window.
    pub fn allow(&mut self, now: Instant) -> bool {
        while let Some(&oldest) = self.recent.front() {
            if now.duration_since(oldest) >= self.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= self.max as usize {
            return false;
        }
        self.recent.push_back(now);
        true
    }

    /// Restarts counted in the current window.
    pub fn recent(&self) -> usize {
        self.recent.len()
    }
}

/// Tells from successive heartbeat readings how long a shard has been silent.
#[derive(Debug)]
pub struct StallClock {
    last_beat: u64,
    since: Instant,
}

impl StallClock {
    pub fn new(beat: u64, now: Instant) -> StallClock {
        StallClock {
            last_beat: beat,
            since: now,
        }
    }

    /// How long the heartbeat has not moved, as of `now`.
    pub fn observe(&mut self, beat: u64, now: Instant) -> Duration {
        if beat != self.last_beat {
            self.last_beat = beat;
            self.since = now;
        }
        now.saturating_duration_since(self.since)
    }
}

/// Installs a panic hook that logs every panic as one line with its thread
/// and location, and keeps the message so the watchdog can name the panic
/// that ended a shard's thread.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = shard::panic_message(info.payload());
        let thread = std::thread::current();
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        // Like the default hook: a backtrace when RUST_BACKTRACE asks for one.
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(
                thread = thread.name().unwrap_or("unnamed"),
                location = %location,
                panic = %message,
                "panic\n{backtrace}"
            );
        } else {
            tracing::error!(
                thread = thread.name().unwrap_or("unnamed"),
                location = %location,
                panic = %message,
                "panic"
            );
        }
        if let Ok(mut kept) = panic_messages().lock() {
            if kept.len() >= PANIC_MESSAGES_MAX {
                kept.pop_front();
            }
            kept.push_back((thread.id(), message));
        }
    }));
}

fn panic_messages() -> &'static Mutex<VecDeque<(ThreadId, String)>> {
    static KEPT: Mutex<VecDeque<(ThreadId, String)>> = Mutex::new(VecDeque::new());
    &KEPT
}

/// The last panic message of a thread, if the hook kept one.
fn take_panic_message(thread: ThreadId) -> Option<String> {
    let mut kept = panic_messages().lock().ok()?;
    let at = kept.iter().rposition(|(id, _)| *id == thread)?;
    kept.remove(at).map(|(_, m)| m)
}

/// The main thread's handle on the running watchdog.
pub struct WatchdogHandle {
    events: mpsc::Sender<Event>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WatchdogHandle {
    /// Asks the watchdog to stop every shard; it answers `Notice::Stopped`.
    pub fn stop(&self) {
        let _ = self.events.send(Event::Stop);
    }
}

impl Drop for WatchdogHandle {
    fn drop(&mut self) {
        self.stop();
        // The watchdog ends on its own once it has stopped the shards (or
        // its deadline passed); don't wait for it here.
        drop(self.thread.take());
    }
}

/// Starts one shard per listening socket in `sockets` (one per core, in
/// core order) and the watchdog thread that supervises them. Notices go to
/// `notify`.
pub fn start(
    shared: Arc<Shared>,
    sockets: Vec<CoreSockets>,
    notify: Box<dyn Fn(Notice) + Send>,
) -> Result<WatchdogHandle, String> {
    let (events_tx, events) = mpsc::channel::<Event>();
    let policy = Policy::from_config(&shared.config);
    let mut watchdog = Watchdog {
        shared,
        policy,
        intensity: RestartIntensity::new(policy.max_restarts, policy.restart_window),
        events_tx: events_tx.clone(),
        children: Vec::new(),
        phase: Phase::Starting {
            deadline: Instant::now() + SHARD_START_TIMEOUT,
        },
        notify,
    };
    for (core, socket) in sockets.into_iter().enumerate() {
        let child = watchdog.spawn_child(core, 0, 0, Some(socket))?;
        watchdog.children.push(child);
    }
    let thread = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || watchdog.run(events))
        .map_err(|e| format!("cannot start the watchdog thread: {e}"))?;
    Ok(WatchdogHandle {
        events: events_tx,
        thread: Some(thread),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for every shard's first `Ready`; a failure now is fatal.
    Starting {
        deadline: Instant,
    },
    Supervising,
    /// No more restarts; waiting for the shards to exit.
    Stopping {
        deadline: Instant,
    },
}

/// The watchdog's view of one core.
struct Child {
    incarnation: Arc<Incarnation>,
    /// The watchdog's own duplicate of the incarnation's listening socket:
    /// shutting it down stops the shard's accepts without touching the
    /// shard's descriptor (which the shard may be closing at that moment).
    listener: Option<socket2::Socket>,
    started_at: Instant,
    /// When the failure this incarnation replaces was detected.
    replaces_failure_at: Option<Instant>,
    ready: bool,
    clock: StallClock,
    /// Failed (and fenced); a successor, if any, has replaced this child.
    failed: bool,
    /// Its thread has ended.
    exited: bool,
}

struct Watchdog {
    shared: Arc<Shared>,
    policy: Policy,
    intensity: RestartIntensity,
    /// Handed to every incarnation for its reports.
    events_tx: mpsc::Sender<Event>,
    /// The current incarnation of each core.
    children: Vec<Child>,
    phase: Phase,
    notify: Box<dyn Fn(Notice) + Send>,
}

impl Watchdog {
    fn run(mut self, events: mpsc::Receiver<Event>) {
        let tick = self.policy.tick();
        loop {
            match events.recv_timeout(tick) {
                Ok(Event::Shard {
                    incarnation,
                    report,
                }) => self.on_report(incarnation, report),
                Ok(Event::Stop) => self.stop_all(),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Unreachable while `self.events_tx` lives.
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            match self.phase {
                Phase::Starting { deadline } => {
                    if now >= deadline {
                        let core = self.children.iter().position(|c| !c.ready).unwrap_or(0);
                        self.start_failed(core, "did not become ready in time".into());
                    }
                }
                Phase::Supervising => self.check_children(now),
                Phase::Stopping { deadline } => {
                    let waiting = self.children.iter().any(|c| !c.exited && !c.failed);
                    if !waiting || now >= deadline {
                        if waiting {
                            tracing::error!("shards did not stop in time");
                        }
                        (self.notify)(Notice::Stopped);
                        return;
                    }
                }
            }
        }
    }

    fn is_current(&self, incarnation: &Arc<Incarnation>) -> bool {
        self.children
            .get(incarnation.core)
            .is_some_and(|c| Arc::ptr_eq(&c.incarnation, incarnation))
    }

    fn on_report(&mut self, incarnation: Arc<Incarnation>, report: Report) {
        let core = incarnation.core;
        let current = self.is_current(&incarnation);
        match report {
            Report::Ready => {
                if !current {
                    return;
                }
                let now = Instant::now();
                let child = &mut self.children[core];
                child.ready = true;
                child.clock = StallClock::new(incarnation.heartbeat(), now);
                if let Some(failed_at) = child.replaces_failure_at {
                    tracing::info!(
                        shard = core,
                        cpu = incarnation.cpu,
                        generation = incarnation.generation,
                        restart_ms = now.duration_since(failed_at).as_millis() as u64,
                        "shard restarted: serving again"
                    );
                }
                if matches!(self.phase, Phase::Starting { .. })
                    && self.children.iter().all(|c| c.ready)
                {
                    self.phase = Phase::Supervising;
                    (self.notify)(Notice::AllReady);
                }
            }
            Report::Crashed(reason) => {
                if current {
                    self.fail(core, reason);
                }
            }
            Report::Exited(outcome) => {
                // The thread is gone: whatever sockets it left registered
                // belong to tasks glommio will never drop.
                let closed = incarnation.sockets.close_leaked();
                if closed > 0 {
                    tracing::warn!(
                        shard = core,
                        generation = incarnation.generation,
                        connections = closed,
                        "closed connections that a shard's ended executor left open (glommio did not drop their tasks)"
                    );
                }
                self.tell_others_lost(core, incarnation.generation);
                if !current {
                    return;
                }
                self.children[core].exited = true;
                if matches!(self.phase, Phase::Stopping { .. }) || self.children[core].failed {
                    return;
                }
                let reason = match outcome {
                    Ok(ExitReason::Crashed(reason)) => reason,
                    Ok(ExitReason::Stopped) => "its executor stopped unexpectedly".to_string(),
                    Ok(ExitReason::Superseded) => "its executor stopped as replaced".to_string(),
                    Err(reason) => reason,
                };
                self.fail(core, reason);
            }
        }
    }

    /// Tells the other cores that incarnation `generation` of `core` will
    /// answer nothing more: requests they dispatched to it and it had taken
    /// are answered now instead of at the dispatch timeout (see
    /// `dispatch::fail_lost`; a full inbox keeps the timeout).
    fn tell_others_lost(&self, core: usize, generation: u64) {
        if matches!(self.phase, Phase::Stopping { .. }) {
            return;
        }
        for (other, inbox) in self.shared.inboxes.iter().enumerate() {
            if other != core {
                inbox.try_send_now(CoreMsg::ShardLost { core, generation });
            }
        }
    }

    /// Heartbeats of serving shards; start-up time of restarting ones.
    fn check_children(&mut self, now: Instant) {
        for core in 0..self.children.len() {
            let child = &mut self.children[core];
            if child.failed {
                continue;
            }
            if child.ready {
                let silent = child.clock.observe(child.incarnation.heartbeat(), now);
                if silent >= self.policy.stall_timeout {
                    let reason = format!(
                        "stalled: no heartbeat for {} ms (stall timeout {} ms)",
                        silent.as_millis(),
                        self.policy.stall_timeout.as_millis()
                    );
                    let generation = child.incarnation.generation;
                    self.fail(core, reason);
                    // The stuck thread cannot answer the requests it took
                    // for the other cores any more (it is fenced: a write
                    // would fail anyway): they are answered now, not when
                    // it wakes up, however long that takes.
                    self.tell_others_lost(core, generation);
                }
            } else if now.duration_since(child.started_at) > SHARD_START_TIMEOUT {
                let reason = format!(
                    "did not become ready within {} s of its restart",
                    SHARD_START_TIMEOUT.as_secs()
                );
                self.fail(core, reason);
            }
        }
    }

    /// Handles a failure of core `core`'s current incarnation: fence, cut
    /// off, then restart or escalate (see the module doc).
    fn fail(&mut self, core: usize, reason: String) {
        let now = Instant::now();
        let child = &mut self.children[core];
        if child.failed {
            return;
        }
        child.failed = true;
        let incarnation = Arc::clone(&child.incarnation);
        tracing::error!(
            shard = core,
            cpu = incarnation.cpu,
            generation = incarnation.generation,
            reason = %reason,
            "shard failed"
        );
        if let Ok(mut supervision) = self.shared.cores[core].supervision.lock() {
            supervision.last_failure = Some(Failure {
                reason: reason.clone(),
                at: SystemTime::now(),
            });
        }

        // 1. Fence: the old executor can number and write nothing more.
        let seq_last = incarnation.lease.fence();
        // 2. Cut it off: no new connections, its connections ended.
        if let Some(listener) = child.listener.take() {
            // SAFETY: shutdown(2) on our own duplicate of the listener.
            unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RD) };
        }
        let cut = incarnation.sockets.shut_down_all();
        tracing::info!(
            shard = core,
            connections = cut,
            "closed the failed shard's listener and connections"
        );

        match self.phase {
            Phase::Starting { .. } => return self.start_failed(core, reason),
            Phase::Stopping { .. } => return,
            Phase::Supervising => {}
        }
        // 3. Restart intensity.
        let verdict = if !self.intensity.allow(now) {
            Some(format!(
                "that is more than --max-restarts {} restarts within --restart-window {} ms: \
                 restarting is not helping",
                self.policy.max_restarts,
                self.policy.restart_window.as_millis()
            ))
        } else {
            None
        };
        if let Some(verdict) = verdict {
            return self.escalate(core, reason, verdict);
        }
        // 4. A successor on the same CPU.
        match self.spawn_child(core, incarnation.generation + 1, seq_last, None) {
            Ok(mut successor) => {
                successor.replaces_failure_at = Some(now);
                self.children[core] = successor;
                self.shared.metrics[core].add_shard_restart();
                if let Ok(mut supervision) = self.shared.cores[core].supervision.lock() {
                    supervision.restarts += 1;
                }
                tracing::info!(
                    shard = core,
                    generation = incarnation.generation + 1,
                    "restarting shard"
                );
            }
            Err(e) => self.escalate(core, reason, format!("its restart failed: {e}")),
        }
    }

    /// Gives up: the main thread is told why, every shard is stopped, and
    /// the process exits non-zero so that its service manager restarts it.
    fn escalate(&mut self, core: usize, reason: String, verdict: String) {
        tracing::error!(
            shard = core,
            reason = %reason,
            verdict = %verdict,
            "giving up on shard {core}"
        );
        (self.notify)(Notice::Escalate {
            core,
            reason,
            verdict,
        });
        self.stop_all();
    }

    fn start_failed(&mut self, core: usize, reason: String) {
        (self.notify)(Notice::StartFailed { core, reason });
        self.stop_all();
    }

    /// No more restarts; every shard is asked to shut down.
    fn stop_all(&mut self) {
        if matches!(self.phase, Phase::Stopping { .. }) {
            return;
        }
        self.phase = Phase::Stopping {
            deadline: Instant::now() + self.policy.stop_timeout,
        };
        for inbox in self.shared.inboxes.iter() {
            inbox.request_shutdown();
        }
    }

    /// Starts incarnation `generation` of core `core`: binds a listener
    /// (unless given one), starts a pinned executor running the shard, and
    /// a thread that reports when the executor's thread ends.
    fn spawn_child(
        &self,
        core: usize,
        generation: u64,
        seq_last: u64,
        sockets: Option<CoreSockets>,
    ) -> Result<Child, String> {
        let shared = &self.shared;
        let cpu = shared.cpus[core];
        let sockets = match sockets {
            Some(s) => s,
            None => {
                let bound = Bound {
                    public: shared.listen,
                    admin: shared.admin_listen,
                    redirect: shared.redirect_listen,
                };
                CoreSockets::bind(&bound, shared.config.listen_backlog)
                    .map_err(|e| e.to_string())?
            }
        };
        let watchdog_copy = sockets
            .public
            .try_clone()
            .map_err(|e| format!("cannot duplicate the listening socket: {e}"))?;
        let incarnation = Arc::new(Incarnation::new(
            core,
            cpu,
            generation,
            Arc::new(StreamLease::new(seq_last)),
            shared.config.connections_max_per_core,
            self.events_tx.clone(),
        ));
        // Registered before the executor exists: if it never adopts the
        // descriptors, the cleanup after its thread ends closes them.
        let (listener_fds, problems) = sockets.hand_over(&incarnation.sockets);
        for problem in problems {
            tracing::warn!(core, "{problem}");
        }
        let spawned = {
            let shared = Arc::clone(shared);
            let incarnation = Arc::clone(&incarnation);
            // Unpinned, `cpu` only numbers the shard (`Placement` in config.rs).
            let placement = if shared.pinned {
                Placement::Fixed(cpu)
            } else {
                Placement::Unbound
            };
            LocalExecutorBuilder::new(placement)
                .name(&format!("shard-{core}"))
                .io_memory(IO_MEMORY_BYTES)
                .spawn(move || async move { shard::run(shared, incarnation, listener_fds).await })
        };
        let handle = match spawned {
            Ok(handle) => handle,
            Err(e) => {
                incarnation.sockets.close_leaked();
                return Err(format!("cannot start an executor on cpu {cpu}: {e}"));
            }
        };
        // glommio reports executor start-up failures (e.g. the memlock
        // limit) only on join, and a thread that unwound only there too.
        let reporter = Arc::clone(&incarnation);
        std::thread::Builder::new()
            .name(format!("join-{core}-{generation}"))
            .spawn(move || {
                let thread = handle.thread().id();
                let outcome = handle.join().map_err(|e| match take_panic_message(thread) {
                    Some(panic) => format!("its executor thread panicked: {panic}"),
                    None => format!("its executor thread failed: {e}"),
                });
                reporter.report(Report::Exited(outcome));
            })
            .map_err(|e| format!("cannot start a join thread: {e}"))?;
        let now = Instant::now();
        Ok(Child {
            incarnation,
            listener: Some(watchdog_copy),
            started_at: now,
            replaces_failure_at: None,
            ready: false,
            clock: StallClock::new(0, now),
            failed: false,
            exited: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intensity_allows_max_restarts_per_window() {
        let t0 = Instant::now();
        let mut intensity = RestartIntensity::new(3, Duration::from_secs(10));
        assert!(intensity.allow(t0));
        assert!(intensity.allow(t0 + Duration::from_secs(1)));
        assert!(intensity.allow(t0 + Duration::from_secs(2)));
        assert!(
            !intensity.allow(t0 + Duration::from_secs(3)),
            "a fourth restart within 10 s exceeds 3"
        );
        // The first restart leaves the window at t0 + 10 s.
        assert!(intensity.allow(t0 + Duration::from_secs(10)));
        assert_eq!(intensity.recent(), 3);
    }

    #[test]
    fn zero_max_restarts_escalates_at_once() {
        let mut intensity = RestartIntensity::new(0, Duration::from_secs(10));
        assert!(!intensity.allow(Instant::now()));
    }

    #[test]
    fn stall_clock_measures_silence_since_the_last_change() {
        let t0 = Instant::now();
        let mut clock = StallClock::new(5, t0);
        assert_eq!(
            clock.observe(5, t0 + Duration::from_millis(300)),
            Duration::from_millis(300)
        );
        assert_eq!(
            clock.observe(6, t0 + Duration::from_millis(400)),
            Duration::ZERO
        );
        assert_eq!(
            clock.observe(6, t0 + Duration::from_millis(1500)),
            Duration::from_millis(1100)
        );
    }

    #[test]
    fn ticks_follow_the_stall_timeout_within_bounds() {
        let policy = |ms| Policy {
            stall_timeout: Duration::from_millis(ms),
            max_restarts: 5,
            restart_window: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(1),
        };
        assert_eq!(policy(1000).tick(), Duration::from_millis(100));
        assert_eq!(policy(300).tick(), Duration::from_millis(30));
        assert_eq!(policy(50).tick(), Duration::from_millis(10));
        assert_eq!(policy(60_000).tick(), Duration::from_millis(100));
    }
}
