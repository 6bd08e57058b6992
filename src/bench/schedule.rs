//! When requests are sent, and from when their latency is measured.
//!
//! Two modes:
//! - **Closed loop** ([`Mode::Closed`]): each connection sends its next
//!   request (or batch of `--pipeline` requests) as soon as the previous
//!   answer arrived, like wrk. Latency runs from the actual send. A server
//!   stall then also stops the *sending*, so the stall shows up as one slow
//!   request per connection and hides from the percentiles: this mode
//!   measures throughput, not the latency users would see.
//! - **Constant rate** ([`Mode::Rate`]): requests are due at fixed intervals,
//!   like wrk2. Request `k` of connection `g` (of `C`, at `R` requests/s in
//!   all) is due at `start + (g + k*C) / R`, so the whole run sends evenly
//!   spaced requests. Latency runs from the *due* time, not from the time the
//!   request could actually be sent: a request that waited behind a stalled
//!   one is charged for its wait (correction for coordinated omission). A
//!   connection that fell behind sends back to back until it has caught up.
//!   The uncorrected latency (from the actual send) is kept as well, to show
//!   how much a naive measurement would hide.

use std::time::{Duration, Instant};

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As fast as the server answers.
    Closed,
    /// A fixed total rate, spread evenly over the connections.
    Rate { requests_per_s: u64 },
}

impl Mode {
    /// The name used in reports and JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Closed => "closed",
            Mode::Rate { .. } => "rate",
        }
    }
}

/// The phases of a run, as instants on the monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Requests start (warm-up begins).
    pub start: Instant,
    /// Measurement begins: requests sent (or due) before it are not counted.
    pub measure_start: Instant,
    /// No request is sent (or due) at or after this; responses still owed
    /// are abandoned.
    pub end: Instant,
}

impl Window {
    pub fn new(start: Instant, warmup: Duration, duration: Duration) -> Window {
        let measure_start = start + warmup;
        Window {
            start,
            measure_start,
            end: measure_start + duration,
        }
    }

    /// Whether a request sent (or due) at `t` is measured.
    #[inline]
    pub fn measures(&self, t: Instant) -> bool {
        t >= self.measure_start
    }
}

/// The due times of one connection's requests in constant-rate mode.
#[derive(Debug, Clone)]
pub struct RateSchedule {
    start: Instant,
    /// Nanoseconds between two requests of the whole run (1e9 / R).
    spacing_ns: f64,
    /// Index of this connection's next request in the whole run's sequence.
    next_slot: u64,
    /// Slots between two requests of this connection (the connection count).
    stride: u64,
}

impl RateSchedule {
    /// The schedule of connection `conn` of `connections` at `requests_per_s` in all.
    pub fn new(
        start: Instant,
        requests_per_s: u64,
        connections: usize,
        conn: usize,
    ) -> RateSchedule {
        debug_assert!(requests_per_s > 0 && conn < connections);
        RateSchedule {
            start,
            spacing_ns: 1e9 / requests_per_s as f64,
            next_slot: conn as u64,
            stride: connections as u64,
        }
    }

    /// When the next request is due. Computed from the slot number, not by
    /// adding intervals, so rounding never accumulates into drift.
    #[inline]
    pub fn due(&self) -> Instant {
        self.start + Duration::from_nanos((self.next_slot as f64 * self.spacing_ns) as u64)
    }

    /// Moves on to the following request.
    #[inline]
    pub fn advance(&mut self) {
        self.next_slot += self.stride;
    }
}

/// Microseconds from `from` to `to` (0 if `to` is earlier), the unit of
/// every histogram.
#[inline]
pub fn elapsed_us(from: Instant, to: Instant) -> u64 {
    to.saturating_duration_since(from).as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_is_evenly_spaced_over_all_connections() {
        let start = Instant::now();
        let connections = 4;
        let mut all: Vec<Duration> = Vec::new();
        for conn in 0..connections {
            let mut s = RateSchedule::new(start, 1000, connections, conn);
            for _ in 0..250 {
                all.push(s.due() - start);
                s.advance();
            }
        }
        all.sort();
        // 1000 requests at 1000/s: one every millisecond, none lost or doubled.
        for (k, due) in all.iter().enumerate() {
            assert_eq!(due.as_micros(), k as u128 * 1000, "request {k}");
        }
    }

    #[test]
    fn no_drift_over_a_long_run() {
        let start = Instant::now();
        let mut s = RateSchedule::new(start, 3, 1, 0);
        for _ in 0..3_000_000 {
            s.advance();
        }
        // 3 million requests at 3/s end after exactly 1e6 s (within rounding of one request).
        let off = (s.due() - start).as_secs_f64() - 1e6;
        assert!(off.abs() < 1e-3, "drift {off}");
    }

    #[test]
    fn warm_up_is_not_measured() {
        let start = Instant::now();
        let w = Window::new(start, Duration::from_secs(1), Duration::from_secs(2));
        assert!(!w.measures(start));
        assert!(w.measures(start + Duration::from_secs(1)));
        assert_eq!(w.end - start, Duration::from_secs(3));
    }
}
