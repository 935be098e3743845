//! Peers behind NATs meet through the tracker's node: in network namespaces the test creates and
//! removes, A and B each sit behind their own MASQUERADE NAT and cannot reach each other; the
//! tracker in `pub` is the only machine both can reach. B's nix substitutes a path only A holds:
//! both hold a relay reservation, B reaches A through the relay, and DCUtR punches a direct
//! connection that carries the NAR. Behind a symmetric NAT (`MASQUERADE --random`) hole punching
//! fails and the path still arrives, through the relay.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::netns::NatLab;
use common::*;
use serde_json::Value;

/// `args` run inside `ns`, with its output.
fn inside(ns: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip").args(["netns", "exec", ns]).args(args).env_remove("NIX_REMOTE").output().unwrap()
}

fn status_in(ns: &str, d: &Daemon) -> Value {
    let out = inside(ns, &["curl", "-sf", &format!("{}/api/status", d.url)]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// A daemon in `ns` on the NAT lab: ipfs mode, p2p on every address of its host, the tracker as its
/// only way to anyone.
fn daemon_in(lab_ns: &str, w: &Work, name: &str, store: &std::path::Path, pk: &str, tracker: &str) -> Daemon {
    let exec = ["ip", "netns", "exec", lab_ns];
    let args = [
        "--store-root",
        store.to_str().unwrap(),
        "--trusted-public-key",
        pk,
        "--p2p-listen",
        "/ip4/0.0.0.0/tcp/4001",
        "--p2p-listen",
        "/ip4/0.0.0.0/udp/4001/quic-v1",
        "--tracker",
        tracker,
        // Finding A through the tracker, connecting through the relay and punching a hole take a
        // few round trips more than a LAN lookup.
        "--lookup-timeout",
        "5s",
    ];
    Daemon::start_in(&exec, &w.path(&format!("state-{name}")), &args)
}

/// Runs the lab once; returns how long B's `nix-store --realise` took and how long B took from its
/// start to the hole punch's outcome. `blob`: bytes in the path (a small closure without).
async fn substitute_through_nat(symmetric_b: bool, blob: Option<usize>) -> (std::time::Duration, std::time::Duration) {
    let lab = NatLab::new(symmetric_b);
    let w = Work::new();
    let (sk, pk) = w.keypair("peerix-nat-1");
    let f = match blob {
        Some(n) => w.build_big_fixture(n),
        None => w.build_fixture(),
    };
    w.sign(&f.top, &sk);

    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.public, env!("CARGO_BIN_EXE_peerix"), "tracker"]);
    cmd.args(["--listen", &format!("{}:12305", lab.public_ip), "--state-dir"]).arg(w.path("tracker"));
    let node = format!("/ip4/{}/tcp/4001", lab.public_ip);
    cmd.args(["--p2p-listen", &node, "--external-address", &node, "--autonat-private"]);
    cmd.env("RUST_LOG", "info,peerix::tracker=debug");
    let tracker = Daemon::spawn(cmd).unwrap();
    let tracker_url = format!("http://{}:12305", lab.public_ip);

    let store_a = w.chroot_store("a", &[&f.top]);
    let args = ["--store-root", store_a.to_str().unwrap(), "--trusted-public-key", &pk];
    run(&mut peerix_cmd("publish", &w.path("state-a"), &args));
    let a = daemon_in(&lab.host_a, &w, "a", &store_a, &pk, &tracker_url);
    let b_started = std::time::Instant::now();
    let b = daemon_in(&lab.host_b, &w, "b", &w.path("b-nothing"), &pk, &tracker_url);
    for d in [&a, &b] {
        if d.wait_log_for("relay reservation accepted", std::time::Duration::from_secs(30)).is_none() {
            panic!("no reservation:\n{}\n--- tracker:\n{}", d.log(), tracker.log());
        }
    }

    // Neither host can reach the other directly: each NAT drops what nobody inside asked for.
    for (from, to) in [(&lab.host_b, &lab.nat_a_ip), (&lab.host_a, &lab.nat_b_ip)] {
        let probe = inside(from, &["timeout", "2", "bash", "-c", &format!("echo > /dev/tcp/{to}/4001")]);
        assert!(!probe.status.success(), "{to}:4001 is reachable from {from}");
    }
    // A announced its relayed address: the only one B can use (its LAN address is hidden from B).
    let providers = format!("http://{}:12305/v1/providers/{}", lab.public_ip, hash_part(&f.top));
    let seen = poll_until("A's relayed address at the tracker", || {
        let out = inside(&lab.host_b, &["curl", "-sf", &providers]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("p2p-circuit").then_some(text)
    })
    .await;
    assert!(!seen.contains("192.168."), "B was shown A's private address: {seen}");

    // B looks the path up (through the tracker, connecting to A through the relay). With cone NATs
    // the hole is punched right after, the relayed connection closes, and the NAR then travels
    // over the direct connection. Behind a symmetric NAT, everything stays on the relay.
    let narinfo = inside(&lab.host_b, &["curl", "-sf", &format!("{}/{}.narinfo", b.url, hash_part(&f.top))]);
    assert!(narinfo.status.success(), "{}", b.log());
    // (DCUtR is driven by A, the side the relayed connection reached; either may log the outcome.)
    let outcome = poll_until("a hole punching outcome", || {
        [&a, &b].iter().find_map(|d| d.log().lines().find(|l| l.contains("hole punch")).map(str::to_owned))
    })
    .await;
    let punch_after = b_started.elapsed();
    eprintln!("hole punching, {punch_after:?} after B started: {outcome}");
    assert_eq!(outcome.contains("failed"), symmetric_b, "{outcome}");
    if !symmetric_b {
        let closed = |d: &Daemon| d.wait_log_for("closed the relayed connection", std::time::Duration::from_secs(30));
        assert!(closed(&b).or_else(|| closed(&a)).is_some(), "the relayed connection stayed open");
    }

    // B's nix, inside host_b, substitutes the closure from B's daemon.
    let realise_started = std::time::Instant::now();
    let out = realise_in(&lab.host_b, &w, &f.top, &b.url, &pk);
    let realised_in = realise_started.elapsed();
    assert!(
        out.status.success(),
        "{}\n--- B:\n{}\n--- A:\n{}\n--- tracker:\n{}",
        String::from_utf8_lossy(&out.stderr),
        b.log(),
        a.log(),
        tracker.log()
    );
    w.assert_same_nars("c", [&f.top, &f.dep]);
    let status = status_in(&lab.host_b, &b);
    let peer_a = status["p2p"]["peers"].as_array().unwrap().iter().find(|p| p["peer_id"] == a.peer_id()).cloned();
    let nat = &status["p2p"]["node"]["nat"];
    eprintln!("B's view of A: {peer_a:?}\nB's NAT: {nat}");
    for (ns, d) in [(&lab.host_a, &a), (&lab.host_b, &b)] {
        let nat = status_in(ns, d)["p2p"]["node"]["nat"].clone();
        assert_eq!(nat["reservations"].as_array().map(Vec::len), Some(1), "{nat}");
    }
    assert!(tracker.log().contains("relaying a circuit"), "the first contact goes through the relay");
    assert_eq!(peer_a.unwrap()["relayed"], symmetric_b, "B's connection to A");
    (realised_in, punch_after)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_crosses_two_nats_over_a_punched_hole() {
    substitute_through_nat(false, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_symmetric_nat_the_path_comes_through_the_relay() {
    substitute_through_nat(true, None).await;
}

/// For `benches/nat.sh` (not a test: a benchmark): a 64 MiB path realised over a punched hole,
/// over the relay (symmetric NAT), and between the same two kinds of namespace on a plain veth LAN
/// with no NAT, as the baseline. Prints MB/s for each.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn nat_throughput() {
    const BLOB: usize = 64 << 20;
    let rounds: usize = std::env::var("NAT_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let mb = |d: std::time::Duration| BLOB as f64 / d.as_secs_f64() / 1e6;
    let (mut lan, mut punched, mut relayed, mut punch) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Rounds alternate the order, so a slow phase of the machine does not always hit one setup.
    for r in 0..rounds {
        let mut order = [0, 1, 2];
        order.rotate_left(r % 3);
        for which in order {
            match which {
                0 => lan.push(mb(lan_realise(BLOB).await)),
                1 => {
                    let (t, p) = substitute_through_nat(false, Some(BLOB)).await;
                    punched.push(mb(t));
                    punch.push(p.as_secs_f64());
                }
                _ => relayed.push(mb(substitute_through_nat(true, Some(BLOB)).await.0)),
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (lan, punched, relayed, punch) =
        (median(&mut lan), median(&mut punched), median(&mut relayed), median(&mut punch));
    println!("{:<34} {:>10} {:>8}   (median of {rounds} rounds)", "64 MiB path, nix-store --realise", "MB/s", "ratio");
    println!("{:<34} {:>10.1} {:>8.2}", "LAN, no NAT (baseline)", lan, 1.0);
    println!("{:<34} {:>10.1} {:>8.2}", "two NATs, hole punched", punched, punched / lan);
    println!("{:<34} {:>10.1} {:>8.2}", "symmetric NAT, through the relay", relayed, relayed / lan);
    println!("time from B's start to the direct connection: {punch:.2} s");
}

/// The baseline: A and B on one veth LAN, B given A with `--peer`.
async fn lan_realise(blob: usize) -> std::time::Duration {
    let lan = common::netns::Lan::new();
    let w = Work::new();
    let (sk, pk) = w.keypair("peerix-nat-lan");
    let f = w.build_big_fixture(blob);
    w.sign(&f.top, &sk);
    let store_a = w.chroot_store("a", &[&f.top]);
    let args = ["--store-root", store_a.to_str().unwrap(), "--trusted-public-key", &pk];
    run(&mut peerix_cmd("publish", &w.path("state-a"), &args));
    let listen_a = format!("/ip4/{}/tcp/4001", lan.ip_a);
    let exec = |ns: &str| ["ip".to_owned(), "netns".into(), "exec".into(), ns.to_owned()];
    let ea = exec(&lan.a);
    let a = Daemon::start_in(
        &ea.iter().map(String::as_str).collect::<Vec<_>>(),
        &w.path("state-a"),
        &[&args[..], &["--p2p-listen", &listen_a]].concat(),
    );
    let peer = format!("{listen_a}/p2p/{}", a.peer_id());
    let eb = exec(&lan.b);
    let listen_b = format!("/ip4/{}/tcp/4001", lan.ip_b);
    let b_args =
        ["--store-root", "/nonexistent-b", "--trusted-public-key", &pk, "--p2p-listen", &listen_b, "--peer", &peer];
    let b = Daemon::start_in(&eb.iter().map(String::as_str).collect::<Vec<_>>(), &w.path("state-b"), &b_args);
    b.wait_log("peer is a peerix node");
    let t = std::time::Instant::now();
    let out = realise_in(&lan.b, &w, &f.top, &b.url, &pk);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), b.log());
    t.elapsed()
}

/// nix, inside `ns`, realises `path` into the chroot store `c` from the binary cache at `url`.
fn realise_in(ns: &str, w: &Work, path: &str, url: &str, pk: &str) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns, "nix-store", "--store"])
        .arg(w.path("c"))
        .args(["--realise", path, "--option", "substituters", url, "--option", "trusted-public-keys", pk])
        .env("NIX_CONFIG", NIX_CONFIG)
        .env("XDG_CACHE_HOME", w.xdg())
        .env_remove("NIX_REMOTE")
        .output()
        .unwrap()
}
