//! Rounds of power cuts: concurrent `POST /notes` against the real server
//! on the forgetful disk (`lazyfs.rs`), a cut at a random moment, a
//! restart on what was durable, and the check.
//!
//! A round is one of two kinds:
//! - **fresh**: the disk is formatted and the server started on a data
//!   directory that does not exist yet; the cut falls at a random moment
//!   from the spawn on, so before, during or after its first start
//!   (node id, directories, first segments) and its first writes;
//! - **running**: the server restarted after the last cut takes writes,
//!   and the cut falls after a random time.
//!
//! Segments are small (`--segment-bytes-max` at its minimum, 64 KiB, with
//! notes of up to 3 KB), so a cut often falls while a segment is being
//! created: [`CutReport::during_segment_roll`] counts those.
//!
//! After every cut the server must start (a refusal is a failure, with its
//! log), and then serve every note that got a 201 since the disk was
//! formatted exactly once, and no note that no client sent (a damaged
//! record served would be one).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{build_request, Client, BIN};
use crate::lazyfs::{CutMode, CutReport, MountError, Mounted, Rng};

/// The smallest segment the server allows: rolls every few dozen notes.
pub const SEGMENT_BYTES_MAX: &str = "65536";
/// Note texts are between these sizes (bytes), so records straddle
/// sectors and segments fill quickly.
const TEXT_BYTES_MIN: u64 = 40;
const TEXT_BYTES_MAX: u64 = 3000;
/// A fresh round's cut falls this long after the spawn, at most.
const FRESH_CUT_WINDOW_MS: u64 = 900;
/// Half of the fresh rounds cut within this long after the spawn: the
/// debug server's first start (directories, node id, listeners) takes
/// about 25-30 ms here, so most of these fall during it.
const FIRST_START_CUT_WINDOW_MS: u64 = 30;
/// A running round's cut falls within this window after the load starts.
const LOAD_CUT_MS_MIN: u64 = 20;
const LOAD_CUT_MS_MAX: u64 = 400;
/// How long a restarted server may take to say it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// A client's read timeout (the server answers in milliseconds; a kill
/// ends the connection at once).
const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines of recovery, counted after each restart.
const TAIL_CUT_LINE: &str = "cut a torn or corrupt tail";
const RANGE_SKIPPED_LINE: &str = "skipped a damaged range";
const FILE_REJECTED_LINE: &str = "ignored a file that is not a readable log segment";

/// What a run of rounds does.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rounds: usize,
    pub seed: u64,
    /// The cut modes, used in turn.
    pub modes: Vec<CutMode>,
    pub clients: usize,
    pub cores: usize,
    /// One round in this many (and the first) starts on a formatted disk.
    pub fresh_one_in: u64,
    /// Syncs the server leaves out (`URINGNOTES_UNSAFE_SKIP_SYNC`), if any.
    pub skip_sync: Option<String>,
}

impl Settings {
    /// The defaults, overridden by `POWERLOSS_ROUNDS`, `POWERLOSS_SEED`,
    /// `POWERLOSS_MODE` (`lose`, `torn`, `reorder` or `mixed`) and
    /// `POWERLOSS_CLIENTS` (what `tools/powerloss` sets for long runs), and
    /// `POWERLOSS_SKIP_SYNC` (syncs the server leaves out, for experiments).
    pub fn from_env(rounds: usize) -> Settings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let modes = match var("POWERLOSS_MODE").as_deref() {
            None | Some("mixed") => vec![CutMode::Lose, CutMode::Torn, CutMode::Reorder],
            Some(m) => vec![CutMode::parse(m)
                .unwrap_or_else(|| panic!("POWERLOSS_MODE={m}: use lose, torn, reorder or mixed"))],
        };
        let seed = var("POWERLOSS_SEED")
            .map(|s| s.parse().expect("POWERLOSS_SEED is a number"))
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        Settings {
            rounds: var("POWERLOSS_ROUNDS")
                .map(|s| s.parse().expect("POWERLOSS_ROUNDS is a number"))
                .unwrap_or(rounds),
            seed,
            modes,
            clients: var("POWERLOSS_CLIENTS")
                .map(|s| s.parse().expect("POWERLOSS_CLIENTS is a number"))
                .unwrap_or(4),
            cores: 2,
            fresh_one_in: 6,
            skip_sync: var("POWERLOSS_SKIP_SYNC"),
        }
    }
}

/// Counts over a run.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub rounds: usize,
    pub fresh_rounds: usize,
    /// Fresh rounds cut before the server said it listens.
    pub cuts_before_listening: usize,
    pub cuts_during_segment_roll: usize,
    /// Notes answered 201 (each counted once, in the round it was written).
    pub acknowledged: u64,
    /// Acknowledged notes checked after each restart (re-checked every round).
    pub checks: u64,
    /// Acknowledged notes found missing (each counted once).
    pub lost: u64,
    /// Acknowledged notes served more than once, and ids served twice.
    pub duplicated: u64,
    /// Notes served that no client sent.
    pub damaged_served: u64,
    /// Restarts that failed.
    pub refused_starts: usize,
    /// Recovery's reports (log lines), each counted once.
    pub tails_cut: usize,
    pub ranges_skipped: usize,
    pub files_rejected: usize,
    pub names_lost: usize,
    pub torn_writes: usize,
    pub bytes_lost: u64,
    /// The first problems seen, for the failure message.
    pub problems: Vec<String>,
}

impl Totals {
    fn problem(&mut self, what: String) {
        if self.problems.len() < 20 {
            self.problems.push(what);
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "rounds {}, fresh {} (cut before listening {}), cuts during a segment roll {}, \
             acknowledged {}, lost {}, duplicated {}, damaged served {}, refused starts {}, \
             torn tails cut {}, damaged ranges skipped {}, files rejected {}, \
             names lost {}, torn writes {}, unsynced bytes lost {}",
            self.rounds,
            self.fresh_rounds,
            self.cuts_before_listening,
            self.cuts_during_segment_roll,
            self.acknowledged,
            self.lost,
            self.duplicated,
            self.damaged_served,
            self.refused_starts,
            self.tails_cut,
            self.ranges_skipped,
            self.files_rejected,
            self.names_lost,
            self.torn_writes,
            self.bytes_lost,
        )
    }
}

/// The server process; killed on drop.
pub struct Node {
    child: Option<Child>,
    addr: Arc<OnceLock<SocketAddr>>,
    pub stderr_log: PathBuf,
}

impl Node {
    /// Starts the server without waiting for it.
    pub fn spawn(data_dir: &Path, stderr_log: &Path, settings: &Settings, skip: bool) -> Node {
        let stderr = std::fs::File::create(stderr_log).expect("server log file");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--fsync", "always"])
            .args(["--cores", &settings.cores.to_string()])
            .args(["--segment-bytes-max", SEGMENT_BYTES_MAX])
            .args(["--stall-timeout", "10s"])
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "info")
            .env_remove("URINGNOTES_UNSAFE_SKIP_SYNC")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        if let (true, Some(steps)) = (skip, &settings.skip_sync) {
            cmd.arg("--fault-injection")
                .env("URINGNOTES_UNSAFE_SKIP_SYNC", steps);
        }
        let mut child = cmd.spawn().expect("spawn the server");
        let addr = Arc::new(OnceLock::new());
        if let Some(stdout) = child.stdout.take() {
            let addr = Arc::clone(&addr);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.strip_prefix("uringnotes listening on http://") {
                        if let Ok(a) = rest.trim().parse() {
                            let _ = addr.set(a);
                        }
                    }
                }
            });
        }
        Node {
            child: Some(child),
            addr,
            stderr_log: stderr_log.to_owned(),
        }
    }

    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr.get().copied()
    }

    /// Waits until the server listens; its log if it exits or times out.
    pub fn wait_listening(&mut self) -> Result<SocketAddr, String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(a) = self.addr() {
                return Ok(a);
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                self.kill9();
                return Err(format!(
                    "the server did not start (exit {exited:?}); its log:\n{}",
                    self.stderr()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Clients posting notes until told to stop or their connection ends.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<()>>,
    sent: Arc<Mutex<Vec<String>>>,
    acked: Arc<Mutex<Vec<String>>>,
}

impl Load {
    /// Starts `n` clients; each waits for the server's address first.
    fn start(addr: Arc<OnceLock<SocketAddr>>, n: usize, round: usize, rng: &mut Rng) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let clients = (0..n)
            .map(|k| {
                let (stop, sent, acked, addr) = (
                    Arc::clone(&stop),
                    Arc::clone(&sent),
                    Arc::clone(&acked),
                    Arc::clone(&addr),
                );
                let mut rng = Rng::new(rng.next_u64());
                std::thread::spawn(move || {
                    post_until_stopped(&addr, &stop, &sent, &acked, round, k, &mut rng)
                })
            })
            .collect();
        Load {
            stop,
            clients,
            sent,
            acked,
        }
    }

    /// Stops the clients; returns (sent, acknowledged) texts.
    fn finish(self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.clients {
            let _ = c.join();
        }
        let take = |v: &Mutex<Vec<String>>| std::mem::take(&mut *v.lock().unwrap());
        (take(&self.sent), take(&self.acked))
    }
}

fn post_until_stopped(
    addr: &OnceLock<SocketAddr>,
    stop: &AtomicBool,
    sent: &Mutex<Vec<String>>,
    acked: &Mutex<Vec<String>>,
    round: usize,
    client: usize,
    rng: &mut Rng,
) {
    let addr = loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if let Some(a) = addr.get() {
            break *a;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let Ok(mut c) = Client::try_connect(addr, CLIENT_READ_TIMEOUT) else {
        return;
    };
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let head = format!("r{round}-c{client}-n{i} ");
        let len = TEXT_BYTES_MIN + rng.below(TEXT_BYTES_MAX - TEXT_BYTES_MIN);
        let pad = (b'a' + (i % 26) as u8) as char;
        let text: String = head
            .chars()
            .chain(std::iter::repeat_n(pad, len as usize))
            .collect();
        // Recorded as sent before it is sent: a note the server stored but
        // could not answer may be served after the cut.
        sent.lock().unwrap().push(text.clone());
        let req = build_request(
            "POST",
            "/notes",
            &[("Content-Type", "text/plain")],
            text.as_bytes(),
        );
        if c.stream.write_all(&req).is_err() {
            return;
        }
        match c.read_response() {
            Some(r) if r.status == 201 => acked.lock().unwrap().push(text),
            Some(_) => {}
            None => return,
        }
    }
}

/// The harness: the mounted disk, the server, what was acknowledged.
pub struct Harness {
    pub settings: Settings,
    rng: Rng,
    /// Fields drop in order: the server is killed first, then the disk is
    /// unmounted, then the scratch directory removed.
    node: Option<Node>,
    pub fs: Mounted,
    data_dir: PathBuf,
    logs: PathBuf,
    starts: usize,
    /// Every text sent since the disk was formatted.
    sent: HashSet<String>,
    /// Every text acknowledged since the disk was formatted.
    acked: Vec<String>,
    /// Acknowledged texts found missing or doubled, and damage reports
    /// seen, since the format: each is counted once, though every later
    /// check finds it again (a skipped range stays in its segment).
    seen_lost: HashSet<String>,
    seen_doubled: HashSet<String>,
    seen_reports: HashSet<String>,
    pub totals: Totals,
    /// The scratch directory (mount point, server logs), removed last.
    _dir: tempfile::TempDir,
}

impl Harness {
    pub fn new(settings: Settings) -> Result<Harness, MountError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mnt = dir.path().join("mnt");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&mnt).expect("mount point");
        std::fs::create_dir_all(&logs).expect("log dir");
        let fs = Mounted::mount(&mnt, settings.seed)?;
        Ok(Harness {
            rng: Rng::new(settings.seed ^ 0x5eed),
            settings,
            fs,
            node: None,
            data_dir: mnt.join("data"),
            logs,
            starts: 0,
            sent: HashSet::new(),
            acked: Vec::new(),
            seen_lost: HashSet::new(),
            seen_doubled: HashSet::new(),
            seen_reports: HashSet::new(),
            totals: Totals::default(),
            _dir: dir,
        })
    }

    fn spawn(&mut self, skip: bool) -> Node {
        self.starts += 1;
        let log = self.logs.join(format!("start-{:04}.log", self.starts));
        Node::spawn(&self.data_dir, &log, &self.settings, skip)
    }

    /// Runs every round, then returns the totals (it panics only on
    /// harness trouble; the caller asserts on the counts).
    pub fn run(&mut self) -> Totals {
        eprintln!(
            "powerloss: {} rounds, seed {}, modes {:?}, {} clients, {} cores{}",
            self.settings.rounds,
            self.settings.seed,
            self.settings.modes,
            self.settings.clients,
            self.settings.cores,
            self.settings
                .skip_sync
                .as_ref()
                .map(|s| format!(", syncs left out: {s}"))
                .unwrap_or_default()
        );
        for round in 0..self.settings.rounds {
            self.round(round);
        }
        if let Some(mut n) = self.node.take() {
            n.kill9();
        }
        self.totals.clone()
    }

    fn round(&mut self, round: usize) {
        let mode = self.settings.modes[round % self.settings.modes.len()];
        let fresh =
            round == 0 || self.node.is_none() || self.rng.below(self.settings.fresh_one_in) == 0;
        self.totals.rounds += 1;
        let cut_after_ms;
        if fresh {
            self.totals.fresh_rounds += 1;
            if let Some(mut n) = self.node.take() {
                n.kill9();
            }
            self.fs.format().expect("format the disk");
            self.sent.clear();
            self.acked.clear();
            self.seen_lost.clear();
            self.seen_doubled.clear();
            self.seen_reports.clear();
            cut_after_ms = if self.rng.coin() {
                self.rng.below(FIRST_START_CUT_WINDOW_MS)
            } else {
                self.rng.below(FRESH_CUT_WINDOW_MS)
            };
            self.node = Some(self.spawn(true));
        } else {
            cut_after_ms = LOAD_CUT_MS_MIN + self.rng.below(LOAD_CUT_MS_MAX - LOAD_CUT_MS_MIN);
        }
        // The server of this round: killed by the cut, replaced below.
        let Some(mut node) = self.node.take() else {
            unreachable!("a node runs by now");
        };
        let load = Load::start(
            Arc::clone(&node.addr),
            self.settings.clients,
            round,
            &mut self.rng,
        );
        std::thread::sleep(Duration::from_millis(cut_after_ms));
        let listening = node.addr().is_some();
        let report = self.fs.power_cut(mode, || node.kill9()).expect("power cut");
        let (sent, acked) = load.finish();
        if fresh && !listening {
            self.totals.cuts_before_listening += 1;
        }
        self.account_cut(&report);
        self.totals.acknowledged += acked.len() as u64;
        self.sent.extend(sent);
        self.acked.extend(acked.iter().cloned());

        // Restart on what was durable: it must start, and serve everything.
        let mut node = self.spawn(true);
        let started = node.wait_listening();
        let log = node.stderr();
        let (cut, skipped, rejected) = (
            self.new_reports(&log, TAIL_CUT_LINE),
            self.new_reports(&log, RANGE_SKIPPED_LINE),
            self.new_reports(&log, FILE_REJECTED_LINE),
        );
        self.totals.tails_cut += cut;
        self.totals.ranges_skipped += skipped;
        self.totals.files_rejected += rejected;
        let verdict = match started {
            Ok(addr) => {
                let verdict = self.check(addr, round);
                self.node = Some(node);
                verdict
            }
            Err(why) => {
                self.totals.refused_starts += 1;
                self.totals
                    .problem(format!("round {round}: restart refused: {why}"));
                // Nothing more can run on this disk: the next round formats it.
                "REFUSED TO START".to_string()
            }
        };
        eprintln!(
            "round {round:3} {mode:?}{} cut at {cut_after_ms} ms{}{}: +{} acked ({} since format); \
             lost {} names, {} files unsynced, {} torn writes; restart: {cut} tails cut, \
             {skipped} ranges skipped, {rejected} files rejected; {verdict}",
            if fresh { " fresh" } else { "" },
            if fresh && !listening { " (before listening)" } else { "" },
            if report.during_segment_roll() { " (segment roll)" } else { "" },
            acked.len(),
            self.acked.len(),
            report.names_lost.len(),
            report.files_with_unsynced_data,
            report.torn_writes,
        );
    }

    /// Log lines of `kind` in `log` not seen since the format (a line's
    /// fields name the file and the offset).
    fn new_reports(&mut self, log: &str, kind: &str) -> usize {
        log.lines()
            .filter_map(|l| l.split_once(kind))
            .filter(|(_, fields)| self.seen_reports.insert(format!("{kind}{fields}")))
            .count()
    }

    fn account_cut(&mut self, report: &CutReport) {
        if report.during_segment_roll() {
            self.totals.cuts_during_segment_roll += 1;
        }
        self.totals.names_lost += report.names_lost.len();
        self.totals.torn_writes += report.torn_writes;
        self.totals.bytes_lost += report.bytes_lost;
    }

    /// Every acknowledged note exactly once, nothing that was not sent.
    fn check(&mut self, addr: SocketAddr, round: usize) -> String {
        let notes = match Client::try_connect(addr, CLIENT_READ_TIMEOUT) {
            Ok(mut c) => c.all_notes(),
            Err(e) => {
                self.totals
                    .problem(format!("round {round}: cannot connect to check: {e}"));
                return "CHECK FAILED".into();
            }
        };
        let mut served: HashMap<&str, usize> = HashMap::new();
        let mut ids = HashSet::new();
        let mut damaged = 0;
        for n in &notes {
            let text = n["text"].as_str().unwrap_or_default();
            if !self.sent.contains(text) {
                damaged += 1;
                if self.seen_reports.insert(format!("damaged {text}")) {
                    self.totals.damaged_served += 1;
                }
                self.totals.problem(format!(
                    "round {round}: served a note no client sent: {}",
                    &n.to_string()[..n.to_string().len().min(120)]
                ));
            }
            *served.entry(text).or_default() += 1;
            let id = n["id"].as_str().unwrap_or_default().to_string();
            if !ids.insert(id.clone()) {
                self.totals
                    .problem(format!("round {round}: id {id} served twice"));
                if self.seen_doubled.insert(format!("id {id}")) {
                    self.totals.duplicated += 1;
                }
            }
        }
        let (mut lost, mut duplicated) = (0u64, 0u64);
        for text in &self.acked {
            match served.get(text.as_str()) {
                None | Some(0) => {
                    lost += 1;
                    if self.seen_lost.insert(text.clone()) {
                        self.totals.lost += 1;
                    }
                    if lost <= 3 {
                        let short = &text[..text.len().min(24)];
                        self.totals.problem(format!(
                            "round {round}: acknowledged note {short}... is gone"
                        ));
                    }
                }
                Some(1) => {}
                Some(_) => {
                    duplicated += 1;
                    if self.seen_doubled.insert(text.clone()) {
                        self.totals.duplicated += 1;
                    }
                }
            }
        }
        self.totals.checks += self.acked.len() as u64;
        if lost == 0 && duplicated == 0 && damaged == 0 {
            format!("ok ({} served)", notes.len())
        } else {
            format!("LOST {lost}, DUPLICATED {duplicated}, DAMAGED {damaged}")
        }
    }

    /// Runs one scripted scenario instead of random rounds: a first start on
    /// an empty directory (with the settings' syncs left out), `notes`
    /// writes one after another, a cut, a restart with every sync back.
    /// (The random rounds leave the syncs out in every start, restarts too.)
    pub fn first_start_then_cut(&mut self, notes: usize) -> Scenario {
        self.fs.format().expect("format the disk");
        let mut node = self.spawn(true);
        let addr = node.wait_listening().expect("first start");
        let mut client = Client::try_connect(addr, CLIENT_READ_TIMEOUT).expect("connect");
        let mut acked = Vec::new();
        let mut first_id = String::new();
        for i in 0..notes {
            let text = format!("scripted note {i}");
            let r = client.request(
                "POST",
                "/notes",
                &[("Content-Type", "text/plain")],
                text.as_bytes(),
            );
            assert_eq!(r.status, 201, "{}", r.text());
            if first_id.is_empty() {
                first_id = r.json()["id"].as_str().unwrap_or_default().to_string();
            }
            acked.push(text);
        }
        drop(client);
        let report = self
            .fs
            .power_cut(CutMode::Lose, || node.kill9())
            .expect("power cut");
        let mut node = self.spawn(false);
        match node.wait_listening() {
            Err(why) => Scenario {
                acked: acked.len(),
                lost: None,
                node_changed: false,
                cut: report,
                log: why,
            },
            Ok(addr) => {
                let notes = Client::try_connect(addr, CLIENT_READ_TIMEOUT)
                    .expect("connect")
                    .all_notes();
                let served: HashSet<&str> =
                    notes.iter().filter_map(|n| n["text"].as_str()).collect();
                let lost = acked
                    .iter()
                    .filter(|t| !served.contains(t.as_str()))
                    .count();
                let r = Client::try_connect(addr, CLIENT_READ_TIMEOUT)
                    .expect("connect")
                    .request(
                        "POST",
                        "/notes",
                        &[("Content-Type", "text/plain")],
                        b"after",
                    );
                let new_id = r.json()["id"].as_str().unwrap_or_default().to_string();
                let node_of = |id: &str| id.split('-').next().unwrap_or_default().to_string();
                Scenario {
                    acked: acked.len(),
                    lost: Some(lost),
                    node_changed: node_of(&first_id) != node_of(&new_id),
                    cut: report,
                    log: node.stderr(),
                }
            }
        }
    }
}

/// What a scripted first start and cut came to.
#[derive(Debug)]
pub struct Scenario {
    pub acked: usize,
    /// Acknowledged notes not served after the restart; `None`: the
    /// server refused to start.
    pub lost: Option<usize>,
    /// The node id changed (its `node.id` was lost).
    pub node_changed: bool,
    pub cut: CutReport,
    /// The restarted server's log (or why it did not start).
    pub log: String,
}
