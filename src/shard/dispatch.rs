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
//! same way and is written to the client unchanged. Which requests may
//! leave their core is the route table's call (`api/routes.rs`,
//! `dispatchable`): the notes routes; operator endpoints always answer for
//! the node asked.

use std::cell::RefCell;
use std::future::poll_fn;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_lite::FutureExt as _;

use super::inbox::{CoreMsg, DispatchJob, ReplyTo};
use super::state::{GaugeUnit, Shard};
use super::tasks::panic_message;
use crate::api::{self, Audience, Reply, Request, Routed};
use crate::cluster::{ClusterView, MemberView, Requester};
use crate::config::DispatchPolicy;
use crate::http::request::{self, HeadLimits, HeadStatus, Method, OwnedRequest};
use crate::http::response::{self, CompleteResponse, ResponseMode};
use crate::metrics::CoreMetrics;

/// Longest wait for a dispatched request's answer (then 504).
pub const DISPATCH_TIMEOUT_MS: u64 = 10_000;

/// Where a request will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Here,
    Away(Away),
}

/// Somewhere other than this core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Away {
    Core(usize),
    Node { node: u32, core: u16 },
}

/// Where a dispatched request's answer lands.
pub struct ReplySlot {
    reply: RefCell<Option<CompleteResponse>>,
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

/// Answers a request that came in on `audience`'s listener, here or
/// wherever the policy sends it.
pub async fn handle(
    shard: &Shard,
    req: &Request<'_>,
    out: &mut Vec<u8>,
    mode: ResponseMode,
    audience: Audience,
) -> Reply {
    let config = shard.config();
    let routed = req.route_for(config.fault_injection, audience);
    let policy = config.dispatch;
    if policy == DispatchPolicy::Local || !routed.dispatchable() {
        return api::serve(shard, routed, req, out, mode).await;
    }
    match choose(shard, policy) {
        Target::Here => api::serve(shard, routed, req, out, mode).await,
        Target::Away(away) => remote(shard, routed, req, out, mode, away).await,
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
    view: Option<(arc_swap::Guard<Arc<ClusterView>>, usize)>,
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
                Target::Away(Away::Core(index))
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
                    return (Target::Away(Away::Node { node: m.node, core }), load);
                }
                rest -= cores;
            }
        }
        // Unreachable for index < len(); serving here is always correct.
        (Target::Here, 0)
    }
}

fn reachable(view: &ClusterView) -> impl Iterator<Item = &MemberView> {
    view.members.iter().filter(|m| m.reachable())
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
    routed: Routed,
    req: &Request<'_>,
    out: &mut Vec<u8>,
    mode: ResponseMode,
    target: Away,
) -> Reply {
    let token = shard.dispatch_next_token.get();
    shard.dispatch_next_token.set(token + 1);
    // Core 0 runs the cluster: a request for another node from any other
    // core goes through it, and its answer comes back through it.
    let cluster_here = shard.cluster();
    let sent_to = match target {
        Away::Core(core) => Some((core, false)),
        Away::Node { .. } if cluster_here.is_none() => Some((0, true)),
        Away::Node { .. } => None,
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
    let request = OwnedRequest {
        keep_alive: mode.keep_alive,
        http10: mode.http10,
        head: req.raw_head.to_vec(),
        body: req.body.to_vec(),
    };
    let requester = Requester {
        core: shard.id(),
        token,
    };
    match target {
        Away::Core(core) => shard.notify_core(
            core,
            CoreMsg::Dispatch(Box::new(DispatchJob {
                reply_to: ReplyTo::Core(requester),
                taken_by,
                request,
            })),
        ),
        Away::Node { node, core } => match cluster_here {
            Some(cluster) => cluster.forward(node, core, request, requester),
            None => {
                let job = Box::new(DispatchJob {
                    reply_to: ReplyTo::Core(requester),
                    taken_by,
                    request,
                });
                shard.notify_core(0, CoreMsg::Forward { node, core, job })
            }
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
    let route = routed.route();
    match answered {
        Some(reply) => {
            out.extend_from_slice(&reply.bytes);
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
pub fn deliver(shard: &Shard, token: u64, reply: CompleteResponse) {
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
        deliver(shard, token, CompleteResponse::closing(502, &[], why));
    }
}

/// Core 0 relays a job another core handed it (`CoreMsg::Forward`) to
/// `core` of another node, through the cluster; the answer goes back to the
/// job's requester.
pub fn relay(shard: &Shard, node: u32, core: u16, job: DispatchJob) {
    match (shard.cluster(), job.reply_to) {
        (Some(cluster), ReplyTo::Core(requester)) => {
            cluster.forward(node, core, job.request, requester)
        }
        // A node only ever relays its own cores' requests, and only with a
        // cluster; answer anything else rather than drop it.
        (Some(_), to @ ReplyTo::Peer { .. }) => send_reply(
            shard,
            to,
            CompleteResponse::unavailable("a forwarded request cannot be forwarded again"),
        ),
        (None, to) => send_reply(
            shard,
            to,
            CompleteResponse::unavailable("this node has no cluster"),
        ),
    }
}

/// Sends an answer where a dispatched request's answer goes.
pub fn send_reply(shard: &Shard, to: ReplyTo, reply: CompleteResponse) {
    match to {
        ReplyTo::Core(Requester { core, token }) => {
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
    let request = &job.request;
    let head = match request::parse_head(&request.head, &limits) {
        Ok(HeadStatus::Complete(h)) => h,
        _ => {
            send_reply(
                &shard,
                job.reply_to,
                CompleteResponse::unavailable("dispatched request could not be parsed"),
            );
            return;
        }
    };
    // As for a request from a client of this core (`conn.rs`).
    shard.index_queued_notes();
    let req = Request {
        head: &head,
        raw_head: &request.head,
        body: &request.body,
    };
    let mode = ResponseMode {
        keep_alive: request.keep_alive,
        http10: request.http10,
        head_only: head.method == Method::Head,
        served_by: shard.served_by(),
        // Only the public listener's requests are dispatched: HTTPS when
        // this node serves it (nodes of a cluster share the TLS options).
        hsts: shard.hsts(),
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
        let reply = api::handle(&*shard, &req, &mut out, mode).await;
        CompleteResponse {
            status: reply.status,
            close: reply.close,
            bytes: out,
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
fn handler_failed_reply() -> CompleteResponse {
    CompleteResponse {
        status: 500,
        close: true,
        bytes: Vec::new(),
    }
}
