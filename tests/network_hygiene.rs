//! Network hygiene: `--mode lan` never dials a bootstrap peer (even with none configured, when
//! `ipfs` mode would dial the public ones), and no benchmark script starts a daemon that can reach
//! the public IPFS network. The daemons run in a namespace with nothing but loopback, so even a
//! regression cannot send a packet anywhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::netns::Isolated;
use common::*;

fn isolated_daemon(ns: &Isolated, state: &std::path::Path, mode: &str) -> Daemon {
    let exec = ns.exec();
    let prefix: Vec<&str> = exec.iter().map(String::as_str).collect();
    Daemon::start_in(&prefix, state, &["--mode", mode, "--p2p-listen", "/ip4/127.0.0.1/tcp/0", KEEP_DEFAULT_BOOTSTRAP])
}

#[test]
fn lan_mode_dials_no_bootstrap_peer_where_ipfs_mode_would() {
    let w = Work::new();
    let ns = Isolated::new();
    let lan = isolated_daemon(&ns, &w.path("lan"), "lan");
    let started = lan.wait_log("p2p node started");
    assert!(started.contains("bootstrap_peers=0"), "{started}");
    assert!(!lan.log().contains("dialing bootstrap peer"), "{}", lan.log());

    // The same defaults in `ipfs` mode do dial the public list: the check above can fail.
    let ipfs = isolated_daemon(&ns, &w.path("ipfs"), "ipfs");
    let started = ipfs.wait_log("p2p node started");
    assert!(started.contains(&format!("bootstrap_peers={}", peerix::p2p::PUBLIC_BOOTSTRAP.len())), "{started}");
    assert!(ipfs.log().contains("dialing bootstrap peer"), "{}", ipfs.log());
}

/// Joins a script's backslash-continued lines into whole commands.
fn commands(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in script.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(line);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    out
}

#[test]
fn bench_scripts_keep_every_daemon_off_the_internet() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches");
    let mut daemons = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "sh") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for cmd in commands(&text) {
            if !cmd.split_whitespace().any(|word| word == "serve") || !cmd.to_lowercase().contains("peerix") {
                continue;
            }
            daemons += 1;
            let name = path.file_name().unwrap().to_string_lossy();
            assert!(
                cmd.contains("--no-p2p") || cmd.contains("--bootstrap none"),
                "{name}: a daemon that may dial the public IPFS bootstrap peers: {cmd}"
            );
            assert!(cmd.contains("--upstream"), "{name}: a daemon that asks cache.nixos.org: {cmd}");
            assert!(
                !cmd.contains("--mdns")
                    && (cmd.contains("--no-mdns") || cmd.contains("--no-p2p") || cmd.contains("netns")),
                "{name}: a daemon that multicasts on the machine's interfaces: {cmd}"
            );
        }
    }
    assert!(daemons >= 3, "found only {daemons} daemon commands in benches/: is the parser still right?");
}
