//! `uringnotes bench compare BEFORE.json AFTER.json`: two runs side by side.
//!
//! Reads two `--json` reports and prints throughput, errors, latency
//! percentiles and client CPU of each with the ratio after/before. For
//! throughput a ratio above 1 is better; for latency and CPU below 1 is.
//! Settings that differ between the runs (mode, rate, connections, ...) are
//! listed first, because a ratio between unlike runs means little.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use super::report::{fmt_us, group, group_f, RunReport};
use super::EXIT_BAD_INPUT;

/// Largest report file read (a day of per-second series is far below this).
const REPORT_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Why a report cannot be compared.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is larger than 64 MiB: not a bench report")]
    TooLarge { path: String },
    #[error("{path} is not a uringnotes bench JSON report: {why}")]
    NotAReport { path: String, why: String },
}

/// Loads a report written with `--json`.
pub fn load(path: &Path) -> Result<RunReport, CompareError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| CompareError::Read {
        path: shown.clone(),
        source,
    })?;
    if meta.len() > REPORT_BYTES_MAX {
        return Err(CompareError::TooLarge { path: shown });
    }
    let bytes = std::fs::read(path).map_err(|source| CompareError::Read {
        path: shown.clone(),
        source,
    })?;
    let report: RunReport =
        serde_json::from_slice(&bytes).map_err(|e| CompareError::NotAReport {
            path: shown.clone(),
            why: e.to_string(),
        })?;
    if report.tool != "uringnotes bench" {
        return Err(CompareError::NotAReport {
            path: shown,
            why: "its \"tool\" field is not \"uringnotes bench\"".into(),
        });
    }
    Ok(report)
}

pub fn main(before: &Path, after: &Path) -> ExitCode {
    let loaded = load(before).and_then(|b| Ok((b, load(after)?)));
    match loaded {
        Ok((b, a)) => {
            print!(
                "{}",
                table(
                    &b,
                    &a,
                    &before.display().to_string(),
                    &after.display().to_string()
                )
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("uringnotes bench compare: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn ratio(before: f64, after: f64) -> String {
    if before > 0.0 {
        format!("{:.2}x", after / before)
    } else {
        "-".into()
    }
}

/// The side-by-side table.
pub fn table(b: &RunReport, a: &RunReport, b_name: &str, a_name: &str) -> String {
    let mut out = String::new();
    let setting = |name: &str, x: String, y: String, out: &mut String| {
        if x != y {
            let _ = writeln!(out, "note: the runs differ in {name}: {x} vs {y}");
        }
    };
    setting("URL", b.url.clone(), a.url.clone(), &mut out);
    setting("mode", b.mode.clone(), a.mode.clone(), &mut out);
    let rate = |r: &RunReport| r.rate_per_s.map_or("none".into(), |n| format!("{n} req/s"));
    setting("rate", rate(b), rate(a), &mut out);
    setting(
        "connections",
        b.connections.to_string(),
        a.connections.to_string(),
        &mut out,
    );
    setting(
        "pipeline",
        b.pipeline.to_string(),
        a.pipeline.to_string(),
        &mut out,
    );
    setting(
        "threads",
        b.threads.to_string(),
        a.threads.to_string(),
        &mut out,
    );
    setting(
        "duration",
        format!("{}s", b.duration_s),
        format!("{}s", a.duration_s),
        &mut out,
    );
    let mix = |r: &RunReport| {
        r.mix
            .iter()
            .map(|m| format!("{} {}:{}", m.method, m.path, m.weight))
            .collect::<Vec<_>>()
            .join(",")
    };
    setting("mix", mix(b), mix(a), &mut out);
    if !out.is_empty() {
        out.push('\n');
    }
    let name_width = 18;
    let col = b_name.len().max(a_name.len()).clamp(12, 40);
    let _ = writeln!(
        out,
        "{:<name_width$} {:>col$} {:>col$} {:>8}",
        "", b_name, a_name, "ratio"
    );
    let mut row = |name: &str, x: String, y: String, r: String| {
        let _ = writeln!(out, "{name:<name_width$} {x:>col$} {y:>col$} {r:>8}");
    };
    row(
        "requests/s",
        group_f(b.requests_per_s),
        group_f(a.requests_per_s),
        ratio(b.requests_per_s, a.requests_per_s),
    );
    row(
        "requests",
        group(b.requests),
        group(a.requests),
        ratio(b.requests as f64, a.requests as f64),
    );
    row(
        "errors",
        group(b.errors.total),
        group(a.errors.total),
        ratio(b.errors.total as f64, a.errors.total as f64),
    );
    let lat = [
        ("latency min", b.latency_us.min, a.latency_us.min),
        ("latency p50", b.latency_us.p50, a.latency_us.p50),
        ("latency p90", b.latency_us.p90, a.latency_us.p90),
        ("latency p99", b.latency_us.p99, a.latency_us.p99),
        ("latency p99.9", b.latency_us.p99_9, a.latency_us.p99_9),
        ("latency p99.99", b.latency_us.p99_99, a.latency_us.p99_99),
        ("latency max", b.latency_us.max, a.latency_us.max),
    ];
    for (name, x, y) in lat {
        row(name, fmt_us(x), fmt_us(y), ratio(x as f64, y as f64));
    }
    let cpu = |r: &RunReport| {
        r.client_cpu_us_per_request
            .map_or("-".to_string(), |us| format!("{us:.2}µs"))
    };
    row(
        "client CPU/request",
        cpu(b),
        cpu(a),
        match (b.client_cpu_us_per_request, a.client_cpu_us_per_request) {
            (Some(x), Some(y)) => ratio(x, y),
            _ => "-".into(),
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_after_over_before_and_differences_are_noted() {
        let mut b = RunReport {
            tool: "uringnotes bench".into(),
            requests_per_s: 1000.0,
            connections: 64,
            ..RunReport::default()
        };
        b.latency_us.p99 = 2000;
        let mut a = b.clone();
        a.requests_per_s = 1500.0;
        a.latency_us.p99 = 1000;
        a.connections = 512;
        let t = table(&b, &a, "before.json", "after.json");
        assert!(t.contains("note: the runs differ in connections: 64 vs 512"));
        let line = |name: &str| t.lines().find(|l| l.starts_with(name)).unwrap().to_string();
        assert!(line("requests/s").ends_with("1.50x"), "{t}");
        assert!(line("latency p99 ").ends_with("0.50x"), "{t}");
    }
}
