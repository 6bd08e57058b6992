//! The admin endpoints, for tests and demos; they exist only with
//! `--fault-injection` (otherwise their paths are a 404 exactly like any
//! unknown path, for every method: the route table says so).
//!
//! - `POST /_admin/fault?shard=N&kind=K[&ms=M][&count=C]`: fault injection
//!   for the watchdog and the log's error handling (see `fault.rs` for the
//!   kinds; `count` is for `fsync-error`). The request may land on any
//!   core: the fault is posted to shard N's cell and happens on shard N's
//!   own thread at its next sweep. The answer is `202 Accepted`: the fault
//!   has been posted, not yet carried out.
//! - `POST /_admin/partition?block=NAME,NAME`: the network-split hook. The
//!   node drops all peer traffic (membership datagrams and TCP connections)
//!   to and from the named nodes until called again with another list; an
//!   empty `block` heals. Tests call it on both sides of the split they
//!   simulate.

use super::{CoreView, Reply, Request, Route};
use crate::encoding;
use crate::fault::{
    FaultKind, FAULT_DURATION_MS_DEFAULT, FAULT_DURATION_MS_MAX, FSYNC_FAILURES_DEFAULT,
    FSYNC_FAILURES_MAX,
};
use crate::http::response::{self, ResponseMode};

/// `POST /_admin/fault`.
pub fn fault(
    core: &impl CoreView,
    req: &Request<'_>,
    out: &mut Vec<u8>,
    mode: ResponseMode,
) -> Reply {
    let mut target: Option<usize> = None;
    let mut kind: Option<FaultKind> = None;
    let mut duration_ms = FAULT_DURATION_MS_DEFAULT;
    let mut count = FSYNC_FAILURES_DEFAULT;
    for (k, v) in encoding::form_pairs(req.query()) {
        let number = || {
            std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
        };
        match k {
            b"shard" => target = number().map(|n| n as usize),
            b"kind" => kind = FaultKind::parse(v),
            b"ms" => match number() {
                Some(ms) if (1..=FAULT_DURATION_MS_MAX).contains(&ms) => duration_ms = ms,
                _ => return bad_request(out, mode, "ms must be 1..=60000"),
            },
            b"count" => match number() {
                Some(n) if (1..=FSYNC_FAILURES_MAX).contains(&n) => count = n,
                _ => return bad_request(out, mode, "count must be 1..=1000"),
            },
            _ => {}
        }
    }
    let cores = core.cores();
    let Some(target) = target.filter(|&n| n < cores) else {
        return bad_request(out, mode, &format!("shard must be 0..{cores}"));
    };
    let Some(kind) = kind else {
        return bad_request(
            out,
            mode,
            "kind must be one of panic, unwind, stall, slow, handler-panic, fsync-error",
        );
    };
    let (amount, unit) = if kind.is_counted() {
        (count, "count")
    } else {
        (duration_ms, "ms")
    };
    core.post_fault(target, kind, amount);
    tracing::warn!(
        shard = target,
        kind = kind.label(),
        amount,
        unit,
        received_on = core.core(),
        "fault posted"
    );
    let body = format!(
        "{{\"shard\":{target},\"kind\":\"{}\",\"{unit}\":{amount}}}\n",
        kind.label()
    );
    response::write(out, mode, 202, "application/json", &[], body.as_bytes());
    Reply::new(Route::Admin, 202)
}

/// `POST /_admin/partition`.
pub fn partition(
    core: &impl CoreView,
    req: &Request<'_>,
    out: &mut Vec<u8>,
    mode: ResponseMode,
) -> Reply {
    let names: Vec<String> = match encoding::form_field(req.query(), "block") {
        Some(Ok(v)) => v
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect(),
        Some(Err(_)) => {
            response::write_text(out, mode, 400, &[], "block must be UTF-8 node names");
            return Reply::new(Route::Admin, 400);
        }
        None => Vec::new(),
    };
    tracing::warn!(blocked = ?names, "partition hook: peer traffic to these nodes is dropped");
    let text = format!("blocking {names:?}");
    core.cluster().set_blocked(names);
    response::write_text(out, mode, 200, &[], &text);
    Reply::new(Route::Admin, 200)
}

fn bad_request(out: &mut Vec<u8>, mode: ResponseMode, msg: &str) -> Reply {
    response::write_text(out, mode, 400, &[], msg);
    Reply::new(Route::Admin, 400)
}
