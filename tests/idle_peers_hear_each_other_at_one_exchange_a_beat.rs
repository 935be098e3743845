//! Two connected peerix nodes with nothing to do keep hearing each other (so a vanished one is
//! closed within seconds) at one exchange every 2 s, not libp2p's two pings: the pings were ~80 %
//! of an idle fleet's traffic. Over a 12 s window after A and C exchanged summaries, their
//! connection stays open (nothing judged silent: the heartbeat is what liveness now waits for) and
//! carries under 80 bytes/s of payload, both ways together (one beat: ~31 bytes each way every
//! 2 s, ~40 B/s with libp2p's ping every 30 s; both ends pinging every 2 s was ~124 B/s).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The TCP connections whose local port is `port`: (peer address, bytes sent + received).
fn sockets(port: &str) -> Vec<(String, u64)> {
    let out = Command::new("ss").args(["-tinH", "state", "established", "sport", "=", &format!(":{port}")]).output();
    let text = String::from_utf8_lossy(&out.expect("ss (iproute2)").stdout).into_owned();
    let mut found = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let peer = line.split_whitespace().nth(3).unwrap_or_default().to_owned();
        let info = lines.next().unwrap_or_default();
        let field = |name: &str| -> u64 {
            info.split_whitespace().find_map(|f| f.strip_prefix(name)).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        found.push((peer, field("bytes_sent:") + field("bytes_received:")));
    }
    found
}

#[test]
fn an_idle_pair_stays_connected_on_one_exchange_every_two_seconds() {
    let w = Work::new();
    let (sk, pk) = w.keypair("beat-1");
    let f = w.build_fixture();
    w.sign(&f.top, &sk);
    let a = seeder(&w, "a", &[&f.top], &pk);
    let c = peer_client(&w, "c", "client", &pk, &[&a.p2p_addr()], &[]);
    c.wait_log("have-summary applied");
    a.wait_log("have-summary applied");
    let port = a.p2p_addr().split('/').nth(4).unwrap().to_owned();
    let (a_mark, c_mark) = (a.mark(), c.mark());

    let before = sockets(&port);
    assert_eq!(before.len(), 1, "one connection between A and C: {before:?}");
    let t0 = Instant::now();
    // A window to measure a rate over, not a wait for an event.
    std::thread::sleep(Duration::from_secs(12));
    let after = sockets(&port);
    let took = t0.elapsed().as_secs_f64();

    assert_eq!(after.len(), 1, "still one connection: {after:?}");
    assert_eq!(after[0].0, before[0].0, "the same connection (none was closed and redialled)");
    for (name, d, mark) in [("A", &a, a_mark), ("C", &c, c_mark)] {
        let later: Vec<String> = d.log().lines().skip(mark).map(str::to_owned).collect();
        assert!(!later.iter().any(|l| l.contains("stopped answering")), "{name} judged a live peer silent: {later:#?}");
    }
    let rate = (after[0].1 - before[0].1) as f64 / took;
    eprintln!("idle pair: {rate:.0} bytes/s of payload on their connection");
    assert!(rate > 10.0, "no heartbeat at all crossed the connection ({rate:.0} B/s)");
    assert!(rate < 80.0, "{rate:.0} B/s on an idle connection: more than one exchange every 2 s");
}
