//! Dispatch: which shard of the cluster executes a request.
//!
//! The original system sent every request to a random worker of a process
//! group spanning nodes. Here the policy is configurable (`--dispatch`):
//! - `local`: the core that accepted the connection serves it;
//! - `random`: a uniformly random shard of any connected node (the original);
//! - `p2c` (default): local while this shard's in-flight requests are at or
//!   below `dispatch_overload_inflight`; beyond, the less loaded of two
//!   random shards (power of two choices), by in-flight counts that local
//!   cores publish as atomics and peers report in their heartbeats, if
//!   that shard is itself not overloaded and less loaded than this one.
//!   When every shard is busy, a request sent elsewhere balances nothing
//!   and costs a hop (copies of request and response, two cross-core
//!   wakes): measured, half the POSTs of an evenly loaded 2-core server went
//!   to the other core and cost it 1-2 µs of CPU each.
//!
//! A request sent elsewhere travels as its raw head and body
//! ([`DispatchJob`]) through the target core's inbox, or through core 0 and
//! the peer protocol to another node; the complete response comes back the
//! same way and is written to the client unchanged. Only the notes routes
//! are dispatched; operator endpoints always answer for the node asked.

use std::cell::RefCell;
use std::future::poll_fn;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_lite::FutureExt as _;

use super::inbox::{CoreMsg, DispatchJob, DispatchReply, ReplyTo};
use super::shard::{panic_message, GaugeUnit, Shard};
use crate::config::DispatchPolicy;
use crate::http::request::{self, HeadLimits, HeadStatus, Method};
use crate::http::response::{self, ResponseMode};
use crate::metrics::{CoreMetrics, Route};
use crate::routes::{self, Reply, Request};

/// Longest wait for a dispatched request's answer (then 504).
pub const DISPATCH_TIMEOUT_MS: u64 = 10_000;

/// Where a request will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Here,
    Core(usize),
    Node { node: u32, core: u16 },
}

/// Where a dispatched request's answer lands.
pub struct ReplySlot {
    reply: RefCell<Option<DispatchReply>>,
    waker: RefCell<Option<Waker>>,
    /// For a request handed to another core of this node (to run there,
    /// or for core 0 to relay to another node): see `fail_lost`.
    sent_to: Option<SentTo>,
}

/// The core a request was handed to, and the job's `taken_by`.
struct SentTo {
    core: usize,
    taken: Arc<AtomicU64>,
    /// Handed to core 0 to be forwarded to another node (whose answer comes
    /// back through core 0), rather than to run there.
    relayed: bool,
}

fn dispatchable(req: &Request<'_>) -> bool {
    let path = req.path();
    match req.head.method {
        Method::Get | Method::Head => {
            path == b"/"
                || path == b"/notes"
                || path.starts_with(b"/notes/")
                || path == b"/add_note"
        }
        Method::Post => path == b"/notes",
        _ => false,
    }
}

fn route_of(req: &Request<'_>) -> Route {
    match (req.head.method, req.path()) {
        (_, b"/") => Route::Page,
        (_, b"/add_note") => Route::AddNote,
        (Method::Post, _) => Route::NotesCreate,
        (_, b"/notes") => Route::NotesList,
        _ => Route::NoteGet,
    }
}

/// Answers a request here or wherever the policy sends it.
pub async fn handle(
    shard: &Shard,
    req: &Request<'_>,
    out: &mut Vec<u8>,
    mode: ResponseMode,
) -> Reply {
    let policy = shard.config().dispatch;
    if policy == DispatchPolicy::Local || !dispatchable(req) {
        return routes::handle(shard, req, out, mode).await;
    }
    match choose(shard, policy) {
        Target::Here => routes::handle(shard, req, out, mode).await,
        target => remote(shard, req, out, mode, target).await,
    }
}

/// All shards that can take work, in a fixed order: this node's cores,
/// then each connected peer's cores. Addressed by position, so that picking
/// two of them allocates nothing on the request path.
struct Candidates<'a> {
    shard: &'a Shard,
    local: usize,
    /// The cluster view and how many of its shards are reachable (none when
    /// clustering is off).
    view: Option<(
        arc_swap::Guard<std::sync::Arc<crate::cluster::ClusterView>>,
        usize,
    )>,
}

impl<'a> Candidates<'a> {
    fn of(shard: &'a Shard) -> Candidates<'a> {
        let shared = shard.shared();
        let view = shared.cluster.enabled.then(|| {
            let view = shared.cluster.view.load();
            let remote = reachable(&view).map(|m| m.cores as usize).sum();
            (view, remote)
        });
        Candidates {
            shard,
            local: shared.metrics.len(),
            view,
        }
    }

    fn len(&self) -> usize {
        self.local + self.view.as_ref().map_or(0, |(_, remote)| *remote)
    }

    /// The shard at `index` (< `len()`) and its load (requests in flight).
    fn get(&self, index: usize) -> (Target, u64) {
        if index < self.local {
            let target = if index == self.shard.id() {
                Target::Here
            } else {
                Target::Core(index)
            };
            return (target, self.shard.shared().metrics[index].dispatch_load());
        }
        let mut rest = index - self.local;
        if let Some((view, _)) = &self.view {
            for m in reachable(view) {
                let cores = m.cores as usize;
                if rest < cores {
                    let load = m.loads.get(rest).copied().unwrap_or(0) as u64;
                    let core = rest as u16;
                    return (Target::Node { node: m.node, core }, load);
                }
                rest -= cores;
            }
        }
        // Unreachable for index < len(); serving here is always correct.
        (Target::Here, 0)
    }
}

fn reachable(
    view: &crate::cluster::ClusterView,
) -> impl Iterator<Item = &crate::cluster::MemberView> {
    view.members
        .iter()
        .filter(|m| m.connected && m.state != "down")
}

fn choose(shard: &Shard, policy: DispatchPolicy) -> Target {
    if policy == DispatchPolicy::P2c
        && shard.metrics().dispatch_load() <= shard.config().dispatch_overload_inflight
    {
        return Target::Here;
    }
    let c = Candidates::of(shard);
    let n = c.len();
    if n <= 1 {
        return Target::Here;
    }
    let a = (shard.random() % n as u64) as usize;
    if policy == DispatchPolicy::Random {
        return c.get(a).0;
    }
    let mut b = (shard.random() % (n as u64 - 1)) as usize;
    if b >= a {
        b += 1;
    }
    let (a, b) = (c.get(a), c.get(b));
    let best = if b.1 < a.1 { b } else { a };
    let here = shard.metrics().dispatch_load();
    if best.1 < here && best.1 <= shard.config().dispatch_overload_inflight {
        best.0
    } else {
        Target::Here
    }
}

async fn remote(
    shard: &Shard,
    req: &Request<'_>,
    out: &mut Vec<u8>,
    mode: ResponseMode,
    target: Target,
) -> Reply {
    let token = shard.dispatch_next_token.get();
    shard.dispatch_next_token.set(token + 1);
    // Core 0 runs the cluster: a request for another node from any other
    // core goes through it, and its answer comes back through it.
    let cluster_here = shard.cluster();
    let sent_to = match target {
        Target::Core(core) => Some((core, false)),
        Target::Node { .. } if cluster_here.is_none() => Some((0, true)),
        Target::Here | Target::Node { .. } => None,
    }
    .map(|(core, relayed)| SentTo {
        core,
        taken: Arc::new(AtomicU64::new(0)),
        relayed,
    });
    let taken_by = sent_to.as_ref().map(|to| Arc::clone(&to.taken));
    let slot = Rc::new(ReplySlot {
        reply: RefCell::default(),
        waker: RefCell::default(),
        sent_to,
    });
    shard
        .dispatch_pending
        .borrow_mut()
        .insert(token, Rc::clone(&slot));
    let job = Box::new(DispatchJob {
        reply_to: ReplyTo::Core {
            core: shard.id(),
            token,
        },
        taken_by,
        keep_alive: mode.keep_alive,
        http10: mode.http10,
        raw_head: req.raw_head.to_vec(),
        body: req.body.to_vec(),
    });
    match target {
        Target::Here => unreachable!("remote() with a local target"),
        Target::Core(core) => shard.notify_core(core, CoreMsg::Dispatch(job)),
        Target::Node { node, core } => match cluster_here {
            Some(cluster) => cluster.forward(node, core, *job),
            None => shard.notify_core(0, CoreMsg::Forward { node, core, job }),
        },
    }
    shard.metrics().add_dispatched_out(1);
    let answered = poll_fn(|cx| match slot.reply.borrow_mut().take() {
        Some(r) => Poll::Ready(Some(r)),
        None => {
            *slot.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    })
    .or(async {
        glommio::timer::sleep(Duration::from_millis(DISPATCH_TIMEOUT_MS)).await;
        None
    })
    .await;
    shard.dispatch_pending.borrow_mut().remove(&token);
    let route = route_of(req);
    match answered {
        Some(reply) => {
            out.extend_from_slice(&reply.response);
            Reply {
                route,
                status: reply.status,
                close: reply.close,
                stream: None,
            }
        }
        None => {
            response::write_text(
                out,
                ResponseMode {
                    keep_alive: false,
                    ..mode
                },
                504,
                &[],
                "the shard serving this request did not answer in time",
            );
            Reply {
                route,
                status: 504,
                close: true,
                stream: None,
            }
        }
    }
}

/// Delivers a reply to the request waiting for it on this core.
pub fn deliver(shard: &Shard, token: u64, reply: DispatchReply) {
    if let Some(slot) = shard.dispatch_pending.borrow().get(&token) {
        *slot.reply.borrow_mut() = Some(reply);
        if let Some(w) = slot.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// Answers, at once, the requests this core sent to `core` that its
/// incarnation `generation` had taken and not answered when its thread
/// ended or the watchdog replaced it for stalling (without this they would
/// wait for `DISPATCH_TIMEOUT_MS`). Those
/// still queued are left for the successor, which runs them. 502: the
/// request may or may not have taken effect, as with a 504.
pub fn fail_lost(shard: &Shard, core: usize, generation: u64) {
    let lost: Vec<(u64, bool)> = shard
        .dispatch_pending
        .borrow()
        .iter()
        .filter_map(|(&token, slot)| {
            let to = slot.sent_to.as_ref()?;
            (to.core == core && to.taken.load(Ordering::Acquire) == generation + 1)
                .then_some((token, to.relayed))
        })
        .collect();
    for (token, relayed) in lost {
        let why = if relayed {
            "the shard relaying this request to another node failed while waiting for its answer"
        } else {
            "the shard serving this request failed while running it"
        };
        deliver(shard, token, closing_reply(502, &[], why));
    }
}

/// A plain-text error reply with `status` that closes the client's
/// connection, for a dispatched request that could not be answered.
pub fn closing_reply(status: u16, headers: &[(&str, &str)], why: &str) -> DispatchReply {
    let mut response = Vec::new();
    let mode = ResponseMode {
        keep_alive: false,
        http10: false,
        head_only: false,
        served_by: None,
    };
    response::write_text(&mut response, mode, status, headers, why);
    DispatchReply {
        status,
        close: true,
        response,
    }
}

/// Answers a job that cannot be executed.
pub fn fail(shard: &Shard, job: DispatchJob, why: &str) {
    send_reply(shard, job.reply_to, crate::cluster::unavailable_reply(why));
}

fn send_reply(shard: &Shard, to: ReplyTo, reply: DispatchReply) {
    match to {
        ReplyTo::Core { core, token } => {
            if core == shard.id() {
                deliver(shard, token, reply);
            } else {
                shard.notify_core(core, CoreMsg::DispatchReply { token, reply });
            }
        }
        ReplyTo::Peer { node, id } => match shard.cluster() {
            Some(cluster) => cluster.reply_to_peer(node, id, reply),
            None => shard.notify_core(0, CoreMsg::PeerReply { node, id, reply }),
        },
    }
}

/// Executes a request dispatched to this core and sends the reply back.
pub async fn execute(shard: Rc<Shard>, job: Box<DispatchJob>) {
    let config = shard.config();
    let limits = HeadLimits {
        header_bytes_max: config.header_bytes_max,
        uri_bytes_max: config.uri_bytes_max,
        body_bytes_max: config.body_bytes_max,
    };
    let head = match request::parse_head(&job.raw_head, &limits) {
        Ok(HeadStatus::Complete(h)) => h,
        _ => {
            let reply_to = job.reply_to;
            send_reply(
                &shard,
                reply_to,
                crate::cluster::unavailable_reply("dispatched request could not be parsed"),
            );
            return;
        }
    };
    // As for a request from a client of this core (`conn.rs`).
    shard.index_queued_notes();
    let req = Request {
        head: &head,
        raw_head: &job.raw_head,
        body: &job.body,
    };
    let mode = ResponseMode {
        keep_alive: job.keep_alive,
        http10: job.http10,
        head_only: head.method == Method::Head,
        served_by: shard.served_by(),
    };
    // Handled as on the core that accepted the connection (`conn.rs`):
    // counted in flight until answered, the same injected faults, and a
    // panic in the handler fails this request only. Uncaught, it would
    // unwind this executor's thread: every connection of the core would
    // be cut and the requester would wait for `DISPATCH_TIMEOUT_MS`.
    let outcome = AssertUnwindSafe(async {
        let _inflight = GaugeUnit::begin(
            &shard,
            CoreMetrics::inflight_add,
            CoreMetrics::inflight_done,
        );
        if shard.request_faults_armed() {
            shard.apply_request_faults().await;
        }
        let mut out = Vec::new();
        let reply = routes::handle(&shard, &req, &mut out, mode).await;
        DispatchReply {
            status: reply.status,
            close: reply.close,
            response: out,
        }
    })
    .catch_unwind()
    .await;
    let reply = outcome.unwrap_or_else(|panic| {
        tracing::error!(
            core = shard.id(),
            panic = %panic_message(&*panic),
            "dispatched request handler panicked; its connection is closed"
        );
        handler_failed_reply()
    });
    send_reply(&shard, job.reply_to, reply);
}

/// The reply for a request whose handler panicked where it was dispatched:
/// no response, and the connection closed, as when a handler panics on the
/// core that accepted the connection (a client cannot tell where its
/// request ran). Counted as a 500.
fn handler_failed_reply() -> DispatchReply {
    DispatchReply {
        status: 500,
        close: true,
        response: Vec::new(),
    }
}
