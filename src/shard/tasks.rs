//! A shard's tasks: what runs on a core's executor, from the start of an
//! incarnation to its end.
//!
//! - [`run`]: the executor's main future. It builds the shard (its view of
//!   the shared index first: a restarted shard rereads its own core's
//!   segments written since start-up into it),
//!   spawns the machinery tasks, starts the cluster on core 0, runs the
//!   accept loop, and on the way out stops in order (drain or hard stop),
//!   ends every task and reports how it ended.
//! - the machinery tasks, each spawned through [`spawn_machinery`] so a
//!   panic in one crashes the shard in order instead of unwinding the
//!   thread: the log flusher (`store/writer.rs`), the inbox consumer
//!   ([`run_inbox`]) and the sweeper ([`run_sweeper`]: deadlines, the
//!   heartbeat, injected faults);
//! - one task per connection (`conn.rs`), spawned by the accept loop.
//!
//! The state these tasks share is the [`Shard`] (`state.rs`).

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::FutureExt as _;
use glommio::net::TcpListener;

use super::conn::{self, Listener};
use super::conn_table::now_ms;
use super::dispatch;
use super::inbox::{CoreMsg, Inbox};
use super::incarnation::{ExitReason, Incarnation, Report, SocketRegistry};
use super::listeners::ListenerFd;
use super::state::{Shard, Shared, Stop};
use crate::cluster::Cluster;
use crate::fault::FaultKind;
use crate::store::index::NoteRef;
use crate::store::note::Origin;
use crate::store::recovery;

/// How often the sweeper checks connection deadlines and beats the heartbeat.
pub const SWEEP_INTERVAL_MS: u64 = 100;
/// Notes the inbox consumer takes per lease check.
const INBOX_BATCH_MAX: usize = 256;
/// A crashed or replaced shard waits at most this long for its connection
/// tasks and its in-flight log write to end after shutting their sockets.
const HARD_STOP_WAIT_MS: u64 = 2_000;
/// Time allowed to the machinery tasks to end once the shard is done;
/// those still running then are cancelled (dropped on this executor).
const TASKS_END_WAIT_MS: u64 = 1_000;
/// Back-off after a failed accept (out of descriptors or memory), instead
/// of spinning; the connections already open keep being served meanwhile.
const ACCEPT_RETRY_MS: u64 = 50;
/// How often a draining shard looks whether its connections are done.
const DRAIN_POLL_MS: u64 = 10;
/// How often a hard-stopping shard looks whether its connections are gone.
const HARD_STOP_POLL_MS: u64 = 5;

/// The text of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Spawns a machinery task of `shard`: a panic in it is caught here and
/// crashes the shard (an orderly stop, see the module doc) instead of
/// unwinding the executor thread.
fn spawn_machinery<F>(shard: &Rc<Shard>, name: &'static str, task: F) -> glommio::Task<()>
where
    F: Future<Output = ()> + 'static,
{
    let shard = Rc::clone(shard);
    glommio::spawn_local(async move {
        if let Err(panic) = AssertUnwindSafe(task).catch_unwind().await {
            shard.crash(format!("{name} task panicked: {}", panic_message(&*panic)));
        }
    })
}

/// Runs one incarnation of a core's shard until it stops, crashes or is
/// replaced. `listeners` are its listening sockets, the public one first
/// (ownership passes to the shard; the watchdog registered them in the
/// incarnation's socket registry).
pub async fn run(
    shared: Arc<Shared>,
    incarnation: Arc<Incarnation>,
    listeners: Vec<ListenerFd>,
) -> ExitReason {
    let id = incarnation.core;
    tracing::debug!(
        core = id,
        generation = incarnation.generation,
        "shard starting"
    );
    let origin = Origin {
        node: shared.node.id,
        core: id as u16,
    };
    let slot = &shared.cores[id];
    // Every segment this incarnation's writer opens is numbered this or above.
    let first_own_segment = slot.segment_numbers.peek();
    let mut found: Vec<NoteRef> = Vec::new();
    if incarnation.generation > 0 {
        // A restart: the index is shared and whole, except for notes a
        // failed incarnation of this core made durable but did not index (a
        // crash in between). Only its own segments can hold those. Notes
        // that become durable while this runs reach the index through their
        // writers, and this core's feed through its inbox, which other
        // cores (and a replaced predecessor) keep filling meanwhile.
        let from = slot.unindexed_from_segment.load(Ordering::Acquire);
        match recovery::rescan_core_since(&shared.data_dir, id as u16, from, &shared.index) {
            Ok((report, notes)) => {
                tracing::info!(
                    core = id,
                    generation = incarnation.generation,
                    from_segment = from,
                    segments = report.segments,
                    records = report.records,
                    unindexed = notes.len(),
                    elapsed_ms = report.elapsed_ms,
                    "rescanned a restarted shard's own segments for notes missing from the index"
                );
                found = notes;
            }
            Err(e) => {
                for l in &listeners {
                    release(&incarnation.sockets, l);
                    // SAFETY: the listener was handed to this shard, which
                    // has not adopted it; nobody else closes it.
                    unsafe { libc::close(l.fd) };
                }
                return ExitReason::Crashed(format!("cannot rescan the core's log: {e}"));
            }
        }
    }
    slot.unindexed_from_segment
        .store(first_own_segment, Ordering::Release);
    let index = shared.index.view();
    // Never reuse a number that is in the log already.
    incarnation.lease.raise_floor(index.seq_max(origin));
    let shard = Shard::new(shared, incarnation, index);
    if shard.generation() > 0 {
        // The predecessor's connections are gone (or no longer counted here).
        shard.metrics().reset_for_restart();
    }
    // Notes the rescan put in the index: every other core's feed gets them.
    for note_ref in found {
        shard.announce(note_ref).await;
    }

    let tasks = [
        spawn_machinery(
            &shard,
            "log flusher",
            Rc::clone(&shard.writer).run_flusher(),
        ),
        spawn_machinery(&shard, "inbox", run_inbox(Rc::clone(&shard))),
        spawn_machinery(&shard, "sweeper", run_sweeper(Rc::clone(&shard))),
    ];
    if id == 0 && shard.shared.cluster.enabled {
        let shared = &shard.shared;
        match Cluster::start(
            Rc::clone(&shard) as Rc<dyn crate::cluster::ClusterHost>,
            Arc::clone(&shared.cluster),
            &shared.config,
            &shared.node,
            shared.cpus.len() as u16,
            shard.generation() > 0,
        ) {
            Ok(cluster) => {
                shard.cluster.replace(Some(cluster));
            }
            Err(e) => {
                // Without its cluster a node would silently diverge: stop.
                // (This panic unwinds the executor thread; the watchdog
                // reports it, see `watchdog.rs`.)
                tracing::error!(error = %e, "cannot start the cluster");
                panic!("cannot start the cluster: {e}");
            }
        }
    }

    let listeners: Vec<RegisteredListener> = listeners
        .into_iter()
        .map(|l| RegisteredListener {
            sockets: shard.sockets(),
            handed: l,
            // SAFETY: the fd is a listening socket created for this shard;
            // the caller gave up ownership of it.
            listener: ManuallyDrop::new(unsafe { TcpListener::from_raw_fd(l.fd) }),
        })
        .collect();
    tracing::debug!(core = id, "shard ready: accepting");
    shard.incarnation.report(Report::Ready);
    let accepting = listeners
        .iter()
        .map(|l| accept_loop(&shard, &l.listener, l.handed.fd, l.handed.kind));
    let all_accepting = poll_fn({
        let mut loops: Vec<_> = accepting.map(|f| Some(Box::pin(f))).collect();
        move |cx| {
            let mut pending = false;
            for slot in loops.iter_mut() {
                if let Some(f) = slot {
                    if f.as_mut().poll(cx).is_ready() {
                        *slot = None;
                    } else {
                        pending = true;
                    }
                }
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        }
    });
    if let Err(panic) = AssertUnwindSafe(all_accepting).catch_unwind().await {
        shard.crash(format!("accept loop panicked: {}", panic_message(&*panic)));
    }
    // Dropping the listeners closes this core's sockets; the kernel routes
    // new connections to the other cores' sockets while they still listen.
    drop(listeners);

    if shard.stop.get() == Stop::Hard {
        hard_stop(&shard).await;
    } else {
        drain(&shard).await;
    }
    shard.finished.raise();
    if let Some(w) = shard.inbox_waker.borrow().as_ref() {
        w.wake_by_ref();
    }
    end_tasks(&shard, tasks).await;
    // In case the flusher did not get to it (it crashed or was cancelled).
    shard.writer.close_segment().await;

    let reason = if let Some(reason) = shard.crash.take() {
        ExitReason::Crashed(reason)
    } else if shard.incarnation.superseded() {
        ExitReason::Superseded
    } else {
        ExitReason::Stopped
    };
    tracing::debug!(core = id, reason = ?reason, "shard executor done");
    reason
}

/// The shard's listening socket, taken out of the socket registry before it
/// is closed, however it is dropped: in order here, or by glommio tearing
/// down an executor that unwound (which drops some of its tasks and leaks
/// others). The watchdog closes what is still registered after the thread
/// ended, so a descriptor closed without being released first would be
/// closed twice (and the second time, it may be another socket's number).
struct RegisteredListener<'s> {
    sockets: &'s SocketRegistry,
    handed: ListenerFd,
    listener: ManuallyDrop<TcpListener>,
}

/// Takes a handed-over listener out of the registry (before it is closed).
fn release(sockets: &SocketRegistry, l: &ListenerFd) {
    match l.registry_slot {
        None => sockets.release_listener(l.fd),
        Some(slot) => sockets.release_other(slot, l.fd),
    }
}

impl Drop for RegisteredListener<'_> {
    fn drop(&mut self) {
        release(self.sockets, &self.handed);
        // SAFETY: dropped exactly once, here, after the release.
        unsafe { ManuallyDrop::drop(&mut self.listener) };
    }
}

/// Waits (bounded) for the machinery tasks to end, then cancels the rest:
/// a task still pending when the executor returns would never be dropped.
async fn end_tasks(shard: &Rc<Shard>, tasks: [glommio::Task<()>; 3]) {
    let deadline = Instant::now() + Duration::from_millis(TASKS_END_WAIT_MS);
    for mut task in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        let ended = async {
            (&mut task).await;
            true
        }
        .or(async {
            glommio::timer::sleep(left).await;
            false
        })
        .await;
        if !ended {
            tracing::warn!(
                core = shard.id,
                "a shard task did not end in time; cancelling it"
            );
            // Waits until this executor has dropped the task's future.
            task.cancel().await;
        }
    }
}

/// Accepts connections on one listener until the shard stops (every
/// listener of the shard has its own loop).
///
/// On stop, the listening socket is shut down (`SHUT_RD`) instead of the
/// pending accept being dropped: glommio accepts with io_uring, and an
/// accept already in the kernel can still take a connection after its
/// future was dropped; glommio then discards that descriptor without
/// closing it, and its client hangs. Shut down, the accept fails instead.
async fn accept_loop(
    shard: &Rc<Shard>,
    listener: &TcpListener,
    listener_fd: RawFd,
    kind: Listener,
) {
    let config = shard.config();
    loop {
        let accepted = listener
            .accept()
            .or(async {
                shard.shutdown_signalled().await;
                // SAFETY: shutdown(2) on this shard's own listening socket.
                unsafe { libc::shutdown(listener_fd, libc::SHUT_RD) };
                std::future::pending().await
            })
            .await;
        if shard.incarnation.superseded() {
            // Replaced while stalled: this executor must not serve anything
            // more (an accepted connection is closed by being dropped).
            shard.stop_superseded();
            break;
        }
        let stream = match accepted {
            Ok(stream) => stream,
            Err(_) if shard.shutting_down() => break,
            Err(e) => {
                let io: std::io::Error = e.into();
                tracing::warn!(core = shard.id, error = %io, "accept failed");
                glommio::timer::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
        };
        if shard.stop.get() == Stop::Hard {
            // Crashing: dropping it closes it.
            break;
        }
        if shard.conns.open_count() >= config.connections_max_per_core {
            shard.metrics().add_connections_rejected(1);
            if kind == Listener::Public && shard.tls_config().is_some() {
                // A plaintext 503 means nothing to a TLS client: just close.
                drop(stream);
            } else {
                conn::reject_overloaded(stream);
            }
            continue;
        }
        // While stopping gracefully, a connection accepted just before the
        // socket was shut down is still served (with `Connection: close`).
        glommio::spawn_local(conn::serve(Rc::clone(shard), stream, kind)).detach();
    }
}

/// Lets in-flight requests finish (bounded), then flushes the log.
async fn drain(shard: &Rc<Shard>) {
    let grace = Duration::from_millis(shard.config().shutdown_timeout_ms);
    let started = Instant::now();
    while shard.conns.open_count() > 0 && started.elapsed() < grace {
        if shard.stop.get() == Stop::Hard {
            // Crashed or replaced while draining.
            return hard_stop(shard).await;
        }
        glommio::timer::sleep(Duration::from_millis(DRAIN_POLL_MS)).await;
    }
    if shard.conns.open_count() > 0 {
        tracing::warn!(
            core = shard.id,
            open = shard.conns.open_count(),
            "shutdown grace period over; closing remaining connections"
        );
        shard.conns.shut_all();
    }
    shard.writer.stop();
    shard.writer.flushed().await;
}

/// Stops a crashed or replaced shard: every connection's socket is shut
/// both ways (their tasks see EOF or EPIPE and end), pending appends were
/// failed already (`begin_stop`), and the write in flight, if any, is let
/// finish: its buffer belongs to the kernel until it completes.
async fn hard_stop(shard: &Rc<Shard>) {
    shard.conns.shut_all();
    let deadline = Instant::now() + Duration::from_millis(HARD_STOP_WAIT_MS);
    while shard.conns.open_count() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(HARD_STOP_POLL_MS)).await;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let flushed = async {
        shard.writer.flushed().await;
        true
    }
    .or(async {
        glommio::timer::sleep(left).await;
        false
    })
    .await;
    if shard.conns.open_count() > 0 || !flushed {
        // Their tasks stay pending and glommio will not drop them; the
        // watchdog closes their sockets once this thread has ended.
        tracing::warn!(
            core = shard.id,
            open = shard.conns.open_count(),
            log_write_pending = !flushed,
            "a stopping shard still had work after {HARD_STOP_WAIT_MS} ms; leaving it behind"
        );
    }
}

/// Takes the messages other cores queue for this one: notes (already in
/// the shared index: the view is refreshed and the note goes onto this
/// core's feed) and everything else.
///
/// The queue belongs to the core, not to this incarnation: after a restart
/// the successor consumes the same queue, so nothing queued meanwhile is
/// lost. A replaced incarnation must not eat its successor's messages:
/// after taking a batch it checks its lease (an RMW, see `store/lease.rs`);
/// if fenced, it puts the batch back and ends.
async fn run_inbox(shard: Rc<Shard>) {
    let inbox = &shard.shared.inboxes[shard.id];
    // However this task ends (returns, panics, is cancelled), its waker
    // must leave the shared inbox on this thread (see `Inbox::unregister`).
    struct Unregister<'a>(&'a Inbox, &'a RefCell<Option<Waker>>);
    impl Drop for Unregister<'_> {
        fn drop(&mut self) {
            if let Some(own) = self.1.take() {
                self.0.unregister(&own);
            }
        }
    }
    let _unregister = Unregister(inbox, &shard.inbox_waker);
    let mut batch: Vec<CoreMsg> = Vec::with_capacity(INBOX_BATCH_MAX);
    loop {
        if shard.finished.is_set() || shard.incarnation.superseded() {
            return;
        }
        let mut received = 0u64;
        loop {
            batch.append(&mut shard.inbox_deferred.borrow_mut());
            while batch.len() < INBOX_BATCH_MAX {
                match inbox.try_recv() {
                    Some(msg) => batch.push(msg),
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            if !shard.incarnation.lease.still_held() {
                // Everything queued for this core is the successor's.
                for msg in batch.drain(..) {
                    inbox.send(msg).await;
                }
                return;
            }
            for msg in batch.drain(..) {
                match msg {
                    CoreMsg::Note(note_ref) => {
                        shard.note_arrived(note_ref);
                        received += 1;
                    }
                    CoreMsg::Replicated => shard.wake_replication_waiters(),
                    CoreMsg::Dispatch(job) => {
                        shard.take_job(&job);
                        glommio::spawn_local(dispatch::execute(Rc::clone(&shard), job)).detach();
                    }
                    CoreMsg::ShardLost { core, generation } => {
                        dispatch::fail_lost(&shard, core, generation)
                    }
                    CoreMsg::DispatchReply { token, reply } => {
                        dispatch::deliver(&shard, token, reply)
                    }
                    CoreMsg::Forward { node, core, job } => {
                        // Relayed by this incarnation: if it fails before
                        // the answer comes back, the requester is told at
                        // once (`dispatch::fail_lost`).
                        shard.take_job(&job);
                        dispatch::relay(&shard, node, core, *job)
                    }
                    CoreMsg::PeerReply { node, id, reply } => {
                        if let Some(cluster) = shard.cluster() {
                            cluster.reply_to_peer(node, id, reply);
                        }
                    }
                }
            }
            glommio::yield_if_needed().await;
        }
        let metrics = shard.metrics();
        metrics.add_notes_received_from_cores(received);
        metrics.set_inbox_depth(inbox.len() as u64);
        if inbox.shutdown_requested() {
            shard.begin_stop(Stop::Graceful);
        }
        poll_fn(|cx| {
            if shard.finished.is_set() || shard.incarnation.superseded() {
                // Never register once replaced: the inbox's one waker slot
                // belongs to the successor now.
                return Poll::Ready(());
            }
            inbox.register(cx.waker());
            *shard.inbox_waker.borrow_mut() = Some(cx.waker().clone());
            let shutdown_news = inbox.shutdown_requested() && !shard.shutting_down();
            let deferred = !shard.inbox_deferred.borrow().is_empty();
            if !inbox.is_empty() || deferred || shutdown_news {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

/// Every `SWEEP_INTERVAL_MS`: cuts connections past their deadlines, beats
/// the heartbeat, and applies injected faults.
async fn run_sweeper(shard: Rc<Shard>) {
    let inbox = &shard.shared.inboxes[shard.id];
    loop {
        let tick = async {
            glommio::timer::sleep(Duration::from_millis(SWEEP_INTERVAL_MS)).await;
            true
        }
        .or(async {
            shard.finished.wait().await;
            false
        })
        .await;
        if !tick {
            return;
        }
        if shard.incarnation.superseded() {
            shard.stop_superseded();
        }
        let cut = shard.conns.sweep(now_ms(), shard.shutting_down());
        if cut > 0 {
            shard.metrics().add_connections_timed_out(cut);
        }
        shard.incarnation.beat();
        // A safety net for the inbox: a replaced predecessor waking up could
        // have overwritten the inbox's waker just before it noticed.
        if !inbox.is_empty() {
            if let Some(w) = shard.inbox_waker.borrow().as_ref() {
                w.wake_by_ref();
            }
        }
        if shard.config().fault_injection {
            apply_shard_fault(&shard);
        }
    }
}

/// Makes the fault posted for this core happen here (see `fault.rs`).
fn apply_shard_fault(shard: &Rc<Shard>) {
    if shard.request_faults_armed.get() {
        shard.rearm_request_faults();
    }
    if shard.superseded_or_stopping() {
        return;
    }
    let Some((kind, duration_ms)) = shard.shared.cores[shard.id].fault.take() else {
        return;
    };
    tracing::warn!(
        core = shard.id,
        kind = kind.label(),
        duration_ms,
        "injecting a fault"
    );
    match kind {
        FaultKind::Panic => panic!("injected fault: panic in shard {} machinery", shard.id),
        FaultKind::Unwind => {
            // Deliberately not a machinery task: nothing catches this panic,
            // so it unwinds the executor thread. glommio polls a new task
            // once right away, inside its spawner's poll (`spawn_and_run`):
            // the panic must come on a later poll to escape to the executor.
            let core = shard.id;
            glommio::spawn_local(async move {
                glommio::timer::sleep(Duration::from_millis(1)).await;
                panic!("injected fault: uncaught panic on shard {core}");
            })
            .detach();
        }
        FaultKind::Stall => std::thread::sleep(Duration::from_millis(duration_ms)),
        FaultKind::Slow => {
            shard.slow_until_ms.set(now_ms() + duration_ms);
            shard.request_faults_armed.set(true);
        }
        FaultKind::HandlerPanic => {
            shard.panic_next_request.set(true);
            shard.request_faults_armed.set(true);
        }
        FaultKind::FsyncError => shard.writer.inject_fsync_failures(duration_ms),
    }
}
