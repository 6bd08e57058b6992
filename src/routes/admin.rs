//! `POST /_admin/fault?shard=N&kind=K[&ms=M][&count=C]`: fault injection for
//! tests and demos of the watchdog and of the log's error handling (see
//! `server/fault.rs` for the kinds; `count` is for `fsync-error`).
//!
//! Exists only with `--fault-injection`; otherwise the path is a 404 exactly
//! like any unknown path, for every method. The request may land on any
//! core: the fault is posted to shard N's cell and happens on shard N's own
//! thread at its next sweep. The answer is `202 Accepted`: the fault has
//! been posted, not yet carried out.

use super::{method_not_allowed, not_found, Reply, Request};
use crate::encoding;
use crate::http::request::Method;
use crate::http::response::{self, ResponseMode};
use crate::metrics::Route;
use crate::server::fault::{
    FaultKind, FAULT_DURATION_MS_DEFAULT, FAULT_DURATION_MS_MAX, FSYNC_FAILURES_DEFAULT,
    FSYNC_FAILURES_MAX,
};
use crate::server::shard::Shard;

/// `/_admin/fault`, any method.
pub fn fault(shard: &Shard, req: &Request<'_>, out: &mut Vec<u8>, mode: ResponseMode) -> Reply {
    if !shard.config().fault_injection {
        return not_found(out, mode);
    }
    if req.head.method != Method::Post {
        return method_not_allowed(out, mode, Route::Admin, "POST");
    }
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
    let cores = shard.shared().cores.len();
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
    shard.shared().cores[target].fault.post(kind, amount);
    tracing::warn!(
        shard = target,
        kind = kind.label(),
        amount,
        unit,
        received_on = shard.id(),
        "fault posted"
    );
    let body = format!(
        "{{\"shard\":{target},\"kind\":\"{}\",\"{unit}\":{amount}}}\n",
        kind.label()
    );
    response::write(out, mode, 202, "application/json", &[], body.as_bytes());
    Reply::new(Route::Admin, 202)
}

fn bad_request(out: &mut Vec<u8>, mode: ResponseMode, msg: &str) -> Reply {
    response::write_text(out, mode, 400, &[], msg);
    Reply::new(Route::Admin, 400)
}
