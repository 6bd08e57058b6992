//! Operator endpoints: `/healthz`, `/metrics` (Prometheus) and `/_status`.

use std::io::Write as _;

use super::Reply;
use crate::encoding::json_string_into;
use crate::http::response::{self, ResponseMode};
use crate::metrics::{self, Gauges, Route};
use crate::server::shard::Shard;

/// `GET /healthz`: 200 while the shard answering it is serving.
pub fn healthz(_shard: &Shard, out: &mut Vec<u8>, mode: ResponseMode) -> Reply {
    response::write(out, mode, 200, "text/plain; charset=utf-8", &[], b"ok\n");
    Reply::new(Route::Healthz, 200)
}

/// `GET /metrics`.
pub fn metrics(shard: &Shard, out: &mut Vec<u8>, mode: ResponseMode) -> Reply {
    let index = shard.index();
    let gauges = Gauges {
        notes: index.len() as u64,
        note_text_bytes: index.text_bytes(),
        recovered_log_bytes: shard.shared().recovered_log_bytes,
    };
    let mut body = shard.scratch();
    body.clear();
    metrics::render_prometheus(&shard.shared().metrics, &gauges, &mut body);
    response::write(
        out,
        mode,
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        &[],
        &body,
    );
    Reply::new(Route::Metrics, 200)
}

/// `GET /_status`: node, shards and storage as JSON.
pub fn status(shard: &Shard, out: &mut Vec<u8>, mode: ResponseMode) -> Reply {
    let shared = shard.shared();
    let index = shard.index();
    let mut body = shard.scratch();
    body.clear();
    body.extend_from_slice(b"{\"node\":{\"id\":");
    let _ = write!(body, "\"{:08x}\",\"name\":", shared.node.id);
    json_string_into(&mut body, &shared.node.name);
    let _ = write!(
        body,
        "}},\"version\":\"{}\",\"uptime_s\":{},\"served_by_core\":{},\"notes\":{},\"note_text_bytes\":{},\"shards\":[",
        env!("CARGO_PKG_VERSION"),
        shared.started.elapsed().as_secs(),
        shard.id(),
        index.len(),
        index.text_bytes(),
    );
    for (core, m) in shared.metrics.iter().enumerate() {
        if core > 0 {
            body.push(b',');
        }
        let _ = write!(
            body,
            "{{\"core\":{core},\"cpu\":{},\"connections\":{},\"sse_subscribers\":{},\"inbox_depth\":{},\"requests\":{},\"restarts\":{},\"last_failure\":",
            shared.cpus.get(core).copied().unwrap_or(0),
            m.connections_open(),
            m.sse_subscribers(),
            m.inbox_depth(),
            m.requests_total(),
            m.shard_restarts()
        );
        // Written by the watchdog only; this rare read is the only other
        // user of the lock (never the request path of notes or pages).
        let last_failure = shared.cores[core]
            .supervision
            .lock()
            .ok()
            .and_then(|s| s.last_failure.clone());
        match last_failure {
            None => body.extend_from_slice(b"null"),
            Some(failure) => {
                body.extend_from_slice(b"{\"reason\":");
                json_string_into(&mut body, &failure.reason);
                let _ = write!(
                    body,
                    ",\"at\":\"{}\"}}",
                    humantime::format_rfc3339_millis(failure.at)
                );
            }
        }
        body.push(b'}');
    }
    body.extend_from_slice(b"],\"cluster\":");
    write_cluster_json(shard, &mut body);
    body.extend_from_slice(b"}\n");
    response::write(out, mode, 200, "application/json", &[], &body);
    Reply::new(Route::Status, 200)
}

/// The cluster section of `/_status`: this node's peer settings and every
/// known member with its state, replication lag and queue depth.
fn write_cluster_json(shard: &Shard, body: &mut Vec<u8>) {
    let shared = shard.shared();
    let config = &shared.config;
    if !shared.cluster.enabled {
        body.extend_from_slice(b"{\"enabled\":false,\"members\":[]}");
        return;
    }
    let _ = write!(
        body,
        "{{\"enabled\":true,\"peer_listen\":\"{}\",\"ack\":\"{}\",\"dispatch\":\"{}\",\"members\":[",
        config.peer_advertise.or(config.peer_listen).map(|a| a.to_string()).unwrap_or_default(),
        match config.ack {
            crate::config::AckPolicy::All => "all",
            crate::config::AckPolicy::Local => "local",
        },
        match config.dispatch {
            crate::config::DispatchPolicy::Local => "local",
            crate::config::DispatchPolicy::Random => "random",
            crate::config::DispatchPolicy::P2c => "p2c",
        },
    );
    let view = shared.cluster.view.load();
    for (i, m) in view.members.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let _ = write!(body, "{{\"node\":\"{:08x}\",\"name\":", m.node);
        json_string_into(body, &m.name);
        let _ = write!(
            body,
            ",\"peer_addr\":\"{}\",\"state\":\"{}\",\"connected\":{},\"cores\":{},\"loads\":{:?},\"lag_notes\":{},\"queue_bytes\":{}}}",
            m.peer_addr, m.state, m.connected, m.cores, m.loads, m.lag_notes, m.outbox_bytes
        );
    }
    body.extend_from_slice(b"]}");
}
