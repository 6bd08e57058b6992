//! The live progress line on stderr (only when stderr is a terminal).
//!
//! Runs on the main thread, which has nothing else to do during a run. It
//! reads what each thread published in its [`Live`] (counts and a copy of
//! its latency histogram, refreshed twice a second) and rewrites one line:
//! elapsed / total, current requests/s, errors, p99 so far. The line is
//! cleared at the end so the report starts on a clean screen.

use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::report::fmt_us;
use super::schedule::Window;
use super::stats::new_histogram;
use super::Live;

/// How often the line is rewritten.
pub const PRINT_INTERVAL: Duration = Duration::from_secs(1);

pub struct Progress {
    window: Window,
    lives: Vec<Arc<Live>>,
    /// Responses at the previous print, and when that was.
    last: (u64, Instant),
}

impl Progress {
    pub fn new(window: Window, lives: Vec<Arc<Live>>) -> Progress {
        Progress {
            window,
            lives,
            last: (0, window.start),
        }
    }

    /// Rewrites the progress line.
    pub fn print(&mut self) {
        let now = Instant::now();
        let responses: u64 = self
            .lives
            .iter()
            .map(|l| l.responses.load(Ordering::Relaxed))
            .sum();
        let errors: u64 = self
            .lives
            .iter()
            .map(|l| l.errors.load(Ordering::Relaxed))
            .sum();
        let mut latency = new_histogram();
        for live in &self.lives {
            if let Ok(h) = live.latency.lock() {
                let _ = latency.add(&*h);
            }
        }
        let (last_responses, last_at) = self.last;
        let secs = now.saturating_duration_since(last_at).as_secs_f64();
        let rate = if secs > 0.0 {
            responses.saturating_sub(last_responses) as f64 / secs
        } else {
            0.0
        };
        self.last = (responses, now);
        let line = if now < self.window.measure_start {
            format!(
                "warming up: {:.0}s left",
                (self.window.measure_start - now).as_secs_f64().ceil()
            )
        } else {
            let elapsed = now.saturating_duration_since(self.window.measure_start);
            let total = self.window.end - self.window.measure_start;
            let p99 = if latency.is_empty() {
                "-".to_string()
            } else {
                fmt_us(latency.value_at_quantile(0.99))
            };
            format!(
                "[{:>4.0}s / {:.0}s] {:>10.0} req/s   errors {}   p99 {}",
                elapsed.as_secs_f64().min(total.as_secs_f64()),
                total.as_secs_f64(),
                rate,
                errors,
                p99
            )
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{line}");
        let _ = err.flush();
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K");
        let _ = err.flush();
    }
}
