//! Logging: `tracing` events to stderr, one line each, in a form journald
//! understands; the filter can be changed while the server runs (SIGHUP).
//!
//! - The filter is `RUST_LOG` if set, else `--log-level`, else the config
//!   file's `log_level` (default `info`).
//! - When stderr is connected to the journal (systemd sets
//!   `JOURNAL_STREAM` to its device and inode), each line starts with its
//!   syslog priority (`<3>` for errors ... `<7>` for debug, see
//!   sd-daemon(3)), so `journalctl -p warning` works, and carries no
//!   timestamp (journald stamps every line). Otherwise lines carry an
//!   RFC 3339 timestamp, with colours only on a terminal.
//! - SIGHUP ([`reload_from_config`]) re-reads the config file and applies
//!   its `log_level`, unless `RUST_LOG` or `--log-level` fixed the filter at
//!   start. SIGHUP also re-reads the TLS certificate and key (`node.rs`,
//!   `tls/server.rs`); nothing else is reloaded: every other option shapes
//!   state built at start (sockets, executors, buffers), and logs go to
//!   inherited stdout/stderr, so there is no log file to reopen.

use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::Config;

/// The live filter, and whether it was fixed at start (`RUST_LOG` or a flag).
struct Reloadable {
    handle: reload::Handle<EnvFilter, Registry>,
    fixed_by: Option<&'static str>,
}

static FILTER: OnceLock<Reloadable> = OnceLock::new();

/// Installs the global subscriber. `log_level` is the configured filter;
/// `from_flag` says it came from `--log-level` (so SIGHUP keeps it).
pub fn init(log_level: &str, from_flag: bool) {
    let (filter, fixed_by) = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => (
            EnvFilter::try_new(&v).unwrap_or_else(|_| EnvFilter::new("info")),
            Some("RUST_LOG"),
        ),
        _ => (
            EnvFilter::try_new(log_level).unwrap_or_else(|_| EnvFilter::new("info")),
            from_flag.then_some("--log-level"),
        ),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let journal = stderr_is_journal();
    let is_tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let to_journal = journal.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_target(false)
            .event_format(SyslogPriority(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_target(false)
                    .with_ansi(false),
            ))
    });
    let to_stderr = (!journal).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(is_tty)
            .with_target(false)
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(to_journal)
        .with(to_stderr)
        .try_init();
    if installed.is_ok() {
        let _ = FILTER.set(Reloadable { handle, fixed_by });
    }
}

/// SIGHUP: re-reads `log_level` from the config file and applies it.
/// Every outcome is logged; a bad file changes nothing.
pub fn reload_from_config(config_file: Option<&Path>) {
    let Some(live) = FILTER.get() else {
        return;
    };
    if let Some(source) = live.fixed_by {
        tracing::info!("SIGHUP: the log filter was set by {source}; it stays. Only the TLS certificate is reloaded besides; other options take effect on restart");
        return;
    }
    let Some(path) = config_file else {
        tracing::info!("SIGHUP: no config file was given; nothing to reload");
        return;
    };
    let config = match Config::from_file(path).and_then(|c| c.validate().map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "SIGHUP: config file not reloaded; the running configuration stays");
            return;
        }
    };
    match EnvFilter::try_new(&config.log_level) {
        Ok(filter) => match live.handle.reload(filter) {
            Ok(()) => tracing::info!(
                log_level = %config.log_level,
                file = %path.display(),
                "SIGHUP: log filter reloaded; other options take effect on restart"
            ),
            Err(e) => tracing::warn!(error = %e, "SIGHUP: could not apply the log filter"),
        },
        Err(e) => tracing::warn!(error = %e, "SIGHUP: invalid log_level; the filter stays"),
    }
}

/// True when stderr is the journal's stream (see systemd.exec(5),
/// `$JOURNAL_STREAM`: "DEVICE:INODE" of the stream).
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat(2) on fd 2 writes only into the struct we pass.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::fstat(2, &mut st) };
    rc == 0 && st.st_dev == dev && st.st_ino == ino
}

/// Prefixes each line with its syslog priority for journald.
struct SyslogPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for SyslogPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}
