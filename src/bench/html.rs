//! The `--html` report: one self-contained page (inline CSS and SVG, no
//! script, no fonts, nothing fetched), readable in any browser and
//! attachable to an issue.
//!
//! It shows the run's summary, latency by percentile on HdrHistogram's usual
//! log scale (the x axis is `1/(1 - percentile)`: 90%, 99%, 99.9%, ... are
//! evenly spaced, so the tail is as visible as the median), with the
//! uncorrected curve beside the corrected one in constant-rate mode, and
//! throughput (and errors) for each second of the run.

use std::fmt::Write as _;

use super::report::{
    fmt_bytes, fmt_secs, fmt_us, group, group_f, plural, LatencyReport, RunReport,
};
use crate::encoding::html_escape_into;

/// Plot size in SVG user units (the page scales it to the window width).
const PLOT_WIDTH: f64 = 760.0;
const PLOT_HEIGHT: f64 = 340.0;
/// Margins around the plot area: room for tick labels.
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 20.0;
/// Room above the plot area for the legend.
const MARGIN_TOP: f64 = 34.0;
const MARGIN_BOTTOM: f64 = 50.0;
/// Deepest percentile axis shown: 99.9999% (six nines).
const NINES_MAX: f64 = 6.0;

const CORRECTED_COLOUR: &str = "#2456d3";
const UNCORRECTED_COLOUR: &str = "#d9822b";
const ERRORS_COLOUR: &str = "#c62828";

const STYLE: &str = "\
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}\
main{max-width:52rem;margin:0 auto;padding:1rem}\
h1{font-size:1.3rem;margin:.5rem 0}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}\
table{border-collapse:collapse;background:#fff;margin:.5rem 0}\
td,th{border:1px solid #e0e3e8;padding:.25rem .6rem;text-align:right}\
th:first-child,td:first-child{text-align:left}\
svg{width:100%;height:auto;background:#fff;border:1px solid #e0e3e8}\
svg text{font:12px system-ui,sans-serif;fill:#444}\
.grid{stroke:#e6e8ec}.axis{stroke:#888}\
.note{color:#687085;font-size:.85rem}";

/// The whole HTML page for a run.
pub fn page(r: &RunReport) -> String {
    let mut out = String::new();
    let mut title = Vec::new();
    html_escape_into(&mut title, &r.url);
    let url = String::from_utf8_lossy(&title).into_owned();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>uringnotes bench: {url}</title><style>{STYLE}</style></head><body><main>\
<h1>uringnotes bench: {url}</h1>"
    );
    let _ = write!(
        out,
        "<p>{}<br>{} on {}, pipeline {}, {} measured{}; started {} on {} ({}, {} CPUs).</p>",
        esc(&r.mode_description()),
        plural(r.connections as u64, "connection"),
        plural(r.threads as u64, "thread"),
        r.pipeline,
        fmt_secs(r.duration_s),
        if r.warmup_s > 0.0 {
            format!(" after {} warm-up", fmt_secs(r.warmup_s))
        } else {
            String::new()
        },
        esc(&r.started_at),
        esc(&r.host.hostname),
        esc(&r.host.kernel),
        r.host.cpus_online
    );
    summary_table(&mut out, r);
    out.push_str("<h2>Latency by percentile</h2>");
    latency_plot(&mut out, r);
    out.push_str("<h2>Throughput over time</h2>");
    throughput_plot(&mut out, r);
    let _ = writeln!(
        out,
        "<p class=\"note\">uringnotes {} · latency of 2xx and 304 responses in an HdrHistogram with 3 significant digits, microsecond resolution.</p></main></body></html>",
        esc(&r.version)
    );
    out
}

fn esc(s: &str) -> String {
    let mut v = Vec::with_capacity(s.len());
    html_escape_into(&mut v, s);
    String::from_utf8_lossy(&v).into_owned()
}

fn summary_table(out: &mut String, r: &RunReport) {
    let _ = write!(
        out,
        "<table><tr><th>requests</th><td>{}</td></tr><tr><th>throughput</th><td>{} req/s</td></tr>\
<tr><th>2xx or 304</th><td>{}</td></tr><tr><th>errors</th><td>{}{}</td></tr>\
<tr><th>read / written</th><td>{} / {}</td></tr><tr><th>client CPU</th><td>{}{}</td></tr></table>",
        group(r.requests),
        group_f(r.requests_per_s),
        group(r.ok),
        group(r.errors.total),
        if r.errors.total > 0 {
            format!(" ({})", esc(&r.errors.summary()))
        } else {
            String::new()
        },
        fmt_bytes(r.bytes_read as f64),
        fmt_bytes(r.bytes_written as f64),
        fmt_secs(r.client_cpu_s),
        r.client_cpu_us_per_request
            .map_or(String::new(), |us| format!(" ({us:.1} µs per request)"))
    );
    out.push_str(
        "<table><tr><th>latency</th><th>min</th><th>p50</th><th>p90</th><th>p99</th>\
<th>p99.9</th><th>p99.99</th><th>max</th></tr>",
    );
    let row = |out: &mut String, name: &str, l: &LatencyReport| {
        let _ = write!(
            out,
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            fmt_us(l.min),
            fmt_us(l.p50),
            fmt_us(l.p90),
            fmt_us(l.p99),
            fmt_us(l.p99_9),
            fmt_us(l.p99_99),
            fmt_us(l.max)
        );
    };
    if r.rate_per_s.is_some() {
        row(out, "corrected", &r.latency_us);
        row(out, "uncorrected", &r.latency_uncorrected_us);
    } else {
        row(out, "all", &r.latency_us);
    }
    out.push_str("</table>");
}

/// The x position of a percentile on the `1/(1-p)` log axis, in nines.
fn nines(percentile: f64) -> f64 {
    let q = (percentile / 100.0).min(1.0 - 10f64.powf(-NINES_MAX));
    -(1.0 - q).log10()
}

/// A round upper bound for an axis and its tick step.
fn nice_axis(max: f64) -> (f64, f64) {
    if max <= 0.0 {
        return (1.0, 0.25);
    }
    let raw_step = max / 5.0;
    let magnitude = 10f64.powf(raw_step.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw_step)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

struct Frame {
    x_max: f64,
    y_max: f64,
}

impl Frame {
    fn x(&self, v: f64) -> f64 {
        MARGIN_LEFT + v / self.x_max * (PLOT_WIDTH - MARGIN_LEFT - MARGIN_RIGHT)
    }
    fn y(&self, v: f64) -> f64 {
        PLOT_HEIGHT - MARGIN_BOTTOM - v / self.y_max * (PLOT_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM)
    }
}

fn svg_open(out: &mut String, label: &str) {
    let _ = write!(
        out,
        "<svg viewBox=\"0 0 {PLOT_WIDTH} {PLOT_HEIGHT}\" role=\"img\" aria-label=\"{label}\">"
    );
}

/// Horizontal grid lines and y labels from 0 to `frame.y_max`.
fn y_grid(out: &mut String, f: &Frame, step: f64, label: impl Fn(f64) -> String) {
    let mut v = 0.0;
    while v <= f.y_max + step * 1e-6 {
        let y = f.y(v);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{MARGIN_LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/>\
<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            PLOT_WIDTH - MARGIN_RIGHT,
            MARGIN_LEFT - 6.0,
            y + 4.0,
            label(v)
        );
        v += step;
    }
}

fn polyline(out: &mut String, points: &[(f64, f64)], colour: &str, dashed: bool) {
    if points.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{} points=\"",
        if dashed {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        }
    );
    for (x, y) in points {
        let _ = write!(out, "{x:.1},{y:.1} ");
    }
    out.push_str("\"/>");
}

fn legend(out: &mut String, entries: &[(&str, &str)]) {
    for (i, (name, colour)) in entries.iter().enumerate() {
        let x = MARGIN_LEFT + 10.0 + i as f64 * 170.0;
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"14\" height=\"4\" fill=\"{colour}\"/>\
<text x=\"{:.1}\" y=\"{:.1}\">{name}</text>",
            MARGIN_TOP - 22.0,
            x + 20.0,
            MARGIN_TOP - 16.0
        );
    }
}

fn latency_plot(out: &mut String, r: &RunReport) {
    let mut curves: Vec<(&str, &str, &LatencyReport, bool)> =
        vec![("corrected", CORRECTED_COLOUR, &r.latency_us, false)];
    if r.rate_per_s.is_some() {
        curves.push((
            "uncorrected",
            UNCORRECTED_COLOUR,
            &r.latency_uncorrected_us,
            true,
        ));
    } else {
        curves[0].0 = "latency";
    }
    svg_open(out, "latency by percentile");
    if r.latency_us.count == 0 {
        out.push_str(
            "<text x=\"50%\" y=\"50%\" text-anchor=\"middle\">no successful responses</text></svg>",
        );
        return;
    }
    // Show as many nines as the sample count supports (at least 99%).
    let x_max = (r.latency_us.count as f64)
        .log10()
        .floor()
        .clamp(2.0, NINES_MAX);
    let y_max_ms = curves
        .iter()
        .map(|c| c.2.max as f64 / 1e3)
        .fold(0.0, f64::max);
    let (y_max, y_step) = nice_axis(y_max_ms);
    let f = Frame { x_max, y_max };
    y_grid(out, &f, y_step, |v| format!("{}ms", trim_float(v)));
    for n in 0..=(x_max as u32) {
        let x = f.x(f64::from(n));
        let label = match n {
            0 => "0%".to_string(),
            n => format!("{}%", 100.0 - 100.0 * 10f64.powi(-(n as i32))),
        };
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{MARGIN_TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            PLOT_HEIGHT - MARGIN_BOTTOM,
            PLOT_HEIGHT - MARGIN_BOTTOM + 18.0
        );
    }
    let _ = write!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile (log scale of 1/(1-p))</text>",
        (MARGIN_LEFT + PLOT_WIDTH - MARGIN_RIGHT) / 2.0,
        PLOT_HEIGHT - 8.0
    );
    for (_, colour, l, dashed) in &curves {
        let points: Vec<(f64, f64)> = l
            .percentiles
            .iter()
            .filter(|p| nines(p.percentile) <= x_max)
            .map(|p| (f.x(nines(p.percentile)), f.y(p.value_us as f64 / 1e3)))
            .collect();
        polyline(out, &points, colour, *dashed);
    }
    let names: Vec<(&str, &str)> = curves.iter().map(|c| (c.0, c.1)).collect();
    legend(out, &names);
    out.push_str("</svg>");
}

fn throughput_plot(out: &mut String, r: &RunReport) {
    svg_open(out, "throughput over time");
    let seconds = r.throughput_per_s.len().max(r.errors_per_s.len());
    if seconds == 0 {
        out.push_str("<text x=\"50%\" y=\"50%\" text-anchor=\"middle\">no responses</text></svg>");
        return;
    }
    let peak = r
        .throughput_per_s
        .iter()
        .chain(&r.errors_per_s)
        .copied()
        .max()
        .unwrap_or(0) as f64;
    let (y_max, y_step) = nice_axis(peak);
    let x_max = seconds as f64;
    let f = Frame { x_max, y_max };
    y_grid(out, &f, y_step, |v| group(v.round() as u64));
    let (_, x_step) = nice_axis(x_max);
    let mut s = 0.0;
    while s <= x_max + 1e-9 {
        let x = f.x(s);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{MARGIN_TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}s</text>",
            PLOT_HEIGHT - MARGIN_BOTTOM,
            PLOT_HEIGHT - MARGIN_BOTTOM + 18.0,
            trim_float(s)
        );
        s += x_step.max(1.0);
    }
    let _ = write!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds into the measurement (responses per second)</text>",
        (MARGIN_LEFT + PLOT_WIDTH - MARGIN_RIGHT) / 2.0,
        PLOT_HEIGHT - 8.0
    );
    // Each second's count is drawn at the middle of its second.
    let series = |v: &[u64]| -> Vec<(f64, f64)> {
        v.iter()
            .enumerate()
            .map(|(i, n)| (f.x(i as f64 + 0.5), f.y(*n as f64)))
            .collect()
    };
    polyline(out, &series(&r.throughput_per_s), CORRECTED_COLOUR, false);
    let mut names = vec![("responses/s", CORRECTED_COLOUR)];
    if r.errors.total > 0 {
        polyline(out, &series(&r.errors_per_s), ERRORS_COLOUR, false);
        names.push(("errors/s", ERRORS_COLOUR));
    }
    legend(out, &names);
    out.push_str("</svg>");
}

/// `2.5` stays `2.5`, `3.0` becomes `3`.
fn trim_float(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_percentile_axis_counts_nines() {
        assert!((nines(0.0) - 0.0).abs() < 1e-9);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert!((nines(100.0) - NINES_MAX).abs() < 1e-6);
    }

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_axis(9.3), (10.0, 2.0));
        assert_eq!(nice_axis(41_152.0), (50_000.0, 10_000.0));
        assert_eq!(nice_axis(0.0), (1.0, 0.25));
    }

    #[test]
    fn a_page_fetches_nothing_and_escapes_the_url() {
        let r = RunReport {
            url: "http://h/<script>".into(),
            throughput_per_s: vec![10, 12],
            ..RunReport::default()
        };
        let html = page(&r);
        assert!(!html.contains("<script"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains(" src="));
        assert!(!html.contains("<link"));
        assert_eq!(html.matches("<svg").count(), 2);
    }
}
