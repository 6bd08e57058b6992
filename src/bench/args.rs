//! The `bench` command line and its validation into a [`Plan`].
//!
//! Values a user is likely to get wrong (the URL, `--mix`, durations,
//! headers) are taken as text and checked here, so every mistake is one line
//! on stderr and exit code 2 (see `mod.rs`), not a usage dump. Every number
//! has a bound ([`CONNECTIONS_MAX`], ...).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::mix::{self, Mix, MixError};
use super::schedule::Mode;
use super::url::{self, UrlError};
use super::{Outputs, Plan, TlsPlan};
use crate::tls::client::{self as tls_client, ClientTlsError, Trust};

/// The CA bundle trusted for https targets when no `--cacert` is given
/// (Debian's `ca-certificates`).
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Most connections of one run. One address can take about this many from
/// one client IP before the ephemeral port range runs out; each costs a
/// descriptor and a 32 KiB read buffer.
pub const CONNECTIONS_MAX: usize = 60_000;
/// Most requests in flight per connection with `--pipeline`.
pub const PIPELINE_MAX: usize = 1024;
/// Highest total `--rate`, requests per second.
pub const RATE_MAX: u64 = 100_000_000;
/// Longest `--duration` (and `--warmup`).
pub const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);
/// Longest `--timeout`.
pub const TIMEOUT_MAX: Duration = Duration::from_secs(3600);

#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  uringnotes bench http://127.0.0.1:8080/ -c 256 -d 30s\n  uringnotes bench http://host:8080/ -c 512 -d 60s --rate 50000 \\\n      --mix 'GET /:80,GET /notes:10,POST /notes:10' --json run.json --html run.html --hgrm run.hgrm\n  uringnotes bench compare before.json after.json"
)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// Target URL: http://HOST[:PORT][/PATH] or https://... (the request is GET PATH unless --mix is given).
    #[arg(required = true, value_name = "URL")]
    pub url: Option<String>,
    /// https: trust the CA certificates in this PEM file [default: the system's, /etc/ssl/certs/ca-certificates.crt].
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// https: accept any server certificate (handshake signatures are still verified).
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// Open a new connection for every request (`Connection: close`): measures
    /// connection set-up, and with https handshakes per second.
    #[arg(long)]
    pub connection_per_request: bool,
    /// https: never resume a TLS session, so every handshake is a full one.
    #[arg(long)]
    pub no_tls_resume: bool,
    /// Open connections (keep-alive), spread over the threads.
    #[arg(short = 'c', long, default_value_t = 64, value_name = "N")]
    pub connections: usize,
    /// How long to measure, e.g. 30s, 500ms, 2m (a bare number is seconds).
    #[arg(short = 'd', long, default_value = "10s", value_name = "DURATION")]
    pub duration: String,
    /// Load threads, one pinned per CPU [default: every CPU this process may run on].
    #[arg(short = 't', long, value_name = "N")]
    pub threads: Option<usize>,
    /// Constant total rate in requests/s (latency corrected for coordinated
    /// omission); without it, closed loop (as fast as possible).
    #[arg(short = 'R', long, value_name = "REQ_PER_S")]
    pub rate: Option<u64>,
    /// Request mix with weights: 'METHOD PATH[:WEIGHT],...', e.g. 'GET /:80,GET /notes:10,POST /notes:10'.
    /// POST/PUT/PATCH send a form body text=... unique per request.
    #[arg(short = 'm', long, value_name = "MIX")]
    pub mix: Option<String>,
    /// Requests sent back to back per connection before waiting for the answers (closed loop only).
    #[arg(short = 'p', long, default_value_t = 1, value_name = "N")]
    pub pipeline: usize,
    /// Send requests for this long before measuring, e.g. 2s.
    #[arg(short = 'w', long, default_value = "0s", value_name = "DURATION")]
    pub warmup: String,
    /// A request not answered within this is a timeout error.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub timeout: String,
    /// Extra request header 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// Write the whole result as JSON (with the per-second throughput series).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report (latency by percentile, throughput over time).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write the HdrHistogram percentile distribution (the plotter's .hgrm format).
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Print two runs (JSON files written with --json) side by side with ratios.
    Compare {
        /// The baseline run.
        before: PathBuf,
        /// The run to compare with it.
        after: PathBuf,
    },
}

/// Why the arguments do not make a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Mix(#[from] MixError),
    #[error("bad {flag} {value:?}: {why}")]
    Duration {
        flag: &'static str,
        value: String,
        why: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Tls(#[from] ClientTlsError),
}

/// Parses a duration: humantime (`30s`, `500ms`, `2m`, `1h 30m`) or a bare
/// number of seconds.
pub fn parse_duration(flag: &'static str, value: &str) -> Result<Duration, ArgsError> {
    let bad = |why: String| ArgsError::Duration {
        flag,
        value: value.to_string(),
        why,
    };
    let text = value.trim();
    let d = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(text.parse().map_err(|_| bad("too large".into()))?)
    } else {
        humantime::parse_duration(text)
            .map_err(|e| bad(format!("{e} (expected e.g. 30s, 500ms, 2m)")))?
    };
    if d > DURATION_MAX {
        return Err(bad("longer than 24h".into()));
    }
    Ok(d)
}

/// The CPUs this process may run on (its affinity mask: `taskset` is respected).
pub fn allowed_cpus() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_default()
}

impl BenchArgs {
    /// Validates everything and resolves the host; no connection is made yet.
    pub fn to_plan(&self, progress: bool) -> Result<Plan, ArgsError> {
        let url_text = self
            .url
            .as_deref()
            .ok_or_else(|| ArgsError::Invalid("a URL is required".into()))?;
        // Check the cheap things before a possibly slow name lookup.
        url::parse(url_text)?;
        let duration = parse_duration("--duration", &self.duration)?;
        if duration.is_zero() {
            return Err(ArgsError::Duration {
                flag: "--duration",
                value: self.duration.clone(),
                why: "must be more than 0".into(),
            });
        }
        let warmup = parse_duration("--warmup", &self.warmup)?;
        let timeout = parse_duration("--timeout", &self.timeout)?;
        if timeout.is_zero() || timeout > TIMEOUT_MAX {
            return Err(ArgsError::Duration {
                flag: "--timeout",
                value: self.timeout.clone(),
                why: "must be more than 0 and at most 1h".into(),
            });
        }
        if !(1..=CONNECTIONS_MAX).contains(&self.connections) {
            return Err(ArgsError::Invalid(format!(
                "bad --connections {}: must be from 1 to {CONNECTIONS_MAX}",
                self.connections
            )));
        }
        if !(1..=PIPELINE_MAX).contains(&self.pipeline) {
            return Err(ArgsError::Invalid(format!(
                "bad --pipeline {}: must be from 1 to {PIPELINE_MAX}",
                self.pipeline
            )));
        }
        let mode = match self.rate {
            None => Mode::Closed,
            Some(r) if (1..=RATE_MAX).contains(&r) => {
                if self.pipeline > 1 {
                    return Err(ArgsError::Invalid(
                        "--pipeline works only in closed-loop mode (without --rate): a constant rate sends each request at its own time".into(),
                    ));
                }
                Mode::Rate { requests_per_s: r }
            }
            Some(r) => {
                return Err(ArgsError::Invalid(format!(
                    "bad --rate {r}: must be from 1 to {RATE_MAX} requests/s"
                )))
            }
        };
        let cpus_allowed = allowed_cpus();
        if cpus_allowed.is_empty() {
            return Err(ArgsError::Invalid(
                "cannot list the CPUs this process may run on".into(),
            ));
        }
        let threads = self.threads.unwrap_or(cpus_allowed.len());
        if threads == 0 || threads > cpus_allowed.len() {
            return Err(ArgsError::Invalid(format!(
                "bad --threads {threads}: this process may run on {} CPUs ({:?})",
                cpus_allowed.len(),
                cpus_allowed
            )));
        }
        // No more threads than connections: a thread without one would idle.
        let threads = threads.min(self.connections);
        let mut headers = mix::render_headers(&self.headers)?;
        if self.connection_per_request {
            if self.pipeline > 1 {
                return Err(ArgsError::Invalid(
                    "--pipeline needs keep-alive connections: not with --connection-per-request"
                        .into(),
                ));
            }
            headers.push_str("Connection: close\r\n");
        }
        let parsed = url::parse(url_text)?;
        if !parsed.tls && (self.cacert.is_some() || self.insecure || self.no_tls_resume) {
            return Err(ArgsError::Invalid(
                "--cacert, --insecure and --no-tls-resume are for https:// URLs".into(),
            ));
        }
        if self.insecure && self.cacert.is_some() {
            return Err(ArgsError::Invalid(
                "--insecure trusts any certificate: leave out --cacert, or --insecure".into(),
            ));
        }
        let tls = if parsed.tls {
            let trust = match (&self.cacert, self.insecure) {
                (_, true) => Trust::Anyone,
                (Some(path), false) => Trust::CaFile(path.clone()),
                (None, false) if std::path::Path::new(SYSTEM_CA_FILE).exists() => {
                    Trust::CaFile(SYSTEM_CA_FILE.into())
                }
                (None, false) => {
                    return Err(ArgsError::Invalid(format!(
                        "https needs a CA to trust: --cacert FILE, or --insecure ({SYSTEM_CA_FILE} is missing)"
                    )))
                }
            };
            let config = tls_client::config(&trust, !self.no_tls_resume)?;
            let server_name = tls_client::server_name(&parsed.host)
                .map_err(|why| ArgsError::Invalid(format!("bad TLS server name {why}")))?;
            Some(TlsPlan {
                config,
                server_name,
            })
        } else {
            None
        };
        let target = url::resolve(url_text)?;
        let specs = match &self.mix {
            Some(spec) => mix::parse_spec(spec)?,
            None => vec![mix::EntrySpec {
                method: "GET".into(),
                path: target.path.clone(),
                weight: 1,
            }],
        };
        let mix = Mix::new(&specs, &target.authority, &headers, run_id());
        Ok(Plan {
            target,
            mix,
            mode,
            connections: self.connections,
            pipeline: self.pipeline,
            tls,
            connection_per_request: self.connection_per_request,
            duration,
            warmup,
            timeout,
            cpus: cpus_allowed[..threads].to_vec(),
            outputs: Outputs {
                json: self.json.clone(),
                html: self.html.clone(),
                hgrm: self.hgrm.clone(),
            },
            progress,
        })
    }
}

/// A run id from the clock and the pid: distinct between runs, so generated
/// note texts never repeat those of an earlier run.
fn run_id() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mixed = (nanos ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_the_usual_forms() {
        assert_eq!(
            parse_duration("-d", "30s").unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            parse_duration("-d", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_duration("-d", "2m").unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(parse_duration("-d", "7").unwrap(), Duration::from_secs(7));
        for bad in ["", "abc", "10 parsecs", "-1s", "25h"] {
            assert!(parse_duration("-d", bad).is_err(), "{bad:?}");
        }
    }
}
