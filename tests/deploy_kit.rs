//! The bare-metal deployment kit (`tools/`) and the server's behaviour under
//! a service manager: the example configuration documents every option and
//! is valid; the systemd unit is well-formed and keeps what io_uring needs;
//! `tools/install` stages files without clobbering a configuration; SIGHUP
//! reloads the log filter; logs are journald-friendly; readiness is
//! announced with sd_notify.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, BIN};
use uringnotes::config::Config;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The option names of `uringnotes serve` as config keys, from its --help.
fn serve_option_keys() -> Vec<String> {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let mut keys: Vec<String> = help
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|f| {
            f.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .replace('-', "_")
        })
        // `--no-served-by` sets `served_by = false`.
        .map(|k| k.strip_prefix("no_").map_or(k.clone(), str::to_string))
        // Duration flags (`--stall-timeout 1s`) set `*_ms` keys in the file.
        .map(|k| match k.as_str() {
            "stall_timeout" | "restart_window" => format!("{k}_ms"),
            _ => k,
        })
        .filter(|k| !k.is_empty() && k != "help" && k != "config")
        .collect();
    keys.sort();
    keys.dedup();
    assert!(
        keys.len() > 15,
        "parsed too few options from --help: {keys:?}"
    );
    keys
}

#[test]
fn example_config_documents_every_option_and_is_valid() {
    let text = std::fs::read_to_string(repo("tools/uringnotes.toml")).unwrap();
    for key in serve_option_keys() {
        let documented = text.lines().any(|l| {
            let l = l.trim_start_matches('#').trim_start();
            l.starts_with(&format!("{key} = "))
        });
        assert!(
            documented,
            "tools/uringnotes.toml does not document `{key}` (add `# {key} = DEFAULT` with a comment)"
        );
    }
    // As shipped, and with every commented default switched on.
    let shipped: Config = toml::from_str(&text).expect("the example parses");
    shipped.validate().expect("the example is valid");
    let all_on: String = text
        .lines()
        .map(|l| {
            match l
                .strip_prefix("# ")
                .and_then(|r| r.split_once(" = ").map(|(k, _)| (k, r)))
            {
                Some((key, rest)) if key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') => {
                    rest
                }
                _ => l,
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let all: Config = toml::from_str(&all_on).unwrap_or_else(|e| panic!("{e}\n{all_on}"));
    all.validate().expect("every documented default is valid");
    let defaults = Config::default();
    assert_eq!(
        all.idle_timeout_ms, defaults.idle_timeout_ms,
        "documented defaults are the defaults"
    );
    assert_eq!(
        all.connections_max_per_core,
        defaults.connections_max_per_core
    );
    assert_eq!(
        all.sse_subscribers_max_per_core,
        defaults.sse_subscribers_max_per_core
    );
    assert_eq!(all.segment_bytes_max, defaults.segment_bytes_max);
    assert_eq!(all.log_level, defaults.log_level);
}

#[test]
fn systemd_unit_keeps_what_io_uring_needs() {
    let unit = std::fs::read_to_string(repo("tools/uringnotes.service")).unwrap();
    let has = |line: &str| unit.lines().any(|l| l.trim() == line);
    for line in [
        "Type=notify",
        "DynamicUser=yes",
        "StateDirectory=uringnotes",
        "LimitMEMLOCK=infinity",
        "LimitNOFILE=1048576",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ExecStart=/usr/local/bin/uringnotes serve --config /etc/uringnotes/uringnotes.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(has(line), "the unit lacks `{line}`");
    }
    // A system call filter must let io_uring through (@aio).
    for l in unit
        .lines()
        .filter(|l| l.starts_with("SystemCallFilter=") && !l.contains('~'))
    {
        assert!(l.contains("@system-service") && l.contains("@aio"), "{l}");
    }
    let families = unit
        .lines()
        .find_map(|l| l.strip_prefix("RestrictAddressFamilies="))
        .expect("RestrictAddressFamilies");
    assert!(
        families.contains("AF_UNIX"),
        "sd_notify needs AF_UNIX: {families}"
    );

    // systemd's own parser, where it is installed: no unknown directive.
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("uringnotes.service");
        std::fs::write(&path, unit.replace("/usr/local/bin/uringnotes", BIN)).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let complaints: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("uringnotes.service"))
            .collect();
        assert!(complaints.is_empty(), "{complaints:?}");
    } else {
        eprintln!("note: systemd-analyze is not installed; checked the unit's text only");
    }
}

#[test]
fn install_stages_files_and_keeps_an_existing_config() {
    let dest = tempfile::tempdir().unwrap();
    let run = || {
        let out = Command::new(repo("tools/install"))
            .args(["--binary", BIN])
            .env("DESTDIR", dest.path())
            .env("PREFIX", "/opt/un")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run();
    let bin = dest.path().join("opt/un/bin/uringnotes");
    assert_eq!(bin.metadata().unwrap().mode() & 0o777, 0o755);
    let hook = dest
        .path()
        .join("opt/un/lib/uringnotes/certbot-deploy-hook");
    assert_eq!(
        hook.metadata().unwrap().mode() & 0o777,
        0o755,
        "the certbot deploy hook the unit mentions is installed"
    );
    let unit =
        std::fs::read_to_string(dest.path().join("etc/systemd/system/uringnotes.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/opt/un/bin/uringnotes serve"),
        "PREFIX applies to the unit"
    );
    let config = dest.path().join("etc/uringnotes/uringnotes.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:9999\"\n").unwrap();
    run();
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "listen = \"127.0.0.1:9999\"\n",
        "an existing configuration is never overwritten"
    );
    assert!(dest
        .path()
        .join("etc/uringnotes/uringnotes.toml.example")
        .exists());
}

#[test]
fn sighup_reloads_the_log_filter_from_the_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("uringnotes.toml");
    std::fs::write(&config, "log_level = \"warn\"\n").unwrap();
    let mut server = Server::start_env(
        &["--cores", "1", "--config", config.to_str().unwrap()],
        &[("RUST_LOG", None)],
    );
    assert!(
        !server.stderr().contains("INFO"),
        "log_level = warn hides info lines:\n{}",
        server.stderr()
    );
    std::fs::write(&config, "log_level = \"debug\"\n").unwrap();
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.stderr().contains("log filter reloaded") {
        assert!(Instant::now() < deadline, "no reload:\n{}", server.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.get("/healthz").status, 200, "still serving");
    // A debug line that only shows at the new level.
    assert!(server.terminate().success());
    assert!(server.stderr().contains("DEBUG"), "{}", server.stderr());

    // A broken file changes nothing and says so.
    std::fs::write(&config, "log_level = \"warn\"\n").unwrap();
    let server = Server::start_env(
        &["--cores", "1", "--config", config.to_str().unwrap()],
        &[("RUST_LOG", None)],
    );
    std::fs::write(&config, "log_level = [\n").unwrap();
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.stderr().contains("config file not reloaded") {
        assert!(Instant::now() < deadline, "{}", server.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.get("/healthz").status, 200);
}

#[test]
fn rust_log_wins_over_the_config_and_survives_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("uringnotes.toml");
    std::fs::write(&config, "log_level = \"error\"\n").unwrap();
    let server = Server::start_env(
        &["--cores", "1", "--config", config.to_str().unwrap()],
        &[("RUST_LOG", Some("info"))],
    );
    assert!(server.stderr().contains("INFO"), "{}", server.stderr());
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.stderr().contains("set by RUST_LOG; it stays") {
        assert!(Instant::now() < deadline, "{}", server.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn journald_lines_carry_priority_and_no_timestamp_and_readiness_is_notified() {
    let tmp = tempfile::tempdir().unwrap();
    let stderr_path = tmp.path().join("stderr.log");
    let stderr_file = std::fs::File::create(&stderr_path).unwrap();
    let meta = stderr_file.metadata().unwrap();
    let notify_path = tmp.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cores",
            "1",
            "--data-dir",
        ])
        .arg(tmp.path().join("data"))
        .env("RUST_LOG", "info")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::piped())
        .stderr(stderr_file)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("uringnotes listening on http://"),
        "{line}"
    );
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("a readiness datagram");
    assert_eq!(&buf[..n], b"READY=1");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let n = notify.recv(&mut buf).expect("a stopping datagram");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(child.wait().unwrap().success());
    let log = std::fs::read_to_string(&stderr_path).unwrap();
    let serving = log
        .lines()
        .find(|l| l.contains("uringnotes serving"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(serving.starts_with("<6>"), "info is priority 6: {serving}");
    assert!(
        serving[3..].trim_start().starts_with("INFO"),
        "no timestamp (journald stamps lines itself): {serving}"
    );
    assert!(!log.contains('\u{1b}'), "no colour codes");
}
