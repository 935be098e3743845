//! Peers that share no LAN find each other through the tracker alone — no mDNS, no `--peer`, no
//! DHT bootstrap — and nix on one substitutes a closure only the other holds, byte for byte; and a
//! tracker that hangs, answers garbage or streams without end costs a lookup no more than its
//! deadline, and the daemon's memory no more than an answer's cap.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::tracker::start_tracker;
use common::*;

/// A daemon in ipfs mode on loopback whose only way to other peers is `tracker`.
fn tracked(w: &Work, name: &str, store: &std::path::Path, pk: &str, tracker: &str, extra: &[&str]) -> Daemon {
    let args = ["--store-root", store.to_str().unwrap(), "--trusted-public-key", pk];
    let p2p = ["--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--tracker", tracker];
    Daemon::start(&w.path(&format!("state-{name}")), &[&args[..], &p2p, extra].concat())
}

/// A (`state-a`): the closure `f` published and served, found only through the tracker `url`;
/// returns once A announced it, with the line that says how many paths.
fn tracked_holder(w: &Work, f: &Fixture, pk: &str, url: &str) -> (Daemon, String) {
    let store_a = w.chroot_store("a", &[&f.top]);
    let args = ["--store-root", store_a.to_str().unwrap(), "--trusted-public-key", pk];
    run(&mut peerix_cmd("publish", &w.path("state-a"), &args));
    let a = tracked(w, "a", &store_a, pk, url, &[]);
    let announced = a.wait_log("announced to the tracker");
    (a, announced)
}

#[tokio::test(flavor = "multi_thread")]
async fn nix_substitutes_from_a_peer_found_through_the_tracker_alone() {
    let w = Work::new();
    let (sk, pk) = w.keypair("peerix-tracked-1");
    let f = w.build_fixture();
    w.sign(&f.top, &sk);
    let t = start_tracker(&w.path("tracker"), &[]);
    let (a, announced) = tracked_holder(&w, &f, &pk, &t.url);
    assert!(announced.contains("paths=2"), "{announced}");

    let c = tracked(&w, "c", &w.path("c-nothing"), &pk, &t.url, &[]);
    // C knows the tracker's node (its DHT bootstrap peer and relay), not A.
    let at_start = c.status().await["connected_peers"].clone();
    assert!(!at_start.as_array().unwrap().iter().any(|p| p == &a.peer_id()), "C must start without A: {at_start}");
    let out = w.substitute("c", &f.top, &c.url, &pk);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), c.log());
    w.verify("c", &f.top, &pk);
    w.assert_same_nars("c", [&f.top, &f.dep]);
    let from = c.wait_log("narinfo from peer");
    assert!(from.contains(&a.peer_id()), "{from}");
    let status = c.status().await;
    let a_seen = status["p2p"]["peers"].as_array().unwrap().iter().find(|p| p["peer_id"] == a.peer_id()).cloned();
    assert_eq!(a_seen.as_ref().map(|p| p["found"].clone()), Some("tracker".into()), "{a_seen:?}");
}

/// A tracker that accepts connections and never answers, and one that answers garbage: a miss is
/// still answered within the lookup deadline, and the daemon keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_or_lying_tracker_costs_a_lookup_its_deadline_at_most() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = Work::new();
    let (_, pk) = w.keypair("peerix-tracked-2");
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_url = format!("http://{}", hung.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hung.accept().await {
            held.push(s); // Never read, never answered.
        }
    });
    let liar = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let liar_url = format!("http://{}", liar.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = liar.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = "{\"providers\": [{\"peer_id\": \"<script>\", \"addrs\": [1, 2]}], \"x\": ";
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
            });
        }
    });
    // A tracker that answers every request with an endless body (it took the daemon to 2.3 GiB).
    let flood = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let flood_url = format!("http://{}", flood.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = flood.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[").await;
                let junk = vec![b'9'; 1 << 20];
                for _ in 0..4096 {
                    if s.write_all(&junk).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    for (name, url) in [("hung", hung_url), ("liar", liar_url), ("flood", flood_url)] {
        let d = tracked(&w, name, &w.path("nothing"), &pk, &url, &["--lookup-timeout", "300ms"]);
        for i in 0..3 {
            let t0 = Instant::now();
            let r = get(&format!("{}/{}.narinfo", d.url, common::tracker::hashes(3, i)[i as usize])).await;
            let took = t0.elapsed();
            assert_eq!(r.status, 404, "{name}");
            assert!(took < Duration::from_millis(1500), "{name}: a miss took {took:?}");
        }
        assert_eq!(get(&format!("{}/nix-cache-info", d.url)).await.status, 200);
        let rss = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
        let kb: u64 =
            rss.lines().find(|l| l.starts_with("VmHWM:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(kb < 256 << 10, "{name}: the daemon's peak RSS reached {kb} kB");
    }
}

/// A peer whose summary claims every path but never answers a narinfo question does not hide the
/// holder the tracker names: once the peers a summary matched are late, the tracker's holders are
/// asked. Before, the lookup ended there as a miss and nix failed with "don't know how to build"
/// (3 of 50 in a flash crowd at N = 51 met a late summary match this way).
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_peer_claiming_everything_does_not_hide_the_trackers_holder() {
    use common::rogue::{Plan, Rogue};
    let w = Work::new();
    let (sk, pk) = w.keypair("peerix-tracked-3");
    let f = w.build_fixture();
    w.sign(&f.top, &sk);
    let t = start_tracker(&w.path("tracker"), &[]);
    let (a, _) = tracked_holder(&w, &f, &pk, &t.url);

    let asked = std::sync::Arc::default();
    let plan = Plan { silent: true, asked: std::sync::Arc::clone(&asked), ..Default::default() };
    let silent = Rogue::start(plan, None).await;
    let c = tracked(&w, "c", &w.path("c-nothing"), &pk, &t.url, &["--peer", &silent.addr]);
    c.wait_log("have-summary applied");
    let out = w.substitute("c", &f.top, &c.url, &pk);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), c.log());
    w.assert_same_nars("c", [&f.top, &f.dep]);
    let from = c.wait_log("narinfo from peer");
    assert!(from.contains(&a.peer_id()), "{from}");
    let asked: Vec<(String, bool)> = asked.lock().unwrap().clone();
    assert!(asked.iter().any(|(h, _)| f.top.contains(h.as_str())), "C never asked the silent peer: {asked:?}");
}
