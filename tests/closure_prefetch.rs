//! Closure prefetch: C fetches a closure's NARs from a peer as nix asks their narinfos, and the NAR
//! requests that follow are answered from memory, byte for byte; a dry run of a closure larger
//! than the buffer holds no more than the buffer; and NARs nix never asks for go after the age cap.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::*;

async fn metrics(d: &Daemon) -> HashMap<String, f64> {
    parse_openmetrics(&get(&format!("{}/metrics", d.url)).await.body)
}

fn m(map: &HashMap<String, f64>, name: &str) -> f64 {
    map.get(&format!("peerix_{name}{{}}")).copied().unwrap_or_else(|| panic!("no {name}: {map:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn nars_are_fetched_while_nix_asks_narinfos_and_the_buffer_stays_bounded() {
    let w = Work::new();
    let (sk, pk) = w.keypair("prefetch-1");
    // 12 NARs of ~20 KB: a 128 KiB buffer (32 KiB at most a NAR) holds about six.
    let (top, all) = w.wide_closure(11, 20_000);
    w.sign(&top, &sk);
    let a = seeder(&w, "a", &[&top], &pk);

    // A dry run asks every narinfo and no NAR: C prefetches within its cap, then drops them all.
    let c =
        peer_client(&w, "c", "c-store", &pk, &[&a.p2p_addr()], &["--prefetch-size", "128K", "--prefetch-age", "2s"]);
    c.wait_log("have-summary applied");
    let out = w
        .nix("nix-store")
        .arg("--store")
        .arg(w.path("dry"))
        .args(["--realise", &top, "--dry-run", "--option", "substituters", &c.url])
        .args(["--option", "trusted-public-keys", &pk])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut peak = 0.0f64;
    let settled = poll_until_metrics(&c, |x| {
        peak = peak.max(m(x, "prefetch_held_bytes"));
        m(x, "prefetch_started_total") + m(x, "prefetch_skipped_full_total") >= all.len() as f64
            && m(x, "prefetch_held_bytes") == 0.0
            && m(x, "prefetch_expired_total") == m(x, "prefetch_started_total")
    })
    .await;
    assert!(peak <= 131_072.0, "held {peak} bytes with a 128K cap");
    assert!(m(&settled, "prefetch_skipped_full_total") >= 4.0, "the cap held some back: {settled:?}");
    assert!(m(&settled, "prefetch_started_total") >= 4.0, "{settled:?}");
    assert_eq!(m(&settled, "prefetch_hits_total"), 0.0, "a dry run fetches no NAR");

    // A realisation through D (a 64M buffer): the NARs come from the prefetch buffer, exact.
    let d = peer_client(&w, "d", "d-store", &pk, &[&a.p2p_addr()], &[]);
    d.wait_log("have-summary applied");
    let out = w.substitute("client", &top, &d.url, &pk);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), d.log());
    w.assert_same_nars("client", &all);
    let after = metrics(&d).await;
    // Each NAR either came from the buffer or, asked for before its prefetch could begin (4 run at
    // once), was fetched by nix's request itself; most come from the buffer.
    let (hits, handed) = (m(&after, "prefetch_hits_total"), m(&after, "prefetch_handed_over_total"));
    assert_eq!(hits + handed, all.len() as f64, "{after:?}");
    assert!(hits >= all.len() as f64 / 2.0, "most NARs from the buffer: {after:?}");
    assert_eq!(m(&after, "prefetch_failed_total"), 0.0);
}

/// Polls C's /metrics until `done` holds (20 s at most); returns the last reading.
async fn poll_until_metrics(d: &Daemon, mut done: impl FnMut(&HashMap<String, f64>) -> bool) -> HashMap<String, f64> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let x = metrics(d).await;
        if done(&x) {
            return x;
        }
        assert!(std::time::Instant::now() < deadline, "metrics never settled: {x:?}\n{}", d.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
