//! Many clients at once: every write is acknowledged and visible everywhere.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use common::{Client, Server};

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
