//! `uringnotes bench`: a built-in HTTP/1.1 load generator.
//!
//! Thread-per-core like the server: one load thread pinned to each CPU
//! given by `--threads` (by default every CPU the process may run on, so a
//! `taskset` is respected), each running its share of the connections as
//! tasks on its own epoll event loop ([`reactor`]; why not glommio is
//! explained there). Each thread records into its own [`stats::Stats`];
//! nothing is shared on the request path. The main thread only orchestrates:
//!
//! 1. validate the arguments ([`args`]) and check that the target answers
//!    a TCP connect (bad input of either kind: one line, exit 2);
//! 2. start the load threads; each opens its connections, reports ready and
//!    waits for the common start instant, so connection set-up is not
//!    measured and all threads start together;
//! 3. while they run, print live progress on stderr if it is a terminal
//!    ([`progress`]);
//! 4. merge the threads' statistics and report: text on stdout
//!    ([`report`]), optionally JSON, HdrHistogram `.hgrm` and a
//!    self-contained HTML page ([`html`]).
//!
//! Rooms: [`url`] (the target), [`mix`] (what to send), [`schedule`] (when,
//! and from when latency counts), [`reactor`] (the event loop), [`client`]
//! (the connection loop; it reads answers with the HTTP core's client role,
//! `http/client.rs`), [`wire`] (a connection's bytes, plain or TLS), [`stats`] (what is counted), [`report`],
//! [`html`], [`compare`] (two runs side by side).

pub mod args;
pub mod client;
pub mod compare;
pub mod html;
pub mod mix;
pub mod progress;
pub mod reactor;
pub mod report;
pub mod schedule;
pub mod stats;
pub mod url;
pub mod wire;

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;

use args::{BenchArgs, BenchCommand};
use client::{Conn, ThreadCtx};
use mix::Mix;
use schedule::{Mode, Window};
use stats::Stats;
use url::Target;

/// Exit code for bad input (arguments, unreachable target).
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code when the run happened but no request succeeded, or the
/// benchmark itself failed (a load thread did not start, a file not written).
pub const EXIT_FAILED: u8 = 1;
/// Time allowed for the load threads to start and open their connections,
/// on top of one `--timeout`.
const STARTUP_SLACK: Duration = Duration::from_secs(30);
/// Delay between "everyone is ready" and the common start, so every
/// thread has received the start instant before it passes.
const START_DELAY: Duration = Duration::from_millis(20);
/// How often load threads publish their counts for the progress line.
const PROGRESS_TICK: Duration = Duration::from_millis(500);
/// Longest a TCP connect to the target may take before the run is refused.
const PROBE_TIMEOUT_MAX: Duration = Duration::from_secs(5);

/// Everything a run needs, validated. Immutable and shared by all load threads.
#[derive(Debug)]
pub struct Plan {
    pub target: Target,
    pub mix: Mix,
    pub mode: Mode,
    pub connections: usize,
    /// Requests per batch per connection (closed loop; 1 in rate mode).
    pub pipeline: usize,
    /// For an `https` target: the client configuration and the server name.
    pub tls: Option<TlsPlan>,
    /// Every request on a new connection (`Connection: close`).
    pub connection_per_request: bool,
    pub duration: Duration,
    pub warmup: Duration,
    /// Longest wait for a connect or a whole response.
    pub timeout: Duration,
    /// One load thread per entry, pinned to that CPU.
    pub cpus: Vec<usize>,
    pub outputs: Outputs,
    /// Show live progress on stderr.
    pub progress: bool,
}

/// How connections to an `https` target are made.
#[derive(Debug)]
pub struct TlsPlan {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: rustls::pki_types::ServerName<'static>,
}

/// Files to write at the end.
#[derive(Debug, Default, Clone)]
pub struct Outputs {
    pub json: Option<PathBuf>,
    pub html: Option<PathBuf>,
    pub hgrm: Option<PathBuf>,
}

/// Why a run could not happen or finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot connect to {url} ({addr}): {source}")]
    Unreachable {
        url: String,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("load thread {thread} (CPU {cpu}) failed: {reason}")]
    Executor {
        thread: usize,
        cpu: usize,
        reason: String,
    },
    #[error("load threads did not start within {0:?}")]
    StartTimeout(Duration),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A finished run: the merged statistics and what the report needs besides.
pub struct Outcome {
    pub stats: Stats,
    pub started_at: SystemTime,
    /// CPU time (user + system) the whole process spent from the start
    /// instant to the end of the run.
    pub client_cpu: Duration,
}

/// What a load thread publishes for the progress line (written by that
/// thread only, every [`PROGRESS_TICK`]).
#[derive(Debug)]
pub struct Live {
    pub responses: AtomicU64,
    pub errors: AtomicU64,
    pub latency: Mutex<Histogram<u64>>,
}

impl Live {
    fn new() -> Live {
        Live {
            responses: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: Mutex::new(stats::new_histogram()),
        }
    }
}

/// What the main thread hears from the load threads.
enum Event {
    Ready,
    Done {
        thread: usize,
        outcome: Result<Option<Box<Stats>>, String>,
    },
}

/// `uringnotes bench ...`: runs the command and returns the exit code.
pub fn main(args: BenchArgs) -> ExitCode {
    if let Some(BenchCommand::Compare { before, after }) = &args.command {
        return compare::main(before, after);
    }
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let plan = match args.to_plan(progress) {
        Ok(plan) => Arc::new(plan),
        Err(e) => return fail(EXIT_BAD_INPUT, &e),
    };
    if let Err(e) = probe(&plan) {
        return fail(EXIT_BAD_INPUT, &e);
    }
    // Every connection is a descriptor; the default soft limit (1024) is
    // below a benchmark's usual connection counts.
    crate::host::raise_nofile_limit();
    let outcome = match run(Arc::clone(&plan)) {
        Ok(o) => o,
        Err(e) => return fail(EXIT_FAILED, &e),
    };
    let report = report::RunReport::new(&plan, &outcome);
    if outcome.stats.ok == 0 {
        eprintln!("uringnotes bench: {}", report::all_failed_line(&report));
        // Still write the files: they show what went wrong.
        if let Err(e) = write_outputs(&plan, &outcome, &report) {
            return fail(EXIT_FAILED, &e);
        }
        return ExitCode::from(EXIT_FAILED);
    }
    print!("{}", report::text(&report));
    if let Err(e) = write_outputs(&plan, &outcome, &report) {
        return fail(EXIT_FAILED, &e);
    }
    ExitCode::SUCCESS
}

fn fail(code: u8, e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("uringnotes bench: {e}");
    ExitCode::from(code)
}

/// One TCP connect before anything starts, so an unreachable target is an
/// immediate one-line error, not a report full of connect errors.
fn probe(plan: &Plan) -> Result<(), BenchError> {
    let timeout = plan.timeout.min(PROBE_TIMEOUT_MAX);
    std::net::TcpStream::connect_timeout(&plan.target.addr, timeout)
        .map(drop)
        .map_err(|source| BenchError::Unreachable {
            url: plan.target.url.clone(),
            addr: plan.target.addr,
            source,
        })
}

/// Runs the benchmark described by `plan` and merges the results.
pub fn run(plan: Arc<Plan>) -> Result<Outcome, BenchError> {
    let threads = plan.cpus.len();
    let (events_tx, events) = mpsc::channel::<Event>();
    let mut start_txs = Vec::with_capacity(threads);
    let lives: Vec<Arc<Live>> = (0..threads).map(|_| Arc::new(Live::new())).collect();
    for (thread, &cpu) in plan.cpus.iter().enumerate() {
        let (start_tx, start_rx) = mpsc::channel::<Instant>();
        start_txs.push(start_tx);
        spawn_load_thread(
            Arc::clone(&plan),
            thread,
            cpu,
            Arc::clone(&lives[thread]),
            events_tx.clone(),
            start_rx,
        )?;
    }
    drop(events_tx);

    let startup_timeout = plan.timeout + STARTUP_SLACK;
    let deadline = Instant::now() + startup_timeout;
    let mut ready = 0;
    while ready < threads {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(Event::Ready) => ready += 1,
            Ok(Event::Done { thread, outcome }) => {
                return Err(BenchError::Executor {
                    thread,
                    cpu: plan.cpus[thread],
                    reason: outcome
                        .err()
                        .unwrap_or_else(|| "stopped during start-up".into()),
                });
            }
            Err(_) => return Err(BenchError::StartTimeout(startup_timeout)),
        }
    }

    let started_at = SystemTime::now() + START_DELAY;
    let start = Instant::now() + START_DELAY;
    let cpu_before = process_cpu_time();
    for tx in &start_txs {
        // A thread that is gone reports itself as Done below.
        let _ = tx.send(start);
    }
    let window = Window::new(start, plan.warmup, plan.duration);
    let mut progress = plan
        .progress
        .then(|| progress::Progress::new(window, lives.clone()));

    let mut merged: Option<Stats> = None;
    let mut done = 0;
    let mut failure: Option<BenchError> = None;
    while done < threads {
        let event = match &mut progress {
            Some(p) => match events.recv_timeout(progress::PRINT_INTERVAL) {
                Ok(e) => e,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    p.print();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match events.recv() {
                Ok(e) => e,
                Err(_) => break,
            },
        };
        if let Event::Done { thread, outcome } = event {
            done += 1;
            match outcome {
                Ok(Some(stats)) => match &mut merged {
                    Some(m) => m.merge(&stats),
                    None => merged = Some(*stats),
                },
                Ok(None) => {}
                Err(reason) => {
                    failure.get_or_insert(BenchError::Executor {
                        thread,
                        cpu: plan.cpus[thread],
                        reason,
                    });
                }
            }
        }
    }
    if let Some(p) = &mut progress {
        p.finish();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let cpu_after = process_cpu_time();
    let stats = merged.unwrap_or_else(|| {
        Stats::new(
            plan.mix.entries.len(),
            matches!(plan.mode, Mode::Rate { .. }),
        )
    });
    Ok(Outcome {
        stats,
        started_at,
        client_cpu: cpu_after.saturating_sub(cpu_before),
    })
}

fn spawn_load_thread(
    plan: Arc<Plan>,
    thread: usize,
    cpu: usize,
    live: Arc<Live>,
    events: mpsc::Sender<Event>,
    start_rx: mpsc::Receiver<Instant>,
) -> Result<(), BenchError> {
    std::thread::Builder::new()
        .name(format!("bench-{thread}"))
        .spawn(move || {
            let ready = events.clone();
            let body = std::panic::AssertUnwindSafe(|| {
                load_thread(plan, thread, cpu, live, ready, start_rx)
            });
            let outcome = match std::panic::catch_unwind(body) {
                Ok(result) => result.map(|stats| stats.map(Box::new)),
                Err(_) => Err("panicked".to_string()),
            };
            let _ = events.send(Event::Done { thread, outcome });
        })
        .map(drop)
        .map_err(|e| BenchError::Executor {
            thread,
            cpu,
            reason: e.to_string(),
        })
}

/// One load thread: pins itself, opens its connections, waits for the
/// common start, runs them, and returns its statistics (`None` if the run
/// was called off before it started).
fn load_thread(
    plan: Arc<Plan>,
    thread: usize,
    cpu: usize,
    live: Arc<Live>,
    ready: mpsc::Sender<Event>,
    start_rx: mpsc::Receiver<Instant>,
) -> Result<Option<Stats>, String> {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        return Err(format!("cannot pin the thread to CPU {cpu}"));
    }
    // Timed waits as exact as the kernel allows: the default 50 µs timer
    // slack would delay every paced request in constant-rate mode.
    // SAFETY: prctl on the calling thread with plain integer arguments.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let reactor = reactor::Reactor::new().map_err(|e| format!("epoll: {e}"))?;
    let threads = plan.cpus.len();
    // Round-robin, so in rate mode each thread's due times are spread
    // evenly over the run rather than bunched.
    let indexes: Vec<u32> = (thread..plan.connections)
        .step_by(threads)
        .map(|g| g as u32)
        .collect();
    // Connect up-front, concurrently, outside the measurement.
    let streams: Rc<RefCell<Vec<Option<wire::Wire>>>> =
        Rc::new(RefCell::new((0..indexes.len()).map(|_| None).collect()));
    let connecting: Vec<reactor::Task> = (0..indexes.len())
        .map(|i| {
            let (plan, reactor, streams) =
                (Arc::clone(&plan), Rc::clone(&reactor), Rc::clone(&streams));
            Box::pin(async move {
                let stream = client::connect(&reactor, &plan).await.ok().map(|(w, _)| w);
                streams.borrow_mut()[i] = stream;
            }) as reactor::Task
        })
        .collect();
    reactor::run(&reactor, connecting).map_err(|e| format!("event loop: {e}"))?;
    let streams = std::mem::take(&mut *streams.borrow_mut());
    let _ = ready.send(Event::Ready);
    // Every thread waits for the same instant (or the main thread gave up).
    let Ok(start) = start_rx.recv() else {
        return Ok(None);
    };
    let window = Window::new(start, plan.warmup, plan.duration);
    let entries = plan.mix.entries.len();
    let rate_mode = matches!(plan.mode, Mode::Rate { .. });
    let progress = plan.progress;
    let ctx = Rc::new(ThreadCtx {
        plan,
        reactor: Rc::clone(&reactor),
        window,
        stats: RefCell::new(Stats::new(entries, rate_mode)),
    });
    let mut tasks: Vec<reactor::Task> = Vec::with_capacity(indexes.len() + 1);
    for (index, stream) in indexes.into_iter().zip(streams) {
        let conn = Conn::new(Rc::clone(&ctx), index, stream, 0x5eed_0000);
        let reactor = Rc::clone(&reactor);
        tasks.push(Box::pin(async move {
            reactor::sleep_until(&reactor, start).await;
            conn.run().await;
        }));
    }
    if progress {
        tasks.push(Box::pin(publish(Rc::clone(&ctx), live)));
    }
    reactor::run(&reactor, tasks).map_err(|e| format!("event loop: {e}"))?;
    let empty = Stats::new(entries, rate_mode);
    Ok(Some(ctx.stats.replace(empty)))
}

/// Publishes this thread's counts for the progress line until the run ends.
async fn publish(ctx: Rc<ThreadCtx>, live: Arc<Live>) {
    let mut next = ctx.window.start;
    loop {
        next += PROGRESS_TICK;
        reactor::sleep_until(&ctx.reactor, next.min(ctx.window.end)).await;
        {
            let stats = ctx.stats.borrow();
            live.responses.store(stats.responses, Ordering::Relaxed);
            live.errors.store(stats.errors.total(), Ordering::Relaxed);
            if let Ok(mut h) = live.latency.lock() {
                let _ = h.set_to(&stats.corrected);
            }
        }
        if Instant::now() >= ctx.window.end {
            return;
        }
    }
}

/// User plus system CPU time of this whole process so far.
fn process_cpu_time() -> Duration {
    // SAFETY: getrusage writes only into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Writes the files asked for with `--json`, `--hgrm` and `--html`.
fn write_outputs(
    plan: &Plan,
    outcome: &Outcome,
    report: &report::RunReport,
) -> Result<(), BenchError> {
    let write = |path: &PathBuf, bytes: &[u8]| {
        std::fs::write(path, bytes).map_err(|source| BenchError::Write {
            path: path.clone(),
            source,
        })
    };
    if let Some(path) = &plan.outputs.json {
        let mut text = serde_json::to_string_pretty(report)
            .unwrap_or_else(|e| unreachable!("a report always serializes: {e}"));
        text.push('\n');
        write(path, text.as_bytes())?;
    }
    if let Some(path) = &plan.outputs.hgrm {
        write(path, report::hgrm(&outcome.stats.corrected).as_bytes())?;
    }
    if let Some(path) = &plan.outputs.html {
        write(path, html::page(report).as_bytes())?;
    }
    Ok(())
}
