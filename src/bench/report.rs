//! The results of a run: the machine-readable [`RunReport`] (the `--json`
//! file, also what `compare` and the HTML page read), the text report on
//! stdout, and the HdrHistogram percentile distribution (`--hgrm`).
//!
//! Latencies are microseconds everywhere in the JSON (`*_us`). In the text
//! report they are shown with a unit chosen per value (`µs`, `ms`, `s`).
//! The `.hgrm` file follows HdrHistogram's `outputPercentileDistribution`
//! with values in milliseconds (as wrk2 writes it), so the HdrHistogram
//! plotter and other tools read it unchanged.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::schedule::Mode;
use super::stats::{ErrorCounts, LATENCY_SIGFIG};
use super::{Outcome, Plan};

/// Percentile steps per halving of the distance to 100% (HdrHistogram's
/// default for percentile distributions).
pub const PERCENTILE_TICKS_PER_HALF: u32 = 5;
/// `.hgrm` values are milliseconds: microseconds divided by this.
const HGRM_VALUE_SCALE: f64 = 1000.0;

/// Everything about one run, as written to `--json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunReport {
    pub tool: String,
    pub version: String,
    /// Start of the run (RFC 3339, UTC).
    pub started_at: String,
    pub url: String,
    /// `closed` or `rate`.
    pub mode: String,
    pub rate_per_s: Option<u64>,
    pub connections: usize,
    pub threads: usize,
    /// The CPU each thread was pinned to.
    pub cpus: Vec<usize>,
    pub pipeline: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub timeout_ms: u64,
    pub host: HostInfo,
    pub mix: Vec<MixReport>,
    /// Complete responses (any status) in the measurement.
    pub requests: u64,
    /// Successful responses: 2xx, and 304 (to a conditional request).
    pub ok: u64,
    /// `requests` per second of the measurement.
    pub requests_per_s: f64,
    /// Bytes received, heads and bodies (what came over the wire, less
    /// TCP/IP framing), inside the measurement.
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// `bytes_read` per complete response: what one answer costs on the
    /// wire (compare servers and content codings with it).
    pub bytes_read_per_response: Option<f64>,
    /// Requests still unanswered when the run ended (not errors).
    pub abandoned: u64,
    pub errors: ErrorReport,
    /// CPU time (user + system) of the load generator during the run.
    pub client_cpu_s: f64,
    pub client_cpu_us_per_request: Option<f64>,
    /// Latency of successful responses; in rate mode from each request's due time
    /// (corrected for coordinated omission).
    pub latency_us: LatencyReport,
    /// Latency of successful responses from the actual send (what a naive load
    /// generator reports). Equal to `latency_us` in closed-loop mode.
    pub latency_uncorrected_us: LatencyReport,
    /// Complete responses in each second of the measurement.
    pub throughput_per_s: Vec<u64>,
    /// Errors in each second of the measurement.
    pub errors_per_s: Vec<u64>,
    /// Every request on a new connection (`--connection-per-request`).
    pub connection_per_request: bool,
    /// TLS handshakes, for an `https` target.
    pub tls: Option<TlsReport>,
}

/// The TLS handshakes of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsReport {
    /// Completed handshakes in the measurement: full plus resumed.
    pub handshakes: u64,
    pub full: u64,
    pub resumed: u64,
    pub failed: u64,
    /// Why the first failed handshake failed.
    pub first_error: Option<String>,
    pub handshakes_per_s: f64,
    /// From the start of the TCP connect to a usable connection.
    pub handshake_us: LatencyReport,
}

/// Where the benchmark ran.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HostInfo {
    pub hostname: String,
    pub kernel: String,
    pub cpus_online: usize,
}

/// One mix entry and what happened to its requests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MixReport {
    pub method: String,
    pub path: String,
    pub weight: u32,
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorReport {
    pub total: u64,
    pub connect: u64,
    /// TLS handshakes that failed (the connect worked).
    pub tls: u64,
    pub timeout: u64,
    pub reset: u64,
    pub protocol: u64,
    /// Non-2xx responses by status code.
    pub status: BTreeMap<String, u64>,
}

/// Summary of one latency histogram, in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencyReport {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub stdev: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub p99_99: u64,
    pub max: u64,
    /// The percentile distribution (same points as the `.hgrm` file).
    pub percentiles: Vec<PercentilePoint>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct PercentilePoint {
    /// 0 to 100.
    pub percentile: f64,
    pub value_us: u64,
}

impl LatencyReport {
    pub fn new(h: &Histogram<u64>) -> LatencyReport {
        if h.is_empty() {
            return LatencyReport::default();
        }
        LatencyReport {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            stdev: h.stdev(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            p99_99: h.value_at_quantile(0.9999),
            max: h.max(),
            percentiles: h
                .iter_quantiles(PERCENTILE_TICKS_PER_HALF)
                .map(|v| PercentilePoint {
                    percentile: v.quantile_iterated_to() * 100.0,
                    value_us: v.value_iterated_to(),
                })
                .collect(),
        }
    }
}

impl ErrorReport {
    fn new(e: &ErrorCounts) -> ErrorReport {
        ErrorReport {
            total: e.total(),
            connect: e.connect,
            tls: e.tls,
            timeout: e.timeout,
            reset: e.reset,
            protocol: e.protocol,
            status: e.status.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    /// `connect 3, timeout 1, status 404: 12` (only kinds that occurred).
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (name, n) in [
            ("connect", self.connect),
            ("tls", self.tls),
            ("timeout", self.timeout),
            ("reset", self.reset),
            ("protocol", self.protocol),
        ] {
            if n > 0 {
                parts.push(format!("{name} {}", group(n)));
            }
        }
        for (code, n) in &self.status {
            parts.push(format!("status {code}: {}", group(*n)));
        }
        parts.join(", ")
    }
}

impl RunReport {
    pub fn new(plan: &Plan, outcome: &Outcome) -> RunReport {
        let stats = &outcome.stats;
        let secs = plan.duration.as_secs_f64();
        let corrected = LatencyReport::new(&stats.corrected);
        let uncorrected = match &stats.uncorrected {
            Some(h) => LatencyReport::new(h),
            None => corrected.clone(),
        };
        let client_cpu_s = outcome.client_cpu.as_secs_f64();
        RunReport {
            tool: "uringnotes bench".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: humantime::format_rfc3339_millis(outcome.started_at).to_string(),
            url: plan.target.url.clone(),
            mode: plan.mode.name().into(),
            rate_per_s: match plan.mode {
                Mode::Rate { requests_per_s } => Some(requests_per_s),
                Mode::Closed => None,
            },
            connections: plan.connections,
            threads: plan.cpus.len(),
            cpus: plan.cpus.clone(),
            pipeline: plan.pipeline,
            duration_s: secs,
            warmup_s: plan.warmup.as_secs_f64(),
            timeout_ms: plan.timeout.as_millis() as u64,
            host: HostInfo::current(),
            mix: plan
                .mix
                .entries
                .iter()
                .zip(&stats.by_entry)
                .map(|(e, c)| MixReport {
                    method: e.method.clone(),
                    path: e.path.clone(),
                    weight: e.weight,
                    requests: c.responses,
                    ok: c.ok,
                    errors: c.errors,
                })
                .collect(),
            requests: stats.responses,
            ok: stats.ok,
            requests_per_s: stats.responses as f64 / secs,
            bytes_read: stats.bytes_read,
            bytes_written: stats.bytes_written,
            bytes_read_per_response: (stats.responses > 0)
                .then(|| stats.bytes_read as f64 / stats.responses as f64),
            abandoned: stats.abandoned,
            errors: ErrorReport::new(&stats.errors),
            client_cpu_s,
            client_cpu_us_per_request: (stats.responses > 0)
                .then(|| client_cpu_s * 1e6 / stats.responses as f64),
            latency_us: corrected,
            latency_uncorrected_us: uncorrected,
            throughput_per_s: stats.responses_per_s.clone(),
            errors_per_s: stats.errors_per_s.clone(),
            connection_per_request: plan.connection_per_request,
            tls: plan.target.tls.then(|| {
                let h = &stats.handshakes;
                TlsReport {
                    handshakes: h.total(),
                    full: h.full,
                    resumed: h.resumed,
                    failed: h.failed,
                    first_error: h.first_error.clone(),
                    handshakes_per_s: h.total() as f64 / secs,
                    handshake_us: LatencyReport::new(&h.time),
                }
            }),
        }
    }

    /// A sentence saying how the run paced its requests.
    pub fn mode_description(&self) -> String {
        match self.rate_per_s {
            Some(r) => format!(
                "constant rate, {} req/s: latency from each request's scheduled send time (corrected for coordinated omission)",
                group(r)
            ),
            None => "closed loop: each connection sends as soon as its previous answer arrived; latency from the actual send".into(),
        }
    }
}

impl HostInfo {
    pub fn current() -> HostInfo {
        let (hostname, kernel) =
            crate::host::uname().map_or_else(Default::default, |u| (u.nodename, u.release));
        HostInfo {
            hostname,
            kernel,
            // Online CPUs of the machine, not those this process may use.
            // SAFETY: sysconf only reads a system value.
            cpus_online: usize::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) })
                .unwrap_or(0),
        }
    }
}

/// The one-line message when no request succeeded.
pub fn all_failed_line(r: &RunReport) -> String {
    if r.errors.total == 0 {
        return format!(
            "no request completed against {} in {} ({} still unanswered at the end)",
            r.url,
            fmt_secs(r.duration_s),
            group(r.abandoned)
        );
    }
    let tls_why = r
        .tls
        .as_ref()
        .and_then(|t| t.first_error.as_ref())
        .map_or(String::new(), |why| {
            format!("; the first TLS handshake failed: {why}")
        });
    format!(
        "every request failed against {}: {} errors ({}) and no successful response{tls_why}",
        r.url,
        group(r.errors.total),
        r.errors.summary()
    )
}

/// The text report printed on stdout.
pub fn text(r: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "uringnotes bench {}", r.url);
    let _ = writeln!(out, "  mode       {}", r.mode_description());
    let warmup = if r.warmup_s > 0.0 {
        format!(" after {} warm-up", fmt_secs(r.warmup_s))
    } else {
        String::new()
    };
    let cpus: Vec<String> = r.cpus.iter().map(|c| c.to_string()).collect();
    let _ = writeln!(
        out,
        "  load       {}{} on {} (CPUs {}), pipeline {}, {}{warmup}, timeout {}",
        plural(r.connections as u64, "connection"),
        if r.connection_per_request {
            " (a new one per request)"
        } else {
            ""
        },
        plural(r.threads as u64, "thread"),
        cpus.join(","),
        r.pipeline,
        fmt_secs(r.duration_s),
        fmt_secs(r.timeout_ms as f64 / 1000.0)
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "requests     {} in {} = {} req/s ({} 2xx or 304)",
        group(r.requests),
        fmt_secs(r.duration_s),
        group_f(r.requests_per_s),
        group(r.ok)
    );
    let per_response = r
        .bytes_read_per_response
        .map_or(String::new(), |b| format!(", {b:.0} B per response"));
    let _ = writeln!(
        out,
        "transfer     {} read ({}/s{per_response}), {} written",
        fmt_bytes(r.bytes_read as f64),
        fmt_bytes(r.bytes_read as f64 / r.duration_s),
        fmt_bytes(r.bytes_written as f64)
    );
    if r.errors.total == 0 {
        let _ = writeln!(out, "errors       none");
    } else {
        let _ = writeln!(
            out,
            "errors       {} ({})",
            group(r.errors.total),
            r.errors.summary()
        );
    }
    if let Some(t) = &r.tls {
        let _ = writeln!(
            out,
            "handshakes   {} = {}/s (full {}, resumed {}, failed {}); time to a usable connection p50 {}, p99 {}, max {}",
            group(t.handshakes),
            group_f(t.handshakes_per_s),
            group(t.full),
            group(t.resumed),
            group(t.failed),
            fmt_us(t.handshake_us.p50),
            fmt_us(t.handshake_us.p99),
            fmt_us(t.handshake_us.max)
        );
        if let Some(why) = &t.first_error {
            let _ = writeln!(out, "             first failed handshake: {why}");
        }
    }
    if r.abandoned > 0 {
        let _ = writeln!(
            out,
            "unanswered   {} in flight at the end (not counted)",
            plural(r.abandoned, "request")
        );
    }
    if r.mix.len() > 1 {
        let total_weight: u64 = r.mix.iter().map(|m| u64::from(m.weight)).sum();
        for m in &r.mix {
            let _ = writeln!(
                out,
                "  {:<24} {:>5.1}%  {:>12} responses  {:>8} errors",
                format!("{} {}", m.method, m.path),
                100.0 * f64::from(m.weight) / total_weight as f64,
                group(m.requests),
                group(m.errors)
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "latency of 2xx and 304 responses (HdrHistogram, {LATENCY_SIGFIG} significant digits)"
    );
    let _ = writeln!(
        out,
        "               {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "min", "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean"
    );
    let row = |name: &str, l: &LatencyReport| {
        format!(
            "  {name:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            fmt_us(l.min),
            fmt_us(l.p50),
            fmt_us(l.p90),
            fmt_us(l.p99),
            fmt_us(l.p99_9),
            fmt_us(l.p99_99),
            fmt_us(l.max),
            fmt_us(l.mean.round() as u64)
        )
    };
    if r.rate_per_s.is_some() {
        out.push_str(&row("corrected", &r.latency_us));
        out.push_str(&row("uncorrected", &r.latency_uncorrected_us));
        let _ = writeln!(
            out,
            "  (uncorrected: from the actual send, as a naive load generator would measure)"
        );
    } else {
        out.push_str(&row("", &r.latency_us));
    }
    let _ = writeln!(out);
    let per_request = r
        .client_cpu_us_per_request
        .map_or(String::new(), |us| format!(" ({us:.1} µs per request)"));
    let _ = writeln!(
        out,
        "client CPU   {}{per_request}",
        fmt_secs(r.client_cpu_s)
    );
    out
}

/// HdrHistogram's percentile distribution text (`outputPercentileDistribution`,
/// values in milliseconds), as read by the HdrHistogram plotter.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(PERCENTILE_TICKS_PER_HALF) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / HGRM_VALUE_SCALE;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (
            h.mean() / HGRM_VALUE_SCALE,
            h.stdev() / HGRM_VALUE_SCALE,
            h.max() as f64 / HGRM_VALUE_SCALE,
        )
    };
    let sub_buckets = 2u64.pow((2.0 * 10f64.powi(i32::from(h.sigfig()))).log2().ceil() as u32);
    let _ = writeln!(
        out,
        "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:12.3}, Total count    = {:12}]",
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {sub_buckets:12}]",
        h.buckets()
    );
    out
}

/// A latency with a unit that suits it: `870µs`, `10.1ms`, `1.25s`.
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 10_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// Seconds without needless decimals: `30s`, `0.5s`, `2.25s`.
pub fn fmt_secs(s: f64) -> String {
    if (s - s.round()).abs() < 1e-9 {
        format!("{}s", s.round() as u64)
    } else {
        format!("{}s", (s * 1000.0).round() / 1000.0)
    }
}

/// Bytes in SI units: `12.3 MB`.
pub fn fmt_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// An integer with thousands separators: `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 request`, `3 requests`.
pub fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{} {noun}s", group(n))
    }
}

/// A rate with thousands separators and one decimal below 100.
pub fn group_f(x: f64) -> String {
    if x < 100.0 {
        format!("{x:.1}")
    } else {
        group(x.round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::new_histogram;

    #[test]
    fn numbers_read_well() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(fmt_us(870), "870µs");
        assert_eq!(fmt_us(10_050), "10.1ms");
        assert_eq!(fmt_us(1_250_000), "1.25s");
        assert_eq!(fmt_secs(30.0), "30s");
        assert_eq!(fmt_secs(0.5), "0.5s");
        assert_eq!(fmt_bytes(12_345_678.0), "12.3 MB");
    }

    #[test]
    fn hgrm_has_the_plotter_layout() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let text = hgrm(&h);
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        );
        assert_eq!(lines.next(), Some(""));
        let rows: Vec<Vec<f64>> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().map(|f| f.parse().unwrap()).collect())
            .collect();
        assert!(rows.len() > 50);
        // Values in ms, percentiles rising to 1, counts rising to the total.
        assert!((rows[0][0] - 0.001).abs() < 1e-9);
        assert_eq!(rows.last().unwrap()[1], 1.0);
        assert_eq!(rows.last().unwrap()[2], 10_000.0);
        assert_eq!(rows.last().unwrap().len(), 3);
        for w in rows.windows(2) {
            assert!(w[0][1] <= w[1][1] && w[0][2] <= w[1][2]);
        }
        assert!(text.contains("#[Max     =       10.007, Total count    =        10000]"));
        assert!(text.contains("SubBuckets     =         2048]"));
    }
}
