//! mDNS in `lan` mode: two daemons in two network namespaces joined by a veth pair find each other
//! with no bootstrap peer, exchange a NAR by bitswap, and stay connected: a connection that drops
//! is dialed again (mDNS itself would only re-query after 5 min). The test creates and deletes the
//! namespaces itself (root needed, as in CI); multicast stays inside them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::netns::Lan;
use common::*;

#[test]
fn daemons_in_two_namespaces_find_each_other_by_mdns_and_exchange_a_nar() {
    let w = Work::new();
    let src = w.path("tree");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("data"), (0..1_200_000u32).map(|i| (i.wrapping_mul(40503) >> 7) as u8).collect::<Vec<_>>())
        .unwrap();
    let store = w.path("store");
    let path = run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(&src));
    let state_a = w.path("state-a");
    run(&mut peerix_cmd("publish", &state_a, &["--store-root", store.to_str().unwrap(), "--serve-private"]));
    let root = indexed_root(&state_a, &path).unwrap();

    let lan = Lan::new();
    let exec_a = lan.exec(&lan.a);
    let exec_b = lan.exec(&lan.b);
    let listen_a = format!("/ip4/{}/tcp/0", lan.ip_a);
    let a = Daemon::start_in(
        &exec_a.iter().map(String::as_str).collect::<Vec<_>>(),
        &state_a,
        &[
            "--store-root",
            store.to_str().unwrap(),
            "--serve-private",
            "--mode",
            "lan",
            "--mdns",
            "--p2p-listen",
            &listen_a,
        ],
    );
    let empty = w.path("store-b");
    let b = Daemon::start_in(
        &exec_b.iter().map(String::as_str).collect::<Vec<_>>(),
        &w.path("state-b"),
        &["--store-root", empty.to_str().unwrap(), "--mode", "lan", "--mdns", "--p2p-listen", "/ip4/0.0.0.0/tcp/0"],
    );
    let found = mdns_meeting(&a, &b);
    let a_id = a.p2p_addr().rsplit('/').next().unwrap().to_owned();
    let b_id = b.p2p_addr().rsplit('/').next().unwrap().to_owned();
    assert!(found.contains(&a_id) || found.contains(&b_id), "{found}");
    b.wait_log("peer connected");

    // B's HTTP server is on B's loopback: ask it from inside B's namespace.
    let out = w.path("via-mdns.nar");
    let f = Command::new("ip")
        .args(["netns", "exec", &lan.b, env!("CARGO_BIN_EXE_peerix"), "fetch", &root, "--url", &b.url, "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(f.status.success(), "{}\n{}", String::from_utf8_lossy(&f.stderr), b.log());
    assert!(std::fs::read(&out).unwrap() == nix_dump(&store.join(&path[1..])));

    // Kill B's TCP connection to A (from inside B's namespace): the peers must reconnect by
    // themselves, long before the next mDNS query.
    let before_kill = b.mark();
    let killed = Command::new("ip").args(["netns", "exec", &lan.b, "ss", "-K", "dst", &lan.ip_a]).output().unwrap();
    assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));
    // ss lists the sockets it killed: at least one to A, or the re-dial below proves nothing.
    let listed = String::from_utf8_lossy(&killed.stdout);
    assert!(listed.lines().any(|l| l.contains(&lan.ip_a)), "ss -K killed no connection to A:\n{listed}");
    // B saw the connection go, then connected again.
    b.wait_log_in_order(before_kill, &["peer disconnected", "peer connected"]);
    drop(b);
    drop(a);
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Every dial in a daemon's log: to an address in the test LAN, to no bootstrap peer, and (for dials
/// by peer id) to no peer but `other`.
fn assert_dials_stay_in(log: &str, prefix: &str, other: &str) {
    assert!(log.contains("p2p node started mode=Lan bootstrap_peers=0"), "{log}");
    for line in log.lines().filter(|l| l.contains("dialing")) {
        assert!(!line.contains("bootstrap"), "lan mode dialled a bootstrap peer: {line}");
        let addr = line.split("addr=").nth(1).unwrap_or_else(|| panic!("dial without an address: {line}"));
        assert!(addr.starts_with(&format!("/ip4/{prefix}")), "dial outside the LAN: {line}");
    }
    for line in log.lines().filter(|l| l.contains("dial started")) {
        assert!(line.contains(other), "dial to a peer that is not the LAN's other node: {line}");
    }
}

/// `lan` mode end to end: B's nix, inside B's namespace, substitutes a signed closure that only A
/// holds, found by mDNS alone; neither daemon dials anything outside the two namespaces.
#[test]
fn lan_mode_substitutes_over_mdns_and_dials_only_the_lan() {
    let w = Work::new();
    let (sk, pk) = w.keypair("lan-1");
    let f = w.build_big_fixture(3_000_000);
    w.sign(&f.top, &sk);
    let store_a = w.chroot_store("a", &[&f.top]);
    let state_a = w.path("state-a");
    run(&mut peerix_cmd(
        "publish",
        &state_a,
        &["--store-root", store_a.to_str().unwrap(), "--trusted-public-key", &pk],
    ));

    let lan = Lan::new();
    let (exec_a, exec_b) = (lan.exec(&lan.a), lan.exec(&lan.b));
    let args = |store: &std::path::Path, listen: String| {
        vec![
            "--store-root".to_owned(),
            store.display().to_string(),
            "--trusted-public-key".into(),
            pk.clone(),
            "--mode".into(),
            "lan".into(),
            "--mdns".into(),
            "--p2p-listen".into(),
            listen,
        ]
    };
    let (args_a, client) = (args(&store_a, format!("/ip4/{}/tcp/0", lan.ip_a)), w.path("client"));
    let args_b = args(&client, format!("/ip4/{}/tcp/0", lan.ip_b));
    let a = Daemon::start_in(&strs(&exec_a), &state_a, &strs(&args_a));
    let b = Daemon::start_in(&strs(&exec_b), &w.path("state-b"), &strs(&args_b));
    mdns_meeting(&a, &b);
    b.wait_log("have-summary applied");

    // B's nix talks to B's daemon on B's loopback, inside B's namespace.
    let out = Command::new("ip")
        .args(["netns", "exec", &lan.b])
        .arg("env")
        .args(["-u", "NIX_REMOTE", &format!("NIX_CONFIG={NIX_CONFIG}")])
        .arg(format!("XDG_CACHE_HOME={}", w.xdg().display()))
        .args(["nix-store", "--store"])
        .arg(&client)
        .args(["--realise", &f.top, "--option", "substituters", &b.url, "--option", "trusted-public-keys", &pk])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), b.log());
    w.verify("client", &f.top, &pk);
    assert!(b.log().contains("NAR transfer done"), "{}", b.log());

    let (id_a, id_b) = (a.peer_id(), b.peer_id());
    assert_dials_stay_in(&a.log(), &lan.prefix, &id_b);
    assert_dials_stay_in(&b.log(), &lan.prefix, &id_a);
}

/// The "mDNS found a peer" line of whichever daemon heard the other first and dialled it: the other
/// is already connected when its own discovery arrives, and does not log it.
fn mdns_meeting(a: &Daemon, b: &Daemon) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        for d in [a, b] {
            if let Some(line) = d.wait_log_for("mDNS found a peer", Duration::from_millis(100)) {
                return line;
            }
        }
    }
    panic!("neither daemon's mDNS found the other within 60 s:\n{}\n{}", a.log(), b.log());
}
