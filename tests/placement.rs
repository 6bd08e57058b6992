//! `--placement`: executors pinned to one CPU each, or left to the kernel,
//! checked on the real binary through the CPU affinity of its shard
//! threads (/proc/PID/task/*/status) and what `/_status` reports.

mod common;

use common::Server;

/// The CPUs each shard may run on, from its threads' `Cpus_allowed_list`
/// (`0-1`, `0,2-3`). glommio names an executor's helper thread (for
/// blocking calls) like the executor and places it the same way; both must
/// agree, and each shard is listed once.
fn shard_thread_cpus(pid: u32) -> Vec<Vec<usize>> {
    let mut found: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let task = task.expect("task entry").path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !comm.starts_with("shard-") {
            continue;
        }
        let status = std::fs::read_to_string(task.join("status")).expect("task status");
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list line")
            .trim()
            .to_string();
        let cpus = parse_cpu_list(&list);
        let name = comm.trim().to_string();
        if let Some(seen) = found.get(&name) {
            assert_eq!(seen, &cpus, "threads of shard {name} placed alike");
        }
        found.insert(name, cpus);
    }
    found.into_values().collect()
}

fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

/// CPUs this test process may run on (the server inherits them).
fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string();
    parse_cpu_list(&list)
}

fn cores_for_test() -> usize {
    allowed_cpus().len().min(2)
}

fn serves_a_note(s: &Server) {
    let created = s.post_note("placed somewhere");
    assert_eq!(created.status, 201, "POST /notes: {}", created.text());
    let location = created.header("location").expect("Location").to_string();
    assert_eq!(s.get(&location).status, 200);
}

#[test]
fn pinned_executors_each_run_on_one_cpu_of_their_own() {
    let cores = cores_for_test();
    let s = Server::start(&["--placement", "pinned", "--cores", &cores.to_string()]);
    serves_a_note(&s);
    let threads = shard_thread_cpus(s.pid());
    assert_eq!(
        threads.len(),
        cores,
        "one shard thread per core: {threads:?}"
    );
    let mut pinned: Vec<usize> = threads
        .iter()
        .map(|cpus| {
            assert_eq!(cpus.len(), 1, "a pinned shard may run on one CPU: {cpus:?}");
            cpus[0]
        })
        .collect();
    pinned.sort_unstable();
    pinned.dedup();
    assert_eq!(
        pinned.len(),
        cores,
        "each shard on a CPU of its own: {threads:?}"
    );
    let status = s.get("/_status").json();
    for shard in status["shards"].as_array().expect("shards") {
        assert!(shard["cpu"].is_u64(), "/_status names the CPU: {shard}");
    }
}

#[test]
fn unpinned_executors_may_run_on_every_allowed_cpu() {
    let cores = cores_for_test();
    let s = Server::start(&["--placement", "unpinned", "--cores", &cores.to_string()]);
    serves_a_note(&s);
    let threads = shard_thread_cpus(s.pid());
    assert_eq!(
        threads.len(),
        cores,
        "one shard thread per core: {threads:?}"
    );
    let allowed = allowed_cpus();
    for cpus in &threads {
        assert_eq!(cpus, &allowed, "an unpinned shard keeps the process's CPUs");
    }
    let status = s.get("/_status").json();
    for shard in status["shards"].as_array().expect("shards") {
        assert!(
            shard["cpu"].is_null(),
            "no CPU for an unpinned shard: {shard}"
        );
    }
}

#[test]
fn naming_the_cpus_pins_the_executors_under_auto() {
    let cpu = allowed_cpus()[0];
    let s = Server::start(&["--cpus", &cpu.to_string()]);
    serves_a_note(&s);
    assert_eq!(shard_thread_cpus(s.pid()), vec![vec![cpu]]);
    assert!(
        s.stderr().contains("pinned=true") || s.stderr().contains("pinned: true"),
        "the startup log says the executors are pinned: {}",
        s.stderr()
    );
}
