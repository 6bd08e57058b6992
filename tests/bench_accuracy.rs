//! Is `uringnotes bench` right? Runs the real binary against stub servers
//! whose latency is known by construction:
//! - a server that answers after a fixed 10 ms: the median must be 10 ms;
//! - a server that stalls once for 1 s during a 10 s constant-rate run: the
//!   corrected percentiles must show the stall, while the uncorrected ones
//!   (what a naive load generator measures) hide it.
//!
//! The bounds are wide enough to hold on a busy 2-core machine and narrow
//! enough that a wrong clock, a wrong unit or a missing correction fails.

mod bench_support;

use std::time::Duration;

use bench_support::{bench, json, u, Behaviour, Stub};

#[test]
fn median_of_a_fixed_10ms_server_is_10ms() {
    let stub = Stub::start(Behaviour::Delay(Duration::from_millis(10)));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.json");
    bench(&[
        &stub.url(),
        "-c",
        "8",
        "-d",
        "2s",
        "--threads",
        "1",
        "--json",
        out.to_str().unwrap(),
    ])
    .assert_ok();
    let r = json(&out);
    let p50 = u(&r, "/latency_us/p50");
    eprintln!(
        "10 ms server: p50 {p50} µs, min {} µs, p99 {} µs, {} requests",
        u(&r, "/latency_us/min"),
        u(&r, "/latency_us/p99"),
        u(&r, "/requests")
    );
    assert!(
        (9_000..=11_000).contains(&p50),
        "p50 {p50} µs is not 10 ms ± 1 ms"
    );
    // 8 connections, 10 ms each, 2 s: about 1,600 requests (fewer if the
    // machine is busy, never more).
    let requests = u(&r, "/requests");
    assert!(
        (400..=1_650).contains(&requests),
        "{requests} requests in 2 s at 8 x 100/s"
    );
    assert!(
        u(&r, "/latency_us/min") >= 10_000,
        "no answer can beat the 10 ms sleep"
    );
    assert_eq!(u(&r, "/errors/total"), 0);
}

#[test]
fn a_one_second_stall_shows_in_corrected_percentiles_only() {
    // 400 requests/s for 10 s = 4,000 requests; request 1,200 (about 3 s in)
    // holds every answer for 1 s. The ~400 requests due during the stall are
    // charged from their due time: 0 to 1 s each, ~10% of the run, so the
    // corrected p99 is ~900 ms. Measured from the actual send, only the four
    // requests in flight during the stall are slow: the uncorrected p99 stays
    // at the server's normal sub-millisecond latency.
    let stub = Stub::start(Behaviour::StallOnce {
        at_request: 1_200,
        stall: Duration::from_secs(1),
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.json");
    let run = bench(&[
        &stub.url(),
        "-c",
        "4",
        "-d",
        "10s",
        "--rate",
        "400",
        "--threads",
        "1",
        "--json",
        out.to_str().unwrap(),
    ]);
    run.assert_ok();
    assert!(
        stub.stalled.load(std::sync::atomic::Ordering::SeqCst),
        "the stub never stalled"
    );
    assert!(run.stdout.contains("constant rate"), "{}", run.stdout);
    let r = json(&out);
    assert_eq!(r["mode"], "rate");
    let corrected_p99 = u(&r, "/latency_us/p99");
    let corrected_max = u(&r, "/latency_us/max");
    let naive_p99 = u(&r, "/latency_uncorrected_us/p99");
    eprintln!(
        "1 s stall: corrected p99 {corrected_p99} µs, max {corrected_max} µs; uncorrected p99 {naive_p99} µs"
    );
    assert!(
        (300_000..=1_100_000).contains(&corrected_p99),
        "corrected p99 {corrected_p99} µs should show the 1 s stall (hundreds of ms)"
    );
    assert!(
        corrected_max >= 950_000,
        "the request due when the stall began waited ~1 s, max is {corrected_max} µs"
    );
    assert!(
        naive_p99 < 100_000 && naive_p99 * 5 < corrected_p99,
        "uncorrected p99 {naive_p99} µs should hide the stall (corrected: {corrected_p99} µs)"
    );
    // The rate was kept: all 4,000 requests were sent (a few may be in
    // flight at the end).
    let requests = u(&r, "/requests");
    assert!(
        (3_900..=4_000).contains(&requests),
        "{requests} requests at 400/s for 10 s"
    );
}
