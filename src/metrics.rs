//! Per-core counters and their Prometheus text rendering.
//!
//! Every core owns one [`CoreMetrics`] and is its only writer, so a counter
//! update is a plain load and store (no locked instruction, no shared cache
//! line: each core's block is cache-padded). `GET /metrics`, served by any
//! core, reads every core's block with relaxed loads and sums them; values
//! may be a few requests apart between counters, never torn.
//!
//! The `route` label of request counters comes from the one route table
//! (`api/routes.rs`); the log's counters are the store's own
//! ([`LogCounters`]), held here so that one block per core has them all.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::api::Route;
use crate::store::writer::LogCounters;

/// Status codes counted individually; anything else counts as "other".
const STATUSES: [u16; 24] = [
    200, 201, 204, 303, 304, 400, 404, 405, 408, 411, 413, 414, 415, 417, 431, 500, 501, 503, 505,
    409, 429, 301, 308, 0,
];
const STATUS_OTHER: usize = STATUSES.len() - 1;

fn status_slot(status: u16) -> usize {
    STATUSES[..STATUS_OTHER]
        .iter()
        .position(|&s| s == status)
        .unwrap_or(STATUS_OTHER)
}

/// Upper bounds (seconds) of the request latency histogram buckets.
pub const LATENCY_BUCKETS_S: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const LATENCY_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// Single-writer increment: only the owning core calls this.
#[inline]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// One core's counters. Written only by that core.
pub struct CoreMetrics {
    requests: [[AtomicU64; STATUSES.len()]; Route::ALL.len()],
    /// Non-cumulative bucket counts; the last slot is +Inf.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
    connections_open: AtomicU64,
    connections_accepted: AtomicU64,
    connections_rejected: AtomicU64,
    connections_timed_out: AtomicU64,
    /// TLS handshakes completed: full ones, and resumed ones (a session
    /// ticket or cached session, from any core).
    tls_handshakes_full: AtomicU64,
    tls_handshakes_resumed: AtomicU64,
    /// Handshakes that failed: not TLS, refused, cut off, timed out.
    tls_handshake_failures: AtomicU64,
    /// Connections closed unhandshaken: the core was at
    /// `tls_handshakes_max_per_core`.
    tls_handshakes_rejected: AtomicU64,
    /// This core's log writer's counters (written by the writer).
    pub log: Arc<LogCounters>,
    notes_received_from_cores: AtomicU64,
    inbox_depth: AtomicU64,
    shard_restarts: AtomicU64,
    /// Open `GET /events` streams.
    sse_subscribers: AtomicU64,
    /// Requests being worked on by this core (parsed, not yet answered).
    inflight: AtomicU64,
    /// Of those, the ones waiting for their note's log batch.
    inflight_waiting_for_log: AtomicU64,
    /// Time from a remote note's creation to its being durable here.
    replication_delay_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    replication_delay_sum_us: AtomicU64,
    replication_ack_timeouts: AtomicU64,
    dispatched_out: AtomicU64,
}

impl Default for CoreMetrics {
    fn default() -> Self {
        CoreMetrics {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_us: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            connections_timed_out: AtomicU64::new(0),
            tls_handshakes_full: AtomicU64::new(0),
            tls_handshakes_resumed: AtomicU64::new(0),
            tls_handshake_failures: AtomicU64::new(0),
            tls_handshakes_rejected: AtomicU64::new(0),
            log: Arc::default(),
            notes_received_from_cores: AtomicU64::new(0),
            inbox_depth: AtomicU64::new(0),
            shard_restarts: AtomicU64::new(0),
            sse_subscribers: AtomicU64::new(0),
            inflight: AtomicU64::new(0),
            inflight_waiting_for_log: AtomicU64::new(0),
            replication_delay_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            replication_delay_sum_us: AtomicU64::new(0),
            replication_ack_timeouts: AtomicU64::new(0),
            dispatched_out: AtomicU64::new(0),
        }
    }
}

impl CoreMetrics {
    #[inline]
    pub fn record_request(&self, route: Route, status: u16, latency_us: u64) {
        bump(&self.requests[route as usize][status_slot(status)], 1);
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| latency_us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        bump(&self.latency_buckets[bucket], 1);
        bump(&self.latency_sum_us, latency_us);
    }

    pub fn inflight_add(&self) {
        bump(&self.inflight, 1);
    }

    pub fn inflight_done(&self) {
        self.inflight
            .store(self.inflight.load(Relaxed).saturating_sub(1), Relaxed);
    }

    pub fn inflight(&self) -> u64 {
        self.inflight.load(Relaxed)
    }

    pub fn log_wait_begin(&self) {
        bump(&self.inflight_waiting_for_log, 1);
    }

    pub fn log_wait_end(&self) {
        let waiting = &self.inflight_waiting_for_log;
        waiting.store(waiting.load(Relaxed).saturating_sub(1), Relaxed);
    }

    /// The load that dispatch balances: requests in flight that want this
    /// core's CPU. One waiting for its log batch waits for the disk (or the
    /// batch before it); counting it made evenly loaded cores under writes
    /// look overloaded to each other, and p2c then sent a third of all
    /// POSTs to the other core (measured: 6.0 µs of CPU per note with two
    /// cores against 5.0 with `--dispatch local`).
    pub fn dispatch_load(&self) -> u64 {
        self.inflight()
            .saturating_sub(self.inflight_waiting_for_log.load(Relaxed))
    }

    pub fn record_replication_delay(&self, delay_us: u64) {
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| delay_us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        bump(&self.replication_delay_buckets[bucket], 1);
        bump(&self.replication_delay_sum_us, delay_us);
    }

    pub fn add_replication_ack_timeouts(&self, n: u64) {
        bump(&self.replication_ack_timeouts, n);
    }

    pub fn add_dispatched_out(&self, n: u64) {
        bump(&self.dispatched_out, n);
    }

    pub fn connection_opened(&self) {
        bump(&self.connections_open, 1);
        bump(&self.connections_accepted, 1);
    }

    pub fn connection_closed(&self) {
        self.connections_open.store(
            self.connections_open.load(Relaxed).saturating_sub(1),
            Relaxed,
        );
    }

    pub fn connections_open(&self) -> u64 {
        self.connections_open.load(Relaxed)
    }

    /// A restarted shard starts with no connections and no requests in
    /// progress: its predecessor's were closed (or are counted elsewhere once
    /// it was replaced).
    pub fn reset_for_restart(&self) {
        self.connections_open.store(0, Relaxed);
        self.inflight.store(0, Relaxed);
        self.inflight_waiting_for_log.store(0, Relaxed);
    }

    pub fn add_connections_rejected(&self, n: u64) {
        bump(&self.connections_rejected, n);
    }

    pub fn add_connections_timed_out(&self, n: u64) {
        bump(&self.connections_timed_out, n);
    }

    /// A completed TLS handshake; `resumed`: no certificate was sent.
    pub fn tls_handshake_done(&self, resumed: bool) {
        if resumed {
            bump(&self.tls_handshakes_resumed, 1);
        } else {
            bump(&self.tls_handshakes_full, 1);
        }
    }

    pub fn add_tls_handshake_failures(&self, n: u64) {
        bump(&self.tls_handshake_failures, n);
    }

    pub fn add_tls_handshakes_rejected(&self, n: u64) {
        bump(&self.tls_handshakes_rejected, n);
    }

    pub fn add_notes_received_from_cores(&self, n: u64) {
        bump(&self.notes_received_from_cores, n);
    }

    pub fn set_inbox_depth(&self, n: u64) {
        self.inbox_depth.store(n, Relaxed);
    }

    pub fn inbox_depth(&self) -> u64 {
        self.inbox_depth.load(Relaxed)
    }

    pub fn set_sse_subscribers(&self, n: u64) {
        self.sse_subscribers.store(n, Relaxed);
    }

    pub fn sse_subscribers(&self) -> u64 {
        self.sse_subscribers.load(Relaxed)
    }

    /// Written only by the watchdog thread (the single writer of this one).
    pub fn add_shard_restart(&self) {
        self.shard_restarts.fetch_add(1, Relaxed);
    }

    pub fn shard_restarts(&self) -> u64 {
        self.shard_restarts.load(Relaxed)
    }

    pub fn requests_total(&self) -> u64 {
        self.requests
            .iter()
            .flat_map(|r| r.iter())
            .map(|c| c.load(Relaxed))
            .sum()
    }
}

/// All cores' metrics, shared by every core for reading.
pub type AllMetrics = Arc<[CachePadded<CoreMetrics>]>;

pub fn new_all(cores: usize) -> AllMetrics {
    (0..cores)
        .map(|_| CachePadded::new(CoreMetrics::default()))
        .collect()
}

/// Node-wide facts that are not per-core counters.
pub struct Gauges {
    pub notes: u64,
    pub note_text_bytes: u64,
    pub recovered_log_bytes: u64,
}

/// Renders the Prometheus text exposition format (version 0.0.4).
pub fn render_prometheus(all: &AllMetrics, gauges: &Gauges, out: &mut Vec<u8>) {
    let mut s = String::with_capacity(8 * 1024);
    let sum = |f: &dyn Fn(&CoreMetrics) -> &AtomicU64| -> u64 {
        all.iter().map(|m| f(m).load(Relaxed)).sum()
    };

    s.push_str(
        "# HELP uringnotes_http_requests_total HTTP requests answered, by route and status.\n",
    );
    s.push_str("# TYPE uringnotes_http_requests_total counter\n");
    for route in Route::ALL {
        for (slot, &status) in STATUSES.iter().enumerate() {
            let n: u64 = all
                .iter()
                .map(|m| m.requests[route as usize][slot].load(Relaxed))
                .sum();
            if n == 0 {
                continue;
            }
            let status_label = if slot == STATUS_OTHER {
                "other".to_string()
            } else {
                status.to_string()
            };
            let _ = writeln!(
                s,
                "uringnotes_http_requests_total{{route=\"{}\",status=\"{}\"}} {}",
                route.label(),
                status_label,
                n
            );
        }
    }

    s.push_str("# HELP uringnotes_http_request_duration_seconds Time from a complete request head to its response being queued.\n");
    s.push_str("# TYPE uringnotes_http_request_duration_seconds histogram\n");
    let mut cumulative = 0u64;
    for (i, le) in LATENCY_BUCKETS_S.iter().enumerate() {
        cumulative += all
            .iter()
            .map(|m| m.latency_buckets[i].load(Relaxed))
            .sum::<u64>();
        let _ = writeln!(
            s,
            "uringnotes_http_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    cumulative += all
        .iter()
        .map(|m| m.latency_buckets[LATENCY_BUCKETS_US.len()].load(Relaxed))
        .sum::<u64>();
    let _ = writeln!(
        s,
        "uringnotes_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        s,
        "uringnotes_http_request_duration_seconds_sum {}",
        sum(&|m| &m.latency_sum_us) as f64 / 1e6
    );
    let _ = writeln!(
        s,
        "uringnotes_http_request_duration_seconds_count {cumulative}"
    );

    s.push_str("# HELP uringnotes_replication_delay_seconds Time from a remote note's creation to its being durable on this node.\n");
    s.push_str("# TYPE uringnotes_replication_delay_seconds histogram\n");
    let mut cumulative = 0u64;
    for (i, le) in LATENCY_BUCKETS_S.iter().enumerate() {
        cumulative += all
            .iter()
            .map(|m| m.replication_delay_buckets[i].load(Relaxed))
            .sum::<u64>();
        let _ = writeln!(
            s,
            "uringnotes_replication_delay_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    cumulative += all
        .iter()
        .map(|m| m.replication_delay_buckets[LATENCY_BUCKETS_US.len()].load(Relaxed))
        .sum::<u64>();
    let _ = writeln!(
        s,
        "uringnotes_replication_delay_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        s,
        "uringnotes_replication_delay_seconds_sum {}",
        sum(&|m| &m.replication_delay_sum_us) as f64 / 1e6
    );
    let _ = writeln!(s, "uringnotes_replication_delay_seconds_count {cumulative}");

    let mut family = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            s,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    family(
        "uringnotes_connections_open",
        "gauge",
        "Open HTTP connections.",
        sum(&|m| &m.connections_open),
    );
    family(
        "uringnotes_connections_accepted_total",
        "counter",
        "HTTP connections accepted.",
        sum(&|m| &m.connections_accepted),
    );
    family(
        "uringnotes_connections_rejected_total",
        "counter",
        "Connections refused with 503 because a core was at its connection limit.",
        sum(&|m| &m.connections_rejected),
    );
    family(
        "uringnotes_connections_timed_out_total",
        "counter",
        "Connections closed by a header, body, send or idle timeout.",
        sum(&|m| &m.connections_timed_out),
    );
    family(
        "uringnotes_tls_handshakes_full_total",
        "counter",
        "TLS handshakes completed with a certificate (no resumption).",
        sum(&|m| &m.tls_handshakes_full),
    );
    family(
        "uringnotes_tls_handshakes_resumed_total",
        "counter",
        "TLS handshakes that resumed a session (a ticket from any core).",
        sum(&|m| &m.tls_handshakes_resumed),
    );
    family(
        "uringnotes_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed: not TLS (plaintext, garbage), refused, cut off or timed out.",
        sum(&|m| &m.tls_handshake_failures),
    );
    family(
        "uringnotes_tls_handshakes_rejected_total",
        "counter",
        "Connections closed before a handshake: the core had tls_handshakes_max_per_core in progress.",
        sum(&|m| &m.tls_handshakes_rejected),
    );
    family(
        "uringnotes_sse_subscribers",
        "gauge",
        "Open live-update streams (GET /events).",
        sum(&|m| &m.sse_subscribers),
    );
    family("uringnotes_notes", "gauge", "Notes stored.", gauges.notes);
    family(
        "uringnotes_note_text_bytes",
        "gauge",
        "UTF-8 bytes of all note texts.",
        gauges.note_text_bytes,
    );
    family(
        "uringnotes_log_bytes",
        "gauge",
        "Bytes in the log (found at start-up plus written since).",
        gauges.recovered_log_bytes + sum(&|m| &m.log.log_bytes),
    );
    family(
        "uringnotes_log_writes_total",
        "counter",
        "Writes (pwrite calls) to the log: one per batch of notes; notes per write is the batch size.",
        sum(&|m| &m.log.log_writes),
    );
    family(
        "uringnotes_fsyncs_total",
        "counter",
        "fdatasync calls on the log (one per group-commit batch).",
        sum(&|m| &m.log.fsyncs),
    );
    family(
        "uringnotes_records_durable_total",
        "counter",
        "Records made durable by group commit.",
        sum(&|m| &m.log.records_durable),
    );
    family(
        "uringnotes_log_write_errors_total",
        "counter",
        "Failed log batches (their writes were answered 503).",
        sum(&|m| &m.log.write_errors),
    );
    family(
        "uringnotes_notes_received_from_cores_total",
        "counter",
        "Notes a core indexed from another core's queue.",
        sum(&|m| &m.notes_received_from_cores),
    );
    family(
        "uringnotes_requests_inflight",
        "gauge",
        "Requests being worked on (parsed, not yet answered).",
        sum(&|m| &m.inflight),
    );
    family(
        "uringnotes_replication_ack_timeouts_total",
        "counter",
        "Writes answered before every peer acknowledged them (ack timeout).",
        sum(&|m| &m.replication_ack_timeouts),
    );
    family(
        "uringnotes_requests_dispatched_total",
        "counter",
        "Requests executed on another core or node than the one that accepted them.",
        sum(&|m| &m.dispatched_out),
    );
    s.push_str("# HELP uringnotes_shard_restarts_total Times the watchdog restarted each shard after a failure.\n");
    s.push_str("# TYPE uringnotes_shard_restarts_total counter\n");
    for (core, m) in all.iter().enumerate() {
        let _ = writeln!(
            s,
            "uringnotes_shard_restarts_total{{shard=\"{core}\"}} {}",
            m.shard_restarts.load(Relaxed)
        );
    }
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let all = new_all(2);
        all[0].record_request(Route::Page, 200, 50);
        all[1].record_request(Route::Page, 200, 3_000);
        all[1].record_request(Route::NotFound, 404, 10_000_000);
        all[1].add_shard_restart();
        let mut out = Vec::new();
        render_prometheus(
            &all,
            &Gauges {
                notes: 3,
                note_text_bytes: 10,
                recovered_log_bytes: 100,
            },
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("uringnotes_http_requests_total{route=\"page\",status=\"200\"} 2\n"));
        assert!(
            text.contains("uringnotes_http_requests_total{route=\"not_found\",status=\"404\"} 1\n")
        );
        assert!(text.contains("uringnotes_http_request_duration_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("uringnotes_http_request_duration_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("uringnotes_http_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("uringnotes_notes 3\n"));
        assert!(text.contains("uringnotes_shard_restarts_total{shard=\"0\"} 0\n"));
        assert!(text.contains("uringnotes_shard_restarts_total{shard=\"1\"} 1\n"));
    }
}
