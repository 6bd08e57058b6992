//! `uringnotes doctor` against the real binary: a healthy set-up passes, and
//! each broken one is reported as FAIL (exit status 1) or WARN (exit 0)
//! with what to change.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use common::{Server, BIN};

fn doctor(args: &[&str], limits: &[(libc::__rlimit_resource_t, u64)]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("doctor").args(args).env_remove("RUST_LOG");
    let limits = limits.to_vec();
    // SAFETY: setrlimit(2) only, in the child between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for &(resource, value) in &limits {
                let lim = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(resource, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let Output { status, stdout, .. } = cmd.output().expect("run uringnotes doctor");
    let text = String::from_utf8(stdout).expect("UTF-8 report");
    (status.code().expect("exit code"), text)
}

/// The report line of `topic` with verdict `verdict`, if any.
fn line<'a>(report: &'a str, verdict: &str, topic: &str) -> Option<&'a str> {
    report
        .lines()
        .find(|l| l.starts_with(verdict) && l[4..].trim_start().starts_with(topic))
}

#[test]
fn a_healthy_setup_passes_and_leaves_no_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("new/data");
    let data_arg = data.to_str().unwrap();
    let (code, report) = doctor(
        &[
            "--data-dir",
            data_arg,
            "--listen",
            "127.0.0.1:0",
            "--cores",
            "1",
        ],
        &[],
    );
    assert_eq!(code, 0, "{report}");
    for topic in ["kernel", "io_uring", "executor", "data dir", "fdatasync"] {
        assert!(
            line(&report, "PASS", topic).is_some(),
            "PASS {topic}:\n{report}"
        );
    }
    assert!(!report.contains("FAIL "), "{report}");
    assert!(
        !tmp.path().join("new").exists(),
        "directories the doctor created are removed"
    );
}

#[test]
fn an_uncreatable_data_dir_fails() {
    // A data dir below a regular file cannot be created, even by root.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let data = file.join("data");
    let (code, report) = doctor(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(code, 1, "{report}");
    let fail = line(&report, "FAIL", "data dir").unwrap_or_else(|| panic!("{report}"));
    assert!(fail.contains("cannot be created"), "{fail}");
    assert!(report.contains("fix: "), "{report}");
    assert!(report.contains("1 FAIL"), "{report}");
}

#[test]
fn a_low_memlock_limit_fails_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (code, report) = doctor(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[(libc::RLIMIT_MEMLOCK, 64 * 1024)],
    );
    assert_eq!(code, 1, "{report}");
    let memlock = line(&report, "FAIL", "memlock").unwrap_or_else(|| panic!("{report}"));
    assert!(memlock.contains("64 KiB"), "{memlock}");
    assert!(report.contains("LimitMEMLOCK=infinity"), "{report}");
    // And the executor check shows the consequence for real.
    assert!(line(&report, "FAIL", "executor").is_some(), "{report}");
}

#[test]
fn a_low_nofile_limit_warns() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (code, report) = doctor(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--cores",
            "1",
            "--connections-max-per-core",
            "4096",
        ],
        &[(libc::RLIMIT_NOFILE, 1024)],
    );
    assert_eq!(code, 0, "a warning is not a failure:\n{report}");
    let nofile = line(&report, "WARN", "nofile").unwrap_or_else(|| panic!("{report}"));
    assert!(nofile.contains("1024"), "{nofile}");
    assert!(report.contains("LimitNOFILE="), "{report}");
}

#[test]
fn a_running_server_is_noticed_not_disturbed() {
    let server = Server::start(&["--cores", "1"]);
    let note = server.post_note("still here").json();
    let addr = server.addr.to_string();
    let (code, report) = doctor(
        &[
            "--data-dir",
            server.data_dir.to_str().unwrap(),
            "--listen",
            &addr,
            "--cores",
            "1",
        ],
        &[],
    );
    assert_eq!(code, 0, "{report}");
    assert!(
        line(&report, "WARN", "listen").is_some_and(|l| l.contains("in use")),
        "{report}"
    );
    assert!(
        line(&report, "WARN", "data dir").is_some_and(|l| l.contains("locked")),
        "{report}"
    );
    // The server still serves, and nothing of the probe is left behind.
    assert_eq!(
        server
            .get(&format!("/notes/{}", note["id"].as_str().unwrap()))
            .status,
        200
    );
    let leftovers: Vec<_> = std::fs::read_dir(&server.data_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".doctor"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn version_and_help() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("uringnotes {}", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(BIN)
        .args(["doctor", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("--data-dir"));
}

#[test]
fn cluster_settings_are_checked() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cookie = tmp.path().join("cookie");
    std::fs::write(&cookie, "doctor-test-cookie-0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A loopback port nobody listens on: the join address is unreachable.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let args = |cookie: &str| {
        vec![
            "--data-dir".to_string(),
            data.to_str().unwrap().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--peer-listen".into(),
            "127.0.0.1:0".into(),
            "--cookie-file".into(),
            cookie.to_string(),
            "--join".into(),
            closed_port.clone(),
        ]
    };
    let owned = args(cookie.to_str().unwrap());
    let argv: Vec<&str> = owned.iter().map(String::as_str).collect();
    let (code, report) = doctor(&argv, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(
        line(&report, "WARN", "cookie").is_some_and(|l| l.contains("644")),
        "{report}"
    );
    assert!(report.contains("chmod 600"), "{report}");
    assert!(line(&report, "PASS", "peer port").is_some(), "{report}");
    assert!(line(&report, "WARN", "join").is_some(), "{report}");

    std::fs::write(&cookie, "short\n").unwrap();
    let (code, report) = doctor(&argv, &[]);
    assert_eq!(code, 1, "{report}");
    assert!(
        line(&report, "FAIL", "cookie").is_some_and(|l| l.contains("fewer than 16 bytes")),
        "{report}"
    );
}

#[test]
fn the_tls_certificate_and_key_are_checked() {
    use common::tls::{Leaf, TestCa};
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&tmp.path().join("pki"));
    let data = tmp.path().join("data");
    let run = |cert: &std::path::Path, key: &std::path::Path| {
        doctor(
            &[
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--cores",
                "1",
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ],
            &[],
        )
    };
    let private = |path: &std::path::Path| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap()
    };
    let good = ca.issue("good", &Leaf::default());
    private(&good.key);
    let (code, report) = run(&good.cert, &good.key);
    assert_eq!(code, 0, "{report}");
    let tls = line(&report, "PASS", "tls").unwrap_or_else(|| panic!("{report}"));
    assert!(tls.contains("is its private key"), "{tls}");
    let expiry = line(&report, "PASS", "tls expiry").unwrap_or_else(|| panic!("{report}"));
    assert!(expiry.contains("more days"), "{expiry}");
    assert!(line(&report, "PASS", "tls chain").is_some(), "{report}");
    assert!(line(&report, "WARN", "tls key").is_none(), "{report}");

    // Expiring soon: a warning, with what to check.
    let soon = ca.issue(
        "soon",
        &Leaf {
            days_valid: 10,
            ..Leaf::default()
        },
    );
    private(&soon.key);
    let (code, report) = run(&soon.cert, &soon.key);
    assert_eq!(code, 0, "{report}");
    let w = line(&report, "WARN", "tls expiry").unwrap_or_else(|| panic!("{report}"));
    assert!(w.contains("expires in"), "{w}");

    // Expired, and a key that is not the certificate's: FAIL.
    let expired = ca.issue(
        "expired",
        &Leaf {
            days_valid: -3,
            ..Leaf::default()
        },
    );
    let (code, report) = run(&expired.cert, &expired.key);
    assert_eq!(code, 1, "{report}");
    assert!(
        line(&report, "FAIL", "tls expiry").is_some_and(|l| l.contains("expired")),
        "{report}"
    );
    let (code, report) = run(&good.cert, &soon.key);
    assert_eq!(code, 1, "{report}");
    assert!(
        line(&report, "FAIL", "tls").is_some_and(|l| l.contains("does not belong")),
        "{report}"
    );
    let (code, report) = run(&tmp.path().join("missing.pem"), &good.key);
    assert_eq!(code, 1, "{report}");
    assert!(
        line(&report, "FAIL", "tls").is_some_and(|l| l.contains("cannot read")),
        "{report}"
    );

    // A chain out of order (the certificate after the leaf did not issue
    // it), and a key readable by others: warnings.
    let chain = tmp.path().join("misordered.pem");
    let mut pem = std::fs::read_to_string(&good.cert).unwrap();
    pem.push_str(&std::fs::read_to_string(&soon.cert).unwrap());
    std::fs::write(&chain, pem).unwrap();
    std::fs::set_permissions(&good.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, report) = run(&chain, &good.key);
    assert_eq!(code, 0, "{report}");
    assert!(
        line(&report, "WARN", "tls chain").is_some_and(|l| l.contains("is not the issuer")),
        "{report}"
    );
    assert!(line(&report, "WARN", "tls key").is_some(), "{report}");
}
