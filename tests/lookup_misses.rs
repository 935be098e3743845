//! Misses cost almost nothing: nix caches a 404 for an hour and asks every substituter about every
//! path of a closure, so C answers a narinfo no peer's summary claims at once, without a network
//! round trip; a peer whose summary claims everything but never answers costs one lookup deadline,
//! no more; and nix then falls through to its next substituter. A peer that does answer, but works
//! through a queue of requests (a seeder a crowd asks at once), is waited for past the deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::rogue::{Plan, Rogue};
use common::*;

fn random_hash(i: u64) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("absent-{i}-{}", nonce()).as_bytes());
    peerix::nix::base32::encode(&d[..20])
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_peer_claiming_a_path_every_miss_is_answered_without_asking_anyone() {
    let w = Work::new();
    let rogue = Rogue::start(Plan { no_summary: true, ..Default::default() }, None).await;
    // A peerix peer is connected, but it sent no summary: it is asked nothing.
    let c = Daemon::start(&w.path("state"), &[&LOOPBACK_LAN[..], &["--peer", &rogue.addr]].concat());
    c.wait_log("peer is a peerix node");
    let http = client();
    let mut slowest = Duration::ZERO;
    for i in 0..200 {
        let t = Instant::now();
        let r = request(&http, "GET", &format!("{}/{}.narinfo", c.url, random_hash(i)), &[]).await;
        slowest = slowest.max(t.elapsed());
        assert_eq!(r.status, 404);
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    let s = c.status().await;
    let counters = &s["substitution"]["counters"];
    assert_eq!(counters["misses_unasked"], 200, "{counters}");
    assert_eq!(counters["misses_asked"], 0, "no miss may cost a round trip: {counters}");
    // Not a benchmark (see benches/substitute.sh): a bound no network round trip could meet if one
    // were made by mistake is the deadline, which no answer here came near.
    assert!(slowest < Duration::from_millis(200), "slowest miss took {slowest:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_never_answers_costs_one_deadline_and_nix_falls_through() {
    let w = Work::new();
    let (sk, pk) = w.keypair("slow-1");
    let f = w.build_fixture();
    w.sign(&f.top, &sk);
    let up = Upstream::start(&w.binary_cache("upstream", &[&f.top]));
    let rogue = Rogue::start(Plan { silent: true, ..Default::default() }, None).await;
    let c = peer_client(&w, "c", "client", &pk, &[&rogue.addr], &["--lookup-timeout", "300ms"]);
    c.wait_log("have-summary applied");
    // Nothing says yet whether it is busy or gone, so it gets three deadlines, once.
    let t = Instant::now();
    let r = get(&format!("{}/{}.narinfo", c.url, random_hash(0))).await;
    let took = t.elapsed();
    assert_eq!(r.status, 404);
    assert!(took >= Duration::from_millis(900), "answered before three deadlines: {took:?} (never asked?)");
    assert!(took < Duration::from_millis(1600), "the first-contact deadline did not hold: {took:?}");
    // It let that pass: from now on it costs one deadline.
    let t = Instant::now();
    let r = get(&format!("{}/{}.narinfo", c.url, random_hash(1))).await;
    let took = t.elapsed();
    assert_eq!(r.status, 404);
    assert!(took >= Duration::from_millis(300), "answered before the deadline: {took:?} (the peer was never asked?)");
    assert!(took < Duration::from_millis(850), "the deadline did not hold: {took:?}");
    assert_eq!(c.status().await["substitution"]["counters"]["misses_asked"], 2);

    // nix, with C first and a test upstream second, gets the closure from upstream.
    let out = w
        .nix("nix-store")
        .arg("--store")
        .arg(w.path("client"))
        .args(["--realise", &f.top, "--option", "substituters", &format!("{} {}", c.url, up.url)])
        .args(["--option", "trusted-public-keys", &pk])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), c.log());
    assert_eq!(c.status().await["substitution"]["counters"]["misses_asked"], 4, "top and dep each cost one deadline");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_peer_that_keeps_answering_is_waited_for_past_the_deadline() {
    let w = Work::new();
    let (sk, pk) = w.keypair("busy-1");
    let f = w.build_fixture();
    w.sign(&f.top, &sk);
    let cache = w.binary_cache("cache", &[&f.top]);
    let narinfo = std::fs::read_to_string(cache.join(format!("{}.narinfo", hash_part(&f.top)))).unwrap();
    // The rogue answers one request every 150 ms, "not here" for all but the fixture's path.
    let plan = Plan {
        narinfo: Some((narinfo, peerix::ipld::raw_cid(b"any root"))),
        for_hash: Some(hash_part(&f.top).to_owned()),
        busy: Some(Duration::from_millis(150)),
        ..Default::default()
    };
    let rogue = Rogue::start(plan, None).await;
    let c = peer_client(&w, "c", "client", &pk, &[&rogue.addr], &["--lookup-timeout", "200ms"]);
    c.wait_log("have-summary applied");
    // Five lookups ahead of ours in the rogue's queue: its answer comes ~900 ms after the ask,
    // more than four deadlines, while the answers before it keep coming.
    let misses: Vec<_> = (0..5)
        .map(|i| {
            let url = format!("{}/{}.narinfo", c.url, random_hash(100 + i));
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    c.wait_status("five lookups asked", |s| {
        s["p2p"]["peers"].as_array().is_some_and(|p| p.iter().any(|p| p["stats"]["lookups_asked"] == 5))
    })
    .await;
    let t = Instant::now();
    let r = get(&format!("{}/{}.narinfo", c.url, hash_part(&f.top))).await;
    let took = t.elapsed();
    assert_eq!(r.status, 200, "a busy peer's answer was not waited for ({took:?}):\n{}", c.log());
    assert!(took > Duration::from_millis(400), "the answer was not behind the others: {took:?}");
    for m in misses {
        assert_eq!(m.await.unwrap().status, 404);
    }
}
