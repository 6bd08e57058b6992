//! Many clients at once: every write is acknowledged and visible everywhere.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use common::{connect_to, Client, Server};

#[test]
fn five_hundred_connections_each_post_then_get() {
    let s = Server::start(&["--cores", "2"]);
    let n = 500;
    let barrier = Arc::new(Barrier::new(n));
    // Open every connection first, so all 500 are open at once.
    let clients: Vec<Client> = (0..n).map(|_| Client::connect(s.addr)).collect();
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let barrier = Arc::clone(&barrier);
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    barrier.wait();
                    let text = format!("concurrent {i}");
                    let r = c.request(
                        "POST",
                        "/notes",
                        &[("Content-Type", "text/plain")],
                        text.as_bytes(),
                    );
                    assert_eq!(r.status, 201, "POST {i}: {}", r.text());
                    let id = r.json()["id"].as_str().unwrap().to_string();
                    let r = c.request("GET", &format!("/notes/{id}"), &[], b"");
                    assert_eq!(r.status, 200, "GET {id}");
                    assert_eq!(r.json()["text"], text);
                    id
                })
                .unwrap()
        })
        .collect();
    let ids: HashSet<String> = handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect();
    assert_eq!(ids.len(), n, "every note got a distinct id");
    let cores: HashSet<&str> = ids.iter().map(|id| id.split('-').nth(1).unwrap()).collect();
    assert_eq!(cores.len(), 2, "writes went through both cores");
    let listed: HashSet<String> = s
        .all_notes()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, ids);
    let m = s.get("/metrics").text();
    let fsyncs: u64 = m
        .lines()
        .find(|l| l.starts_with("uringnotes_fsyncs_total "))
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        fsyncs < n as u64,
        "group commit: {fsyncs} fsyncs for {n} notes"
    );
}

/// More executors than CPUs (a repeated `--cpus` list, as `perf/memory-notes`
/// runs 32): all cores read one shared index. A note acknowledged through
/// any core is visible to the next request on every core, by id and at the
/// top of the list; notes written through every core at once come back
/// complete and in time order on each core (many of them reach the shared
/// order late, behind a newer note of another core).
#[test]
fn with_more_executors_than_cpus_every_core_sees_every_acknowledged_note() {
    const CORES: usize = 6;
    const WRITES_PER_CORE: usize = 40;
    let available: Vec<usize> = core_affinity::get_core_ids()
        .expect("the CPUs this test may use")
        .into_iter()
        .map(|c| c.id)
        .collect();
    let cpus: Vec<String> = (0..CORES)
        .map(|i| available[i % available.len()].to_string())
        .collect();
    let s = Server::start(&["--cores", &CORES.to_string(), "--cpus", &cpus.join(",")]);
    let mut conns: Vec<Client> = (0..CORES).map(|core| connect_to(s.addr, core)).collect();
    for round in 0..2 {
        for writer in 0..CORES {
            let text = format!("round {round} via core {writer}");
            let r = conns[writer].request(
                "POST",
                "/notes",
                &[("Content-Type", "text/plain")],
                text.as_bytes(),
            );
            assert_eq!(r.status, 201, "{}", r.text());
            let id = r.json()["id"].as_str().unwrap().to_string();
            for (core, c) in conns.iter_mut().enumerate() {
                let r = c.request("GET", &format!("/notes/{id}"), &[], b"");
                assert_eq!(r.status, 200, "core {core} finds {id} written via {writer}");
                let r = c.request("GET", "/notes?limit=1", &[], b"");
                assert_eq!(
                    r.json()["notes"][0]["id"].as_str(),
                    Some(id.as_str()),
                    "core {core} lists {id} first"
                );
            }
        }
    }
    // Every core writes at once.
    let handles: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(core, mut c)| {
            std::thread::spawn(move || {
                for i in 0..WRITES_PER_CORE {
                    let text = format!("burst {i} via core {core}");
                    let r = c.request(
                        "POST",
                        "/notes",
                        &[("Content-Type", "text/plain")],
                        text.as_bytes(),
                    );
                    assert_eq!(r.status, 201, "{}", r.text());
                }
                c
            })
        })
        .collect();
    let mut conns: Vec<Client> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let expected = 2 * CORES + CORES * WRITES_PER_CORE;
    for (core, c) in conns.iter_mut().enumerate() {
        let notes = c.all_notes();
        assert_eq!(notes.len(), expected, "core {core} sees every note");
        let created: Vec<u64> = notes
            .iter()
            .map(|n| n["created_at_us"].as_u64().unwrap())
            .collect();
        assert!(
            created.windows(2).all(|w| w[0] >= w[1]),
            "core {core} lists newest first"
        );
        let ids: HashSet<&str> = notes.iter().map(|n| n["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), expected, "no note twice on core {core}");
    }
}
