//! A peer that vanishes (no FIN: SIGSTOP, as a closed lid or a dropped link) leaves the tracker's
//! answers within seconds — its heartbeats to the tracker's node stop (pings come only every
//! 30 s) — not when its record expires (the TTL, a minute here); and it is named again once it is
//! back.
//! (The daemon holds an idle stream to the tracker's node to keep that connection.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::tracker::start_tracker;
use common::*;

async fn providers(tracker: &str, hash: &str) -> String {
    let r = get(&format!("{tracker}/v1/providers/{hash}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

async fn wait_providers(tracker: &str, hash: &str, what: &str, ok: impl Fn(&str) -> bool, limit: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let answer = providers(tracker, hash).await;
        if ok(&answer) {
            return t.elapsed();
        }
        assert!(t.elapsed() < limit, "not within {limit:?}: {what}; the tracker answers {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_peer_leaves_the_answers_within_seconds_and_returns_when_back() {
    let w = Work::new();
    let (sk, pk) = w.keypair("peerix-departed-1");
    let f = w.build_fixture();
    w.sign(&f.top, &sk);
    // TTL 60 s: the record stays live for 40 s at least after the last heartbeat (every 20 s).
    let t = start_tracker(&w.path("tracker"), &["--ttl", "60"]);
    let store = w.chroot_store("a", &[&f.top]);
    let args = ["--store-root", store.to_str().unwrap(), "--trusted-public-key", &pk];
    run(&mut peerix_cmd("publish", &w.path("state-a"), &args));
    let a = Daemon::start(
        &w.path("state-a"),
        &[&args[..], &["--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--tracker", &t.url]].concat(),
    );
    a.wait_log("announced to the tracker");
    let (hash, id) = (hash_part(&f.top).to_owned(), a.peer_id());
    let named = |answer: &str| answer.contains(&id);
    wait_providers(&t.url, &hash, "A named as a provider", named, Duration::from_secs(30)).await;
    // A holds its presence stream to the tracker's node (no relay reservation on loopback: the
    // relay has no public address to hand out).
    t.wait_log(&format!("holding a presence stream peer={id}"));

    assert!(Command::new("kill").args(["-STOP", &a.pid().to_string()]).status().unwrap().success());
    let gone = wait_providers(&t.url, &hash, "A left out", |s| !named(s), Duration::from_secs(20)).await;
    assert!(t.log().contains(&format!("peer left peer={id}")), "{}", t.log());
    assert!(gone < Duration::from_secs(15), "left out after {gone:?}, the record lives ≥ 40 s");

    assert!(Command::new("kill").args(["-CONT", &a.pid().to_string()]).status().unwrap().success());
    // Back by reconnecting or by its next heartbeat (≤ 20 s).
    wait_providers(&t.url, &hash, "A named again", named, Duration::from_secs(40)).await;
    println!("left the answers {} ms after going silent", gone.as_millis());
}

/// The other way round: the tracker goes silent (SIGSTOP), the daemon's pings close its connection
/// to the tracker's node — and once the tracker is back, the daemon holds a presence stream on a
/// new connection. (A read on a stream whose connection the daemon closed itself is never woken:
/// it held the dead stream, its next connection to the tracker idled out a minute later, and the
/// tracker left it out of its answers until something else reconnected it.)
#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_holds_its_presence_again_after_the_tracker_went_silent() {
    let w = Work::new();
    let (_, pk) = w.keypair("peerix-departed-2");
    let f = w.build_fixture();
    let t = start_tracker(&w.path("tracker"), &["--ttl", "60"]);
    let store = w.chroot_store("a", &[&f.top]);
    let a = Daemon::start(
        &w.path("state-a"),
        &[
            "--store-root",
            store.to_str().unwrap(),
            "--trusted-public-key",
            &pk,
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
            "--tracker",
            &t.url,
        ],
    );
    let id = a.peer_id();
    t.wait_log(&format!("holding a presence stream peer={id}"));
    a.wait_log("holding a presence stream to the tracker's node");

    let mark = a.mark();
    assert!(Command::new("kill").args(["-STOP", &t.pid().to_string()]).status().unwrap().success());
    a.wait_log_after(mark, "peer stopped answering pings");
    assert!(Command::new("kill").args(["-CONT", &t.pid().to_string()]).status().unwrap().success());
    a.wait_log_in_order(mark, &["presence stream ended", "holding a presence stream to the tracker's node"]);
    t.wait_log_count(&format!("holding a presence stream peer={id}"), 2);
}
