//! `uringnotes doctor`: a preflight check of this machine for the server as
//! configured, in plain words, with what to change.
//!
//! Each check yields a [`Finding`]: PASS, WARN (runs, but worse than it
//! could) or FAIL (will not run, or will lose data), with a suggested fix.
//! The checks exercise the real thing where they can: they create an
//! io_uring and start a glommio executor as the server would, and write,
//! `fdatasync` and time a probe file in the data directory with `O_DIRECT`.
//! The doctor never touches the log: its probe file is its own, and a data
//! directory it had to create is removed again.
//!
//! The run succeeds (exit status 0) when nothing FAILs.

use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{Config, FsyncPolicy};

/// Oldest kernel glommio 0.9 runs on.
const KERNEL_MIN: (u32, u32) = (5, 8);
/// Kernel from which io_uring has everything uringnotes benefits from
/// (`IORING_SETUP_COOP_TASKRUN`, see `FIELD-NOTES`).
const KERNEL_RECOMMENDED: (u32, u32) = (5, 19);
/// glommio refuses to start an executor below this memlock limit.
const MEMLOCK_MIN_BYTES: u64 = 512 * 1024;
/// Each shard pins `watchdog::IO_MEMORY_BYTES` (1 MiB) of registered I/O
/// buffers plus its rings; this much per core leaves room for both.
const MEMLOCK_PER_CORE_BYTES: u64 = 4 * 1024 * 1024;
/// Descriptors per core besides connections (listener, rings, log files).
const NOFILE_SLACK_PER_CORE: u64 = 64;
/// Probe writes timed to judge fdatasync.
const FSYNC_PROBES: usize = 5;
/// A median fdatasync slower than this is worth a warning: every note
/// acknowledged waits for one.
const FSYNC_SLOW: Duration = Duration::from_millis(20);
/// Free space below which the data directory gets a warning.
const FREE_BYTES_WARN: u64 = 1 << 30;
/// Size and alignment of probe writes (O_DIRECT needs aligned buffers).
const PROBE_BLOCK_BYTES: usize = 4096;
const IORING_SETUP_COOP_TASKRUN: u32 = 1 << 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone)]
pub struct Finding {
    pub verdict: Verdict,
    pub topic: &'static str,
    pub message: String,
    /// What to change (for WARN and FAIL).
    pub fix: Option<String>,
}

fn pass(topic: &'static str, message: impl Into<String>) -> Finding {
    Finding {
        verdict: Verdict::Pass,
        topic,
        message: message.into(),
        fix: None,
    }
}

fn warn(topic: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        verdict: Verdict::Warn,
        topic,
        message: message.into(),
        fix: Some(fix.into()),
    }
}

fn fail(topic: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        verdict: Verdict::Fail,
        topic,
        message: message.into(),
        fix: Some(fix.into()),
    }
}

/// Runs every check, prints the report on stdout, and returns true when
/// nothing failed.
pub fn run(config: &Config) -> bool {
    println!(
        "uringnotes doctor {}: can this machine run uringnotes as configured?",
        env!("CARGO_PKG_VERSION")
    );
    println!(
        "  config: {}; data dir: {}; listen: {}; cores: {}",
        config
            .config_file
            .as_ref()
            .map_or("built-in defaults and flags".to_string(), |p| p
                .display()
                .to_string()),
        config.data_dir.display(),
        config.listen,
        if config.cores == 0 {
            "all".to_string()
        } else {
            config.cores.to_string()
        },
    );
    println!();
    let findings = check(config);
    for f in &findings {
        println!("{}  {:<10} {}", f.verdict.label(), f.topic, f.message);
        if let Some(fix) = &f.fix {
            println!("      {:<10} fix: {fix}", "");
        }
    }
    let count = |v| findings.iter().filter(|f| f.verdict == v).count();
    let (warns, fails) = (count(Verdict::Warn), count(Verdict::Fail));
    println!();
    if fails > 0 {
        println!(
            "doctor: {fails} FAIL, {warns} WARN: uringnotes will not run correctly here until the FAIL lines are fixed."
        );
    } else if warns > 0 {
        println!("doctor: 0 FAIL, {warns} WARN: uringnotes can run here; the WARN lines say what would make it better.");
    } else {
        println!("doctor: everything checked is fine.");
    }
    fails == 0
}

/// Runs every check.
pub fn check(config: &Config) -> Vec<Finding> {
    let (cores, cores_finding) = match cores_to_run(config) {
        Ok(n) => (n, pass("cores", format!("{n} executor(s), one per core"))),
        Err(f) => (1, f),
    };
    let mut findings = vec![check_kernel()];
    findings.push(check_io_uring_sysctl());
    findings.push(check_io_uring_setup());
    findings.push(check_build());
    findings.push(check_memlock(cores));
    findings.push(check_executor());
    findings.push(cores_finding);
    findings.push(check_placement(config));
    findings.push(check_nofile(config, cores));
    findings.push(check_somaxconn(config));
    findings.push(check_bind("listen", config.listen));
    if let Some(addr) = config.admin_listen {
        findings.push(check_bind("admin listen", addr));
    }
    if let Some(addr) = config.redirect_http {
        findings.push(check_bind("redirect listen", addr));
    }
    findings.extend(check_tls(config, crate::tls::certs::now_unix()));
    findings.extend(check_data_dir(config));
    findings.extend(check_cluster(config));
    findings
}

/// Whether executors will be pinned, and why (`placement`).
fn check_placement(config: &Config) -> Finding {
    let hypervisor = crate::host::hypervisor();
    let pinned = config
        .placement
        .pins(!config.cpus.is_empty(), hypervisor.is_some());
    let machine = match &hypervisor {
        Some(how) => format!("a virtual machine ({how})"),
        None => "bare metal (no hypervisor seen)".to_string(),
    };
    let how = if pinned {
        "executors pinned, one per CPU"
    } else {
        "executors unpinned (the kernel places them)"
    };
    pass(
        "placement",
        format!(
            "placement = {:?}: {how}; this is {machine}",
            config.placement
        )
        .to_lowercase(),
    )
}

fn cores_to_run(config: &Config) -> Result<u64, Finding> {
    let available = core_affinity::get_core_ids().map_or(0, |ids| ids.len());
    if available == 0 {
        return Err(fail(
            "cores",
            "cannot list the CPUs this process may run on",
            "check the CPU affinity of the service (CPUAffinity=, taskset)",
        ));
    }
    match config.cores {
        0 => Ok(available as u64),
        n if n <= available => Ok(n as u64),
        n => Err(fail(
            "cores",
            format!("cores = {n}, but this process may run on only {available} CPUs"),
            format!("set cores to at most {available}, or 0 for all"),
        )),
    }
}

/// `major.minor` of a kernel release string like `6.1.0-18-amd64`.
pub fn parse_kernel_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn check_kernel() -> Finding {
    let Some(crate::host::Uname {
        sysname, release, ..
    }) = crate::host::uname()
    else {
        return warn(
            "kernel",
            "uname(2) failed; the kernel version is unknown",
            "run on Linux 5.19 or newer",
        );
    };
    let Some(version) = parse_kernel_release(&release) else {
        return warn(
            "kernel",
            format!("{sysname} {release}: cannot read the version"),
            "run on Linux 5.19 or newer",
        );
    };
    let shown = format!("{sysname} {release}");
    if version < KERNEL_MIN {
        fail(
            "kernel",
            format!(
                "{shown} is older than {}.{}, the oldest kernel glommio runs on",
                KERNEL_MIN.0, KERNEL_MIN.1
            ),
            "upgrade the kernel to 5.19 or newer",
        )
    } else if version < KERNEL_RECOMMENDED {
        warn(
            "kernel",
            format!("{shown} runs uringnotes, but lacks io_uring features it benefits from (COOP_TASKRUN, 5.19)"),
            "upgrade the kernel to 5.19 or newer",
        )
    } else {
        pass("kernel", format!("{shown} (5.19 or newer recommended)"))
    }
}

fn read_proc(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn check_io_uring_sysctl() -> Finding {
    match read_proc("/proc/sys/kernel/io_uring_disabled").as_deref() {
        None => pass(
            "sysctl",
            "kernel.io_uring_disabled does not exist (kernels before 6.6 cannot disable io_uring this way)",
        ),
        Some("0") => pass("sysctl", "kernel.io_uring_disabled = 0: io_uring is enabled"),
        Some("1") => {
            let group = read_proc("/proc/sys/kernel/io_uring_group").unwrap_or_else(|| "?".into());
            warn(
                "sysctl",
                format!("kernel.io_uring_disabled = 1: only processes in group {group} (kernel.io_uring_group) or with CAP_SYS_ADMIN may use io_uring"),
                format!("add the service to group {group} (SupplementaryGroups= in the unit), or `sysctl -w kernel.io_uring_disabled=0` (and in /etc/sysctl.d/)"),
            )
        }
        Some(v) => fail(
            "sysctl",
            format!("kernel.io_uring_disabled = {v}: io_uring is disabled for everyone"),
            "`sysctl -w kernel.io_uring_disabled=0`, and set it in /etc/sysctl.d/ to survive a reboot",
        ),
    }
}

/// Creates (and closes) an io_uring with the raw syscall; returns the
/// errno on failure.
fn io_uring_setup(flags: u32) -> Result<(), i32> {
    // struct io_uring_params: 120 bytes; `flags` is the third u32.
    let mut params = [0u32; 30];
    params[2] = flags;
    // SAFETY: io_uring_setup(2) reads and writes only `params`, whose size
    // matches the kernel's struct; the returned fd is closed right away.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 8u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: closing the ring fd we just got.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// Which glommio this binary was built against (`tools/build-tuned`).
fn check_build() -> Finding {
    match crate::host::glommio_patches() {
        Some(_) if crate::host::profile_guided() => pass(
            "build",
            format!("{}; profile-guided (tools/pgo-train)", crate::host::ring_setup()),
        ),
        Some(_) => pass("build", crate::host::ring_setup()),
        None => warn(
            "build",
            crate::host::ring_setup(),
            "install the production build: tools/build-tuned, then tools/install (perf/RESULTS.md: 25-45% less CPU per request)",
        ),
    }
}

fn check_io_uring_setup() -> Finding {
    match io_uring_setup(0) {
        Ok(()) => {
            if io_uring_setup(IORING_SETUP_COOP_TASKRUN).is_ok() {
                pass("io_uring", "created a ring; IORING_SETUP_COOP_TASKRUN is supported")
            } else {
                pass("io_uring", "created a ring (IORING_SETUP_COOP_TASKRUN is not supported: kernel before 5.19)")
            }
        }
        Err(libc::ENOSYS) => fail(
            "io_uring",
            "io_uring_setup(2) does not exist: this kernel is built without io_uring (CONFIG_IO_URING)",
            "use a kernel with io_uring (every mainstream distribution kernel since 5.8)",
        ),
        Err(libc::EPERM) => fail(
            "io_uring",
            "io_uring_setup(2) is not permitted: disabled by sysctl, or blocked by a seccomp filter (containers' default profiles block io_uring)",
            "allow io_uring: kernel.io_uring_disabled=0; in a container, a seccomp profile that allows io_uring_setup, io_uring_enter and io_uring_register; in a systemd unit, SystemCallFilter must include @aio",
        ),
        Err(libc::ENOMEM) => fail(
            "io_uring",
            "io_uring_setup(2) failed with ENOMEM: the locked-memory limit is too low for a ring",
            "raise the memlock limit (LimitMEMLOCK= in the unit, `ulimit -l`)",
        ),
        Err(e) => fail(
            "io_uring",
            format!("io_uring_setup(2) failed: {}", io::Error::from_raw_os_error(e)),
            "check the kernel's io_uring support and seccomp/LSM policies",
        ),
    }
}

fn rlimit(resource: libc::__rlimit_resource_t) -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes only the struct we pass.
    unsafe { libc::getrlimit(resource, &mut lim) };
    (lim.rlim_cur, lim.rlim_max)
}

fn show_limit(v: u64) -> String {
    if v == libc::RLIM_INFINITY {
        "unlimited".into()
    } else if v >= 1024 && v % 1024 == 0 {
        format!("{} KiB", v / 1024)
    } else {
        format!("{v} bytes")
    }
}

/// True when this process has CAP_IPC_LOCK (locked memory is then not
/// limited for it, whatever RLIMIT_MEMLOCK says).
fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

fn check_memlock(cores: u64) -> Finding {
    let (soft, hard) = rlimit(libc::RLIMIT_MEMLOCK);
    let wanted = cores * MEMLOCK_PER_CORE_BYTES;
    let shown = format!(
        "memlock limit {} (hard {})",
        show_limit(soft),
        show_limit(hard)
    );
    if soft < MEMLOCK_MIN_BYTES {
        fail(
            "memlock",
            format!("{shown}: glommio refuses to start below 512 KiB"),
            format!("LimitMEMLOCK=infinity in the unit (or at least {} MiB), `ulimit -l unlimited` in a shell, or memlock in /etc/security/limits.conf", wanted >> 20),
        )
    } else if soft != libc::RLIM_INFINITY && soft < wanted && !has_cap_ipc_lock() {
        warn(
            "memlock",
            format!("{shown}: below {} MiB for {cores} core(s), glommio runs without registered I/O buffers (slower)", wanted >> 20),
            "LimitMEMLOCK=infinity in the unit, or `ulimit -l unlimited`",
        )
    } else if soft != libc::RLIM_INFINITY && soft < wanted {
        pass(
            "memlock",
            format!("{shown}: this process has CAP_IPC_LOCK, so locked memory is not limited"),
        )
    } else {
        pass("memlock", format!("{shown} is enough for {cores} core(s)"))
    }
}

/// Starts a glommio executor as the server does, and runs a timer on it.
fn check_executor() -> Finding {
    let started = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("doctor")
        .spawn(|| async {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        })
        .map_err(|e| e.to_string())
        .and_then(|h| h.join().map_err(|e| e.to_string()));
    match started {
        Ok(()) => pass(
            "executor",
            "started a glommio executor and ran a timer on its ring",
        ),
        Err(e) => fail(
            "executor",
            format!("a glommio executor could not start: {e}"),
            "fix the io_uring and memlock lines above; the server cannot start otherwise",
        ),
    }
}

fn check_nofile(config: &Config, cores: u64) -> Finding {
    let (soft, hard) = rlimit(libc::RLIMIT_NOFILE);
    let needed = cores * (config.connections_max_per_core as u64 + NOFILE_SLACK_PER_CORE)
        + NOFILE_SLACK_PER_CORE;
    let nr_open = read_proc("/proc/sys/fs/nr_open").and_then(|v| v.parse::<u64>().ok());
    let shown = format!(
        "open files limit {soft} (hard {hard}; the server raises the soft limit to the hard one)"
    );
    if hard >= needed {
        return pass(
            "nofile",
            format!(
                "{shown}: enough for {cores} core(s) x {} connections",
                config.connections_max_per_core
            ),
        );
    }
    let mut fix = format!(
        "LimitNOFILE={} in the unit (or `ulimit -n {needed}`)",
        needed.next_power_of_two().max(1 << 20)
    );
    if nr_open.is_some_and(|n| n < needed) {
        fix.push_str(&format!(
            "; the kernel's fs.nr_open ({}) caps it: `sysctl -w fs.nr_open={}`",
            nr_open.unwrap_or(0),
            needed.next_power_of_two()
        ));
    }
    fix.push_str(", or lower connections_max_per_core");
    warn(
        "nofile",
        format!("{shown}: {cores} core(s) x {} connections need {needed}; connections beyond the limit are refused", config.connections_max_per_core),
        fix,
    )
}

fn check_somaxconn(config: &Config) -> Finding {
    let Some(somaxconn) =
        read_proc("/proc/sys/net/core/somaxconn").and_then(|v| v.parse::<u32>().ok())
    else {
        return warn(
            "somaxconn",
            "cannot read net.core.somaxconn",
            "check /proc/sys/net/core/somaxconn",
        );
    };
    if somaxconn < config.listen_backlog {
        warn(
            "somaxconn",
            format!("net.core.somaxconn = {somaxconn} caps listen_backlog = {}: bursts of new connections may be dropped", config.listen_backlog),
            format!("`sysctl -w net.core.somaxconn={}` (and in /etc/sysctl.d/), or lower listen_backlog", config.listen_backlog),
        )
    } else {
        pass(
            "somaxconn",
            format!(
                "net.core.somaxconn = {somaxconn} >= listen_backlog = {}",
                config.listen_backlog
            ),
        )
    }
}

/// Whether a listener's address can be bound (`topic` names the option).
fn check_bind(topic: &'static str, addr: std::net::SocketAddr) -> Finding {
    match TcpListener::bind(addr) {
        Ok(_) => pass(topic, format!("{addr} can be bound")),
        Err(e) => match e.raw_os_error() {
            Some(libc::EADDRINUSE) => warn(
                topic,
                format!("{addr} is in use (by a running uringnotes, or another program)"),
                "stop the other program, or choose another listen address",
            ),
            Some(libc::EACCES) => fail(
                topic,
                format!("{addr}: permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)"),
                "listen on a port above 1023 (behind a proxy), or AmbientCapabilities=CAP_NET_BIND_SERVICE in the unit",
            ),
            Some(libc::EADDRNOTAVAIL) => fail(
                topic,
                format!("{addr}: no such address on this machine"),
                "listen on an address of this machine, or 0.0.0.0 / [::]",
            ),
            _ => fail(topic, format!("{addr}: {e}"), "check the address"),
        },
    }
}

/// The HTTPS certificate and key (`tls_cert`, `tls_key`): readable, the
/// key belongs to the certificate, the chain is in order, days until it
/// expires (WARN under `EXPIRY_WARN_DAYS`), the key file private.
pub fn check_tls(config: &Config, now_unix: i64) -> Vec<Finding> {
    use crate::tls::certs::{self, CertError, EXPIRY_WARN_DAYS};
    use std::os::unix::fs::PermissionsExt as _;
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return vec![pass(
            "tls",
            "plain HTTP on listen (no tls_cert and tls_key)",
        )];
    };
    let pair = match certs::read_pair(cert, key, &crate::tls::provider()) {
        Ok(pair) => pair,
        Err(e) => {
            let fix = match &e {
                CertError::Read { .. } | CertError::TooLarge { .. } => "check the path and that the server's user can read it (under systemd, pass the key with LoadCredential=: README, \"HTTPS\"); outside the service, give the real paths with --tls-cert and --tls-key",
                CertError::Mismatch { .. } => "tls_key must be the private key of the certificate in tls_cert (certbot: privkey.pem beside fullchain.pem, from the same renewal)",
                _ => "tls_cert must be the PEM certificate chain (certbot's fullchain.pem) and tls_key its PEM private key (privkey.pem)",
            };
            return vec![fail("tls", e.to_string(), fix)];
        }
    };
    let leaf = pair.leaf();
    let mut out = vec![pass(
        "tls",
        format!(
            "{}: {} issued by {}, {} certificate(s); {} is its private key",
            cert.display(),
            leaf.subject,
            leaf.issuer,
            pair.chain.len(),
            key.display()
        ),
    )];
    let days = leaf.days_left(now_unix);
    let until = certs::unix_date(leaf.not_after_unix);
    out.push(match pair.check_validity(now_unix) {
        Err(e) => fail("tls expiry", e.to_string(), "renew the certificate (certbot renew), then reload: systemctl reload uringnotes"),
        Ok(()) if days < EXPIRY_WARN_DAYS => warn(
            "tls expiry",
            format!("the certificate expires in {days} days ({until})"),
            "renewal should have happened by now: check `certbot renew --dry-run` and the deploy hook (README, \"HTTPS\")",
        ),
        Ok(()) => pass("tls expiry", format!("valid for {days} more days (until {until})")),
    });
    out.push(match certs::chain_order(&pair.chain) {
        Err(why) => warn(
            "tls chain",
            why,
            "list the certificate first, then each issuer in turn (certbot's fullchain.pem is in this order)",
        ),
        Ok(()) if pair.chain.len() == 1 && leaf.self_issued() => warn(
            "tls chain",
            "the certificate is self-signed: browsers will not trust it",
            "use a certificate from a CA (e.g. Let's Encrypt with certbot: README, \"HTTPS\")",
        ),
        Ok(()) => pass("tls chain", format!("{} certificate(s), each issued by the next", pair.chain.len())),
    });
    let mode = fs::metadata(key).map_or(0, |m| m.permissions().mode());
    if mode & 0o077 != 0 {
        out.push(warn(
            "tls key",
            format!(
                "{} is readable by other users (mode {:o})",
                key.display(),
                mode & 0o777
            ),
            format!("chmod 600 {}", key.display()),
        ));
    }
    out
}

/// Longest wait when trying to reach a `join` address.
const JOIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The cluster settings: the cookie, the peer port, the join addresses.
fn check_cluster(config: &Config) -> Vec<Finding> {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(peer) = config.peer_listen else {
        return vec![pass("cluster", "single node (no peer_listen)")];
    };
    let mut out = Vec::new();
    if config.cookie_file.is_empty() {
        out.push(fail(
            "cookie",
            "peer_listen is set but cookie_file is not",
            "set cookie_file to the shared secret's file",
        ));
    }
    for path in &config.cookie_file {
        match crate::cluster::auth::Cookie::load(path) {
            Err(e) => out.push(fail(
                "cookie",
                e.to_string(),
                "create it on every node with the same content: `head -c 32 /dev/urandom | base64 > FILE`; under systemd pass it with LoadCredential= (README)",
            )),
            Ok(_) => {
                let mode = fs::metadata(path).map_or(0, |m| m.permissions().mode());
                if mode & 0o077 != 0 {
                    out.push(warn(
                        "cookie",
                        format!("{} is readable by other users (mode {:o}): anyone who reads it can join the cluster", path.display(), mode & 0o777),
                        format!("chmod 600 {}", path.display()),
                    ));
                } else {
                    out.push(pass("cookie", format!("{} is readable and private", path.display())));
                }
            }
        }
    }
    let tcp = TcpListener::bind(peer).map(drop);
    let udp = std::net::UdpSocket::bind(peer).map(drop);
    match (tcp, udp) {
        (Ok(()), Ok(())) => out.push(pass(
            "peer port",
            format!("{peer} can be bound (TCP and UDP)"),
        )),
        (Err(e), _) | (_, Err(e)) if e.raw_os_error() == Some(libc::EADDRINUSE) => out.push(warn(
            "peer port",
            format!("{peer} is in use (by a running uringnotes, or another program)"),
            "stop the other program, or choose another peer_listen port",
        )),
        (Err(e), _) | (_, Err(e)) => out.push(fail(
            "peer port",
            format!("{peer}: {e}"),
            "listen on an address of this machine (TCP and UDP on the same port)",
        )),
    }
    for addr in &config.join {
        match std::net::TcpStream::connect_timeout(addr, JOIN_CONNECT_TIMEOUT) {
            Ok(_) => out.push(pass("join", format!("{addr} answers on TCP"))),
            Err(e) => out.push(warn(
                "join",
                format!("{addr} cannot be reached ({e}); this node keeps retrying once started"),
                "start that member first, or open TCP and UDP on its peer port between the nodes",
            )),
        }
    }
    out
}

/// Directories created (outermost first) to make `path` exist.
fn create_missing_dirs(path: &Path) -> io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut p = Some(path);
    while let Some(dir) = p {
        if dir.as_os_str().is_empty() || dir.exists() {
            break;
        }
        missing.push(dir.to_path_buf());
        p = dir.parent();
    }
    missing.reverse();
    fs::create_dir_all(path)?;
    Ok(missing)
}

fn check_data_dir(config: &Config) -> Vec<Finding> {
    let dir = &config.data_dir;
    let shown = dir.display();
    let mut out = Vec::new();
    if dir.exists() && !dir.is_dir() {
        out.push(fail(
            "data dir",
            format!("{shown} exists and is not a directory"),
            "point data_dir at a directory",
        ));
        return out;
    }
    let created = match create_missing_dirs(dir) {
        Ok(c) => c,
        Err(e) => {
            out.push(fail(
                "data dir",
                format!("{shown} does not exist and cannot be created: {e}"),
                "create it writable for the service user, or choose another data_dir (the unit's StateDirectory= does this)",
            ));
            return out;
        }
    };
    if let Some(lock) = locked_by_server(dir) {
        out.push(lock);
    }
    out.extend(probe_writes(config, dir));
    out.push(check_filesystem(config, dir));
    // Leave no trace: remove what this check created (if still empty).
    for d in created.iter().rev() {
        let _ = fs::remove_dir(d);
    }
    out
}

/// A finding when a running server holds the data directory's lock.
fn locked_by_server(dir: &Path) -> Option<Finding> {
    let file = fs::OpenOptions::new()
        .read(true)
        .open(dir.join("LOCK"))
        .ok()?;
    // SAFETY: flock(2) on a descriptor we own; released when `file` closes.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    (rc != 0).then(|| {
        warn(
            "data dir",
            format!(
                "{} is locked: a uringnotes server is running on it",
                dir.display()
            ),
            "that is fine for a check; a second server on the same data dir would refuse to start",
        )
    })
}

/// A page-aligned buffer for O_DIRECT writes.
struct AlignedBlock {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBlock {
    fn new() -> Option<AlignedBlock> {
        let layout =
            std::alloc::Layout::from_size_align(PROBE_BLOCK_BYTES, PROBE_BLOCK_BYTES).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(AlignedBlock { ptr, layout })
    }
}

impl Drop for AlignedBlock {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// Creates a probe file, writes to it with O_DIRECT, times fdatasync.
fn probe_writes(config: &Config, dir: &Path) -> Vec<Finding> {
    let shown = dir.display();
    let probe = dir.join(format!(".doctor-probe-{}", std::process::id()));
    let mut out = Vec::new();
    let file = match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(f) => f,
        Err(e) => {
            out.push(fail(
                "data dir",
                format!("cannot create a file in {shown}: {e}"),
                "make the data directory writable for the user the server runs as",
            ));
            return out;
        }
    };
    out.push(pass("data dir", format!("{shown} is writable")));
    let direct = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe);
    let (target, direct_ok) = match direct {
        Ok(f) => (f, true),
        Err(e) => {
            out.push(warn(
                "O_DIRECT",
                format!("{shown} refuses O_DIRECT ({e}): the server falls back to buffered I/O"),
                "put the data directory on a disk filesystem (ext4, xfs) rather than tmpfs or a network filesystem",
            ));
            (file, false)
        }
    };
    let Some(block) = AlignedBlock::new() else {
        out.push(warn(
            "fdatasync",
            "could not allocate a probe buffer",
            "retry",
        ));
        return out;
    };
    let mut timings = Vec::with_capacity(FSYNC_PROBES);
    let mut error: Option<io::Error> = None;
    for i in 0..FSYNC_PROBES {
        let started = Instant::now();
        // SAFETY: pwrite(2) from our aligned buffer of PROBE_BLOCK_BYTES and
        // fdatasync(2) on our own probe file.
        let written = unsafe {
            libc::pwrite(
                target.as_raw_fd(),
                block.ptr.cast(),
                PROBE_BLOCK_BYTES,
                (i * PROBE_BLOCK_BYTES) as libc::off_t,
            )
        };
        if written != PROBE_BLOCK_BYTES as isize {
            error = Some(io::Error::last_os_error());
            break;
        }
        if unsafe { libc::fdatasync(target.as_raw_fd()) } != 0 {
            error = Some(io::Error::last_os_error());
            break;
        }
        timings.push(started.elapsed());
    }
    drop(target);
    let _ = fs::remove_file(&probe);
    if direct_ok && error.is_none() {
        out.push(pass("O_DIRECT", "aligned direct writes work"));
    }
    if let Some(e) = error {
        out.push(fail(
            "fdatasync",
            format!("writing and syncing a probe file in {shown} failed: {e}"),
            "check the disk (dmesg) and the filesystem; the log needs working fdatasync",
        ));
        return out;
    }
    timings.sort();
    let median = timings[timings.len() / 2];
    let max = timings[timings.len() - 1];
    let measured = format!(
        "{FSYNC_PROBES} x (4 KiB write + fdatasync): median {:.2} ms, max {:.2} ms",
        median.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    if config.fsync == FsyncPolicy::Never {
        out.push(warn(
            "fdatasync",
            format!("{measured}; but fsync = never: acknowledged notes can be lost on a crash"),
            "set fsync = \"always\" outside benchmarks",
        ));
    } else if median > FSYNC_SLOW {
        out.push(warn(
            "fdatasync",
            format!("{measured}: every acknowledged note waits for one (group commit shares it), so writes take at least that long"),
            "use a faster disk (SSD/NVMe with power-loss protection) for the data directory",
        ));
    } else {
        out.push(pass("fdatasync", measured));
    }
    out
}

fn filesystem_name(magic: i64) -> Option<&'static str> {
    Some(match magic {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlayfs",
        0x6969 => "nfs",
        0x2FC1_2FC1 => "zfs",
        0xF2F5_2010 => "f2fs",
        _ => return None,
    })
}

fn check_filesystem(config: &Config, dir: &Path) -> Finding {
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return warn(
            "disk",
            "the data dir path contains a NUL byte",
            "choose another data_dir",
        );
    };
    // SAFETY: statfs(2) with a valid C string and a struct it fills.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } != 0 {
        return warn(
            "disk",
            format!("statfs failed: {}", io::Error::last_os_error()),
            "check the data directory",
        );
    }
    let fs_type = st.f_type as i64;
    let name = filesystem_name(fs_type)
        .map_or_else(|| format!("filesystem 0x{fs_type:x}"), |n| n.to_string());
    let free = st.f_bavail as u64 * st.f_bsize as u64;
    let total = st.f_blocks as u64 * st.f_bsize as u64;
    let shown = format!(
        "{name}, {:.1} GiB free of {:.1} GiB",
        free as f64 / (1u64 << 30) as f64,
        total as f64 / (1u64 << 30) as f64
    );
    let free_wanted = FREE_BYTES_WARN.max(4 * config.segment_bytes_max);
    if name == "tmpfs" {
        warn(
            "disk",
            format!("{shown}: tmpfs is memory, every note is lost on reboot"),
            "put the data directory on a disk",
        )
    } else if name == "nfs" {
        warn(
            "disk",
            format!("{shown}: a network filesystem; fdatasync and locking semantics vary"),
            "put the data directory on a local disk",
        )
    } else if free < free_wanted {
        warn(
            "disk",
            format!(
                "{shown}: below {} MiB free; when the disk is full, writes are refused with 503",
                free_wanted >> 20
            ),
            "free space or move the data directory to a larger disk",
        )
    } else {
        pass("disk", shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(parse_kernel_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_kernel_release("5.19.0"), Some((5, 19)));
        assert_eq!(parse_kernel_release("4.19-rc1"), Some((4, 19)));
        assert_eq!(parse_kernel_release("x"), None);
        assert!((5, 10) < KERNEL_RECOMMENDED && (6, 1) >= KERNEL_RECOMMENDED);
    }
}
