//! mDNS in `lan` mode: two daemons in two network namespaces joined by a veth pair find each other
//! with no bootstrap peer, exchange a NAR by bitswap, and stay connected: a connection that drops
//! is dialed again (mDNS itself would only re-query after 5 min). The test creates and deletes the
//! namespaces itself (root needed, as in CI); multicast stays inside them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;

/// Two namespaces and a veth pair between them; deleted (with the pair) when dropped.
struct Lan {
    a: String,
    b: String,
    ip_a: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Lan {
    fn new() -> Self {
        let id = std::process::id() % 10_000;
        let (a, b) = (format!("peerix-{id}-a"), format!("peerix-{id}-b"));
        let (va, vb) = (format!("pxa{id}"), format!("pxb{id}"));
        let net = format!("10.{}.{}", 200 + id % 50, id % 250);
        let lan = Self { a: a.clone(), b: b.clone(), ip_a: format!("{net}.1") };
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        ip(&["link", "add", &va, "netns", &a, "type", "veth", "peer", "name", &vb, "netns", &b]);
        for (ns, dev, addr) in [(&a, &va, format!("{net}.1/24")), (&b, &vb, format!("{net}.2/24"))] {
            ip(&["-n", ns, "addr", "add", &addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up", "multicast", "on"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev]);
        }
        lan
    }

    fn exec(&self, ns: &str) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), ns.to_owned()]
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

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
    let found = b.wait_log("mDNS found a peer");
    let a_id = a.p2p_addr().rsplit('/').next().unwrap().to_owned();
    assert!(found.contains(&a_id), "{found}");
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
    let killed = Command::new("ip").args(["netns", "exec", &lan.b, "ss", "-K", "dst", &lan.ip_a]).output().unwrap();
    assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));
    b.wait_log_count("peer connected", 2);
    drop(b);
    drop(a);
}
