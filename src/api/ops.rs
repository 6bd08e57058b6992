//! Operator endpoints: `/healthz`, `/metrics` (Prometheus) and `/_status`.
//!
//! All three are different at every request: `Cache-Control: no-store`, no
//! validator. `/metrics` and `/_status` are compressed when large enough
//! and asked for (Prometheus asks for gzip).

use std::io::Write as _;

use super::representation::{cache_control, respond, Rendered};
use super::{CoreView, Reply, Request, Route};
use crate::config::{AckPolicy, DispatchPolicy};
use crate::encoding::json_string_into;
use crate::http::response::{self, ResponseMode};

/// `GET /healthz`: 200 while the shard answering it is serving.
pub fn healthz(out: &mut Vec<u8>, mode: ResponseMode) -> Reply {
    response::write(
        out,
        mode,
        200,
        "text/plain; charset=utf-8",
        &[("Cache-Control", cache_control::NO_STORE)],
        b"ok\n",
    );
    Reply::new(Route::Healthz, 200)
}

/// `GET /metrics`.
pub fn metrics(
    core: &impl CoreView,
    req: &Request<'_>,
    out: &mut Vec<u8>,
    mode: ResponseMode,
) -> Reply {
    let state = core.api_state();
    let mut body = state.scratch();
    core.render_metrics(&mut body);
    let rendered = Rendered {
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        cache_control: cache_control::NO_STORE,
        version: None,
        always_negotiated: false,
        extra: &[],
    };
    let status = respond(out, mode, req, &rendered, &body, &mut state.compressed());
    Reply::new(Route::Metrics, status)
}

/// `GET /_status`: node, shards and storage as JSON.
pub fn status(
    core: &impl CoreView,
    req: &Request<'_>,
    out: &mut Vec<u8>,
    mode: ResponseMode,
) -> Reply {
    let node = core.node();
    let shards = core.shards();
    let index = core.index();
    let state = core.api_state();
    let mut body = state.scratch();
    body.extend_from_slice(b"{\"node\":{\"id\":");
    let _ = write!(body, "\"{:08x}\",\"name\":", node.id);
    json_string_into(&mut body, &node.name);
    let _ = write!(
        body,
        "}},\"version\":\"{}\",\"uptime_s\":{},\"served_by_core\":{},\"notes\":{},\"note_text_bytes\":{},\"shards\":[",
        env!("CARGO_PKG_VERSION"),
        core.uptime().as_secs(),
        core.core(),
        index.len(),
        index.text_bytes(),
    );
    for (i, shard) in shards.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let _ = write!(
            body,
            "{{\"core\":{i},\"cpu\":{},\"connections\":{},\"sse_subscribers\":{},\"inbox_depth\":{},\"requests\":{},\"restarts\":{},\"last_failure\":",
            OrNull(shard.cpu),
            shard.connections,
            shard.sse_subscribers,
            shard.inbox_depth,
            shard.requests,
            shard.restarts
        );
        match &shard.last_failure {
            None => body.extend_from_slice(b"null"),
            Some((reason, at)) => {
                body.extend_from_slice(b"{\"reason\":");
                json_string_into(&mut body, reason);
                let _ = write!(
                    body,
                    ",\"at\":\"{}\"}}",
                    humantime::format_rfc3339_millis(*at)
                );
            }
        }
        body.push(b'}');
    }
    body.extend_from_slice(b"],\"cluster\":");
    write_cluster_json(core, &mut body);
    body.extend_from_slice(b"}\n");
    let rendered = Rendered {
        content_type: "application/json",
        cache_control: cache_control::NO_STORE,
        version: None,
        always_negotiated: false,
        extra: &[],
    };
    let status = respond(out, mode, req, &rendered, &body, &mut state.compressed());
    Reply::new(Route::Status, status)
}

/// The cluster section of `/_status`: this node's peer settings and every
/// known member with its state, replication lag and queue depth.
fn write_cluster_json(core: &impl CoreView, body: &mut Vec<u8>) {
    let config = core.config();
    let cluster = core.cluster();
    if !cluster.enabled {
        body.extend_from_slice(b"{\"enabled\":false,\"members\":[]}");
        return;
    }
    let _ = write!(
        body,
        "{{\"enabled\":true,\"peer_listen\":\"{}\",\"ack\":\"{}\",\"dispatch\":\"{}\",\"members\":[",
        config.peer_advertise.or(config.peer_listen).map(|a| a.to_string()).unwrap_or_default(),
        match config.ack {
            AckPolicy::All => "all",
            AckPolicy::Local => "local",
        },
        match config.dispatch {
            DispatchPolicy::Local => "local",
            DispatchPolicy::Random => "random",
            DispatchPolicy::P2c => "p2c",
        },
    );
    let view = cluster.view.load();
    for (i, m) in view.members.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let _ = write!(body, "{{\"node\":\"{:08x}\",\"name\":", m.node);
        json_string_into(body, &m.name);
        let _ = write!(
            body,
            ",\"peer_addr\":\"{}\",\"state\":\"{}\",\"connected\":{},\"cores\":{},\"loads\":{:?},\"lag_notes\":{},\"queue_bytes\":{}}}",
            m.peer_addr, m.state.label(), m.connected, m.cores, m.loads, m.lag_notes, m.outbox_bytes
        );
    }
    body.extend_from_slice(b"]}");
}

/// An optional number as JSON: the number, or `null`.
struct OrNull(Option<usize>);

impl std::fmt::Display for OrNull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("null"),
        }
    }
}
