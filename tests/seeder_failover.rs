//! A 200 MB NAR on its way from two seeders to C's nix: one seeder is killed part-way and the same
//! HTTP response completes from the other. With every seeder killed, C aborts the response — nix
//! sees a failed transfer, not a complete wrong or "incomplete" NAR — and nix falls through to its
//! next substituter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;

use common::*;
use serde_json::Value;

/// C's running (or finished) transfer of `path` with at least `bytes` done and bytes from `peer`.
fn transfer_past(s: &Value, path: &str, bytes: u64, peer: &str) -> bool {
    s["substitution"]["transfers"].as_array().unwrap().iter().any(|t| {
        t["store_path"] == path
            && t["outcome"] == "running"
            && t["bytes_done"].as_u64().unwrap() >= bytes
            && t["sources"].as_array().unwrap().iter().any(|src| src["source"] == peer)
    })
}

fn realise(w: &Work, store: &str, path: &str, substituters: &str, key: &str) -> std::process::Child {
    w.nix("nix-store")
        .arg("--store")
        .arg(w.path(store))
        .args(["--realise", path, "--option", "substituters", substituters, "--option", "trusted-public-keys", key])
        .args(["--option", "download-attempts", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_seeder_is_replaced_mid_response_and_without_seeders_nix_falls_through() {
    let w = Work::new();
    let (sk, pk) = w.keypair("failover-1");
    let f = w.build_big_fixture(200_000_000);
    w.sign(&f.top, &sk);
    let up = Upstream::start(&w.binary_cache("upstream", &[&f.top]));
    let (mut a, mut b) = (seeder(&w, "a", &[&f.top], &pk), seeder(&w, "b", &[&f.top], &pk));
    let c = peer_client(&w, "c", "client", &pk, &[&a.p2p_addr(), &b.p2p_addr()], &[]);
    c.wait_log_count("have-summary applied", 2);
    let (id_a, id_b) = (a.peer_id(), b.peer_id());

    // One seeder dies part-way: the response goes on from the other.
    let nix = realise(&w, "client", &f.top, &c.url, &pk);
    c.wait_status("A serving the transfer, 40 MB in", |s| transfer_past(s, &f.top, 40_000_000, &id_a)).await;
    a.kill();
    let out = nix.wait_with_output().unwrap();
    assert!(out.status.success(), "nix failed: {}\n{}", String::from_utf8_lossy(&out.stderr), c.log());
    w.verify("client", &f.top, &pk);
    let s = c.status().await;
    let done = s["substitution"]["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["store_path"] == f.top.as_str() && t["outcome"] == "done")
        .unwrap_or_else(|| panic!("no finished transfer: {s:#}"))
        .clone();
    let bytes = |id: &str| {
        done["sources"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["source"] == id)
            .map(|x| x["bytes"].as_u64().unwrap())
            .sum::<u64>()
    };
    // A served part of the first 40 MB; B everything A did not deliver before it died.
    assert!(bytes(&id_a) > 0 && bytes(&id_b) >= 150_000_000, "A and B both carried the NAR: {done:#}");
    assert_eq!(done["bytes_done"].as_u64().unwrap(), done["bytes_total"].as_u64().unwrap());

    // The last seeder dies part-way: D (a fresh client machine knowing only B) aborts the body;
    // nix takes the path from its next substituter. (C holds the path itself by now.)
    let d = peer_client(&w, "d", "client2", &pk, &[&b.p2p_addr()], &[]);
    d.wait_log("have-summary applied");
    let nix = realise(&w, "client2", &f.top, &format!("{} {}", d.url, up.url), &pk);
    d.wait_status("B serving D's transfer, 40 MB in", |s| transfer_past(s, &f.top, 40_000_000, &id_b)).await;
    b.kill();
    let out = nix.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nix did not fall through to upstream: {err}\n{}", d.log());
    assert!(!err.contains("hash mismatch") && !err.contains("is incomplete") && !err.contains("bad archive"), "{err}");
    assert!(err.contains(&d.url), "nix reports the failed transfer from D: {err}");
    w.verify("client2", &f.top, &pk);
    let s = d.status().await;
    assert!(
        s["substitution"]["transfers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["store_path"] == f.top.as_str() && t["outcome"].as_str().unwrap().starts_with("failed")),
        "D recorded the aborted transfer: {s:#}"
    );
}
