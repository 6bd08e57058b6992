//! What a benchmark counts: latency histograms, responses, errors by kind,
//! bytes and the per-second series.
//!
//! Each thread owns one [`Stats`] and is its only writer, so recording is a
//! few plain additions and one histogram increment, with no atomics and no
//! locks on the request path. At the end the threads' `Stats` are merged
//! ([`Stats::merge`]); histograms merge exactly (same bucket layout).
//!
//! Latency is kept in an HdrHistogram with 3 significant digits and
//! microsecond resolution, up to [`LATENCY_US_MAX`] (larger values saturate).
//! Only successful responses are in the histograms: a fast error page
//! must not make the latency look better. Successful means 2xx, and
//! `304 Not Modified`: the answer to a conditional request (a benchmark of
//! revalidation sends `-H 'If-None-Match: "..."'`), which no server sends
//! to a request that did not ask for it.

use std::collections::BTreeMap;
use std::time::Instant;

use hdrhistogram::Histogram;

use super::schedule::{elapsed_us, Window};

/// Significant decimal digits of every latency histogram.
pub const LATENCY_SIGFIG: u8 = 3;
/// Largest latency the histograms distinguish: one hour, in microseconds.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Longest per-second series kept (a day); later seconds are not plotted.
pub const SERIES_SECONDS_MAX: usize = 86_400;

/// An empty latency histogram with the benchmark's layout.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGFIG)
        .unwrap_or_else(|e| unreachable!("constant histogram bounds are valid: {e}"))
}

/// Why a request did not get a successful answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The connection could not be established.
    Connect,
    /// TCP connected, the TLS handshake failed (e.g. an untrusted certificate).
    Tls,
    /// No complete response within `--timeout`.
    Timeout,
    /// The connection broke (reset, or closed before the whole response).
    Reset,
    /// The response was not valid HTTP/1.x as this client reads it.
    Protocol,
    /// A complete response with a status other than 2xx.
    Status(u16),
}

/// Errors counted by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    pub connect: u64,
    pub tls: u64,
    pub timeout: u64,
    pub reset: u64,
    pub protocol: u64,
    /// Non-2xx responses by status code.
    pub status: BTreeMap<u16, u64>,
}

impl ErrorCounts {
    pub fn add(&mut self, kind: ErrorKind) {
        match kind {
            ErrorKind::Connect => self.connect += 1,
            ErrorKind::Tls => self.tls += 1,
            ErrorKind::Timeout => self.timeout += 1,
            ErrorKind::Reset => self.reset += 1,
            ErrorKind::Protocol => self.protocol += 1,
            ErrorKind::Status(code) => *self.status.entry(code).or_insert(0) += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.connect
            + self.tls
            + self.timeout
            + self.reset
            + self.protocol
            + self.status.values().sum::<u64>()
    }

    pub fn merge(&mut self, other: &ErrorCounts) {
        self.connect += other.connect;
        self.tls += other.tls;
        self.timeout += other.timeout;
        self.reset += other.reset;
        self.protocol += other.protocol;
        for (code, n) in &other.status {
            *self.status.entry(*code).or_insert(0) += n;
        }
    }
}

/// `304 Not Modified`.
const NOT_MODIFIED: u16 = 304;

/// Whether a response counts as a success (see the module doc).
pub fn is_success(status: u16) -> bool {
    (200..300).contains(&status) || status == NOT_MODIFIED
}

/// Counts for one mix entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryCounts {
    /// Complete responses, any status.
    pub responses: u64,
    /// Successful (2xx and 304) responses.
    pub ok: u64,
    /// Every kind of error, other statuses included.
    pub errors: u64,
}

/// TLS handshakes made during the measurement (`https` targets).
#[derive(Debug, Clone)]
pub struct HandshakeStats {
    pub full: u64,
    pub resumed: u64,
    /// Connections whose TCP connect worked and whose handshake did not.
    pub failed: u64,
    /// Why the first of them failed (for the report).
    pub first_error: Option<String>,
    /// From the start of the connect to a usable connection, microseconds.
    pub time: Histogram<u64>,
}

impl HandshakeStats {
    fn new() -> HandshakeStats {
        HandshakeStats {
            full: 0,
            resumed: 0,
            failed: 0,
            first_error: None,
            time: new_histogram(),
        }
    }

    pub fn total(&self) -> u64 {
        self.full + self.resumed
    }
}

/// One thread's (or, merged, the whole run's) measurements.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of 2xx responses from the due time (rate mode) or the send
    /// time (closed loop).
    pub corrected: Histogram<u64>,
    /// Latency of 2xx responses from the actual send; `None` in closed-loop
    /// mode, where it equals `corrected`.
    pub uncorrected: Option<Histogram<u64>>,
    /// Complete responses, any status.
    pub responses: u64,
    /// 2xx responses.
    pub ok: u64,
    pub errors: ErrorCounts,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub by_entry: Vec<EntryCounts>,
    /// Complete responses in each second of the measurement.
    pub responses_per_s: Vec<u64>,
    /// Errors in each second of the measurement.
    pub errors_per_s: Vec<u64>,
    /// Requests still owed a response when the run ended (not counted
    /// anywhere else).
    pub abandoned: u64,
    pub handshakes: HandshakeStats,
}

impl Stats {
    pub fn new(entries: usize, corrected_and_uncorrected: bool) -> Stats {
        Stats {
            corrected: new_histogram(),
            uncorrected: corrected_and_uncorrected.then(new_histogram),
            responses: 0,
            ok: 0,
            errors: ErrorCounts::default(),
            bytes_read: 0,
            bytes_written: 0,
            by_entry: vec![EntryCounts::default(); entries],
            responses_per_s: Vec::new(),
            errors_per_s: Vec::new(),
            abandoned: 0,
            handshakes: HandshakeStats::new(),
        }
    }

    /// Records a TLS handshake begun at `started` that took `took`.
    pub fn handshake(
        &mut self,
        window: &Window,
        started: Instant,
        took: std::time::Duration,
        resumed: bool,
    ) {
        if !window.measures(started) {
            return;
        }
        if resumed {
            self.handshakes.resumed += 1;
        } else {
            self.handshakes.full += 1;
        }
        self.handshakes
            .time
            .saturating_record(took.as_micros().min(u128::from(LATENCY_US_MAX)) as u64);
    }

    /// Records a handshake begun at `started` that failed with `why`.
    pub fn handshake_failed(
        &mut self,
        window: &Window,
        started: Instant,
        why: &dyn std::fmt::Display,
    ) {
        if self.handshakes.first_error.is_none() {
            self.handshakes.first_error = Some(why.to_string());
        }
        if window.measures(started) {
            self.handshakes.failed += 1;
        }
    }

    /// Records a complete response to a request of `entry` that was due at
    /// `due`, sent at `sent` and answered at `done`. Requests due before the
    /// measurement window are warm-up and not recorded.
    #[inline]
    pub fn response(
        &mut self,
        window: &Window,
        entry: usize,
        status: u16,
        due: Instant,
        sent: Instant,
        done: Instant,
    ) {
        if !window.measures(due) {
            return;
        }
        self.responses += 1;
        bump(&mut self.responses_per_s, window, done);
        let counts = &mut self.by_entry[entry];
        counts.responses += 1;
        if is_success(status) {
            self.ok += 1;
            counts.ok += 1;
            self.corrected.saturating_record(elapsed_us(due, done));
            if let Some(h) = &mut self.uncorrected {
                h.saturating_record(elapsed_us(sent, done));
            }
        } else {
            counts.errors += 1;
            self.errors.add(ErrorKind::Status(status));
            bump(&mut self.errors_per_s, window, done);
        }
    }

    /// Records a failed request of `entry` that was due at `due`, failing at `at`.
    pub fn error(
        &mut self,
        window: &Window,
        entry: usize,
        kind: ErrorKind,
        due: Instant,
        at: Instant,
    ) {
        if !window.measures(due) {
            return;
        }
        self.errors.add(kind);
        self.by_entry[entry].errors += 1;
        bump(&mut self.errors_per_s, window, at);
    }

    /// Adds bytes moved at `at` (counted only inside the measurement window).
    #[inline]
    pub fn bytes(&mut self, window: &Window, at: Instant, read: usize, written: usize) {
        if window.measures(at) {
            self.bytes_read += read as u64;
            self.bytes_written += written as u64;
        }
    }

    /// Adds another thread's measurements to these.
    pub fn merge(&mut self, other: &Stats) {
        // Same constant layout on both sides: addition cannot fail.
        let _ = self.corrected.add(&other.corrected);
        if let (Some(mine), Some(theirs)) = (&mut self.uncorrected, &other.uncorrected) {
            let _ = mine.add(theirs);
        }
        self.responses += other.responses;
        self.ok += other.ok;
        self.errors.merge(&other.errors);
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        for (mine, theirs) in self.by_entry.iter_mut().zip(&other.by_entry) {
            mine.responses += theirs.responses;
            mine.ok += theirs.ok;
            mine.errors += theirs.errors;
        }
        add_series(&mut self.responses_per_s, &other.responses_per_s);
        add_series(&mut self.errors_per_s, &other.errors_per_s);
        self.abandoned += other.abandoned;
        self.handshakes.full += other.handshakes.full;
        self.handshakes.resumed += other.handshakes.resumed;
        self.handshakes.failed += other.handshakes.failed;
        if self.handshakes.first_error.is_none() {
            self.handshakes
                .first_error
                .clone_from(&other.handshakes.first_error);
        }
        let _ = self.handshakes.time.add(&other.handshakes.time);
    }
}

/// Counts one event at `at` in its second of the measurement.
#[inline]
fn bump(series: &mut Vec<u64>, window: &Window, at: Instant) {
    // An answer read just as the window closed belongs to its last second.
    let at = at.min(window.end - std::time::Duration::from_nanos(1));
    let second = at.saturating_duration_since(window.measure_start).as_secs() as usize;
    if second >= SERIES_SECONDS_MAX {
        return;
    }
    if series.len() <= second {
        series.resize(second + 1, 0);
    }
    series[second] += 1;
}

fn add_series(mine: &mut Vec<u64>, theirs: &[u64]) {
    if mine.len() < theirs.len() {
        mine.resize(theirs.len(), 0);
    }
    for (m, t) in mine.iter_mut().zip(theirs) {
        *m += t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn window() -> Window {
        Window::new(
            Instant::now(),
            Duration::from_millis(100),
            Duration::from_secs(2),
        )
    }

    #[test]
    fn responses_errors_and_series_add_up() {
        let w = window();
        let mut s = Stats::new(2, true);
        let t = w.measure_start;
        let ms = Duration::from_millis;
        s.response(&w, 0, 200, t, t + ms(5), t + ms(10));
        s.response(&w, 1, 404, t, t, t + ms(1));
        s.response(&w, 0, 201, t + ms(1500), t + ms(1500), t + ms(1501));
        s.error(&w, 1, ErrorKind::Timeout, t, t + ms(1200));
        assert_eq!((s.responses, s.ok, s.errors.total()), (3, 2, 2));
        assert_eq!(s.errors.status.get(&404), Some(&1));
        assert_eq!(s.responses_per_s, vec![2, 1]);

        assert_eq!(s.errors_per_s, vec![1, 1]);
        assert_eq!(s.by_entry[0].ok, 2);
        assert_eq!(s.by_entry[1].errors, 2);
        // Corrected from the due time, uncorrected from the send.
        assert_eq!(s.corrected.max(), s.corrected.highest_equivalent(10_000));
        let unc = s.uncorrected.as_ref().unwrap();
        assert_eq!(unc.max(), unc.highest_equivalent(5_000));
    }

    #[test]
    fn an_answer_read_as_the_window_closes_counts_in_its_last_second() {
        let w = window();
        let mut s = Stats::new(1, false);
        let t = w.measure_start;
        s.response(&w, 0, 200, t, t, w.end - Duration::from_millis(1));
        s.response(&w, 0, 200, t, t, w.end + Duration::from_millis(1));
        assert_eq!(s.responses_per_s, vec![0, 2]);
    }

    #[test]
    fn warm_up_requests_are_not_recorded() {
        let w = window();
        let mut s = Stats::new(1, false);
        s.response(&w, 0, 200, w.start, w.start, w.measure_start);
        s.error(&w, 0, ErrorKind::Reset, w.start, w.start);
        assert_eq!(
            (s.responses, s.errors.total(), s.corrected.len()),
            (0, 0, 0)
        );
    }

    #[test]
    fn merging_is_exact() {
        let w = window();
        let mut a = Stats::new(1, true);
        let mut b = Stats::new(1, true);
        let t = w.measure_start;
        for i in 0..100u64 {
            a.response(&w, 0, 200, t, t, t + Duration::from_micros(i));
            b.response(&w, 0, 200, t, t, t + Duration::from_micros(1000 + i));
        }
        b.error(&w, 0, ErrorKind::Status(503), t, t);
        a.merge(&b);
        assert_eq!(a.corrected.len(), 200);
        assert_eq!(a.uncorrected.as_ref().unwrap().len(), 200);
        assert_eq!(a.corrected.value_at_quantile(0.25), 49);
        assert_eq!(a.errors.status.get(&503), Some(&1));
        assert_eq!(a.by_entry[0].responses, 200);
    }
}
