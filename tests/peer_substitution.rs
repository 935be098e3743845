//! Peer-to-peer substitution end to end, three daemons on loopback (`--peer`, no mDNS): A holds a
//! signed closure through a trusted signature, B the same closure unsigned but vouched for by a test
//! "upstream" cache; C's nix, with an empty store and only C as substituter, realises the closure
//! from both of them at once, `nix store verify` passes, and afterwards C serves it to a fourth
//! client from its own store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;

/// Bytes of A's and B's per-peer totals in C's newest transfer of `path`.
fn bytes_from(status: &Value, path: &str, peer: &str) -> u64 {
    status["substitution"]["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["store_path"] == path && t["outcome"] == "done")
        .flat_map(|t| t["sources"].as_array().unwrap().iter())
        .filter(|s| s["source"] == peer)
        .map(|s| s["bytes"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn nix_on_c_substitutes_a_closure_only_a_and_b_hold_from_both() {
    let w = Work::new();
    let (sk, pk) = w.keypair("p2p-1");
    // 24 MB: two dozen transfer units, enough for both seeders to serve some.
    let f = w.build_big_fixture(24_000_000);
    w.sign(&f.top, &sk);
    let up = Upstream::start(&w.binary_cache("upstream", &[&f.top]));

    // A: signed by a key it trusts.
    let store_a = w.chroot_store("a", &[&f.top]);
    let args_a = ["--store-root", store_a.to_str().unwrap(), "--trusted-public-key", &pk];
    run(&mut peerix_cmd("publish", &w.path("state-a"), &args_a));
    // B: no signature at all; shareable because upstream has the same NAR.
    let store_b = w.chroot_store("b", &[&f.top]);
    strip_sigs(&store_b);
    let (_, other_pk) = w.keypair("unrelated-1");
    let args_b = ["--store-root", store_b.to_str().unwrap(), "--trusted-public-key", &other_pk, "--upstream", &up.url];
    run(&mut peerix_cmd("publish", &w.path("state-b"), &args_b));

    let a = Daemon::start(&w.path("state-a"), &[&args_a[..], &LOOPBACK_LAN].concat());
    let b = Daemon::start(&w.path("state-b"), &[&args_b[..], &LOOPBACK_LAN].concat());
    let c = peer_client(&w, "c", "client", &pk, &[&a.p2p_addr(), &b.p2p_addr()], &[]);
    // C knows what A and B hold once both summaries are in.
    c.wait_log_count("have-summary applied", 2);

    // A range of a peer NAR is served from the blocks that cover it (nix resumes this way).
    let narinfo = get(&format!("{}/{}.narinfo", c.url, hash_part(&f.top))).await;
    assert_eq!(narinfo.status, 200, "{}", c.log());
    let url = narinfo.text().lines().find_map(|l| l.strip_prefix("URL: ")).unwrap().to_owned();
    let part =
        request(&common::client(), "GET", &format!("{}/{url}", c.url), &[("range", "bytes=1000000-2999999")]).await;
    assert_eq!(part.status, 206);
    let whole = nix_dump(std::path::Path::new(&f.top));
    assert!(part.body == whole[1_000_000..3_000_000], "range of a peer NAR differs from nix-store --dump");

    let out = w.substitute("client", &f.top, &c.url, &pk);
    assert!(out.status.success(), "substitution failed: {}\n{}", String::from_utf8_lossy(&out.stderr), c.log());
    w.verify("client", &f.top, &pk);
    assert!(nix_dump(&w.path("client").join(&f.top[1..])) == whole, "the substituted path is not byte-identical");

    let status = c.status().await;
    let (from_a, from_b) = (bytes_from(&status, &f.top, &a.peer_id()), bytes_from(&status, &f.top, &b.peer_id()));
    assert!(
        from_a > 0 && from_b > 0,
        "bytes from A {from_a} and from B {from_b}: both seeders should serve\n{status:#}"
    );
    assert!(from_a + from_b >= 24_000_000, "{from_a} + {from_b}");
    let peers = status["p2p"]["peers"].as_array().unwrap();
    for id in [a.peer_id(), b.peer_id()] {
        let p = peers.iter().find(|p| p["peer_id"] == id.as_str()).unwrap();
        assert_eq!(p["peerix"], true);
        assert_eq!(p["found"], "static");
        assert!(p["stats"]["bytes_received"].as_u64().unwrap() > 0, "{p}");
    }
    assert!(status["substitution"]["counters"]["peer_hits"].as_u64().unwrap() >= 2, "top and dep came from peers");
    // Requests ride long-lived streams (lanes): two dozen block requests to two peers share a few
    // lanes (four per peer at most, plus one for each lane a late unit's hedge broke), not a stream
    // (and a round trip to negotiate it) per request.
    let lanes = &status["p2p"]["lanes"];
    let (requests, opened) =
        (lanes["blocks"]["requests"].as_u64().unwrap(), lanes["blocks"]["streams_opened"].as_u64().unwrap());
    assert!(requests >= 20 && opened * 2 <= requests, "{requests} block requests on {opened} streams: {lanes:#}");
    assert!(lanes["narinfo"]["streams_opened"].as_u64().unwrap() <= 4, "{lanes:#}");
    // What A and B did for C counts as their work too.
    let (sa, sb) = (a.status().await, b.status().await);
    let served = |s: &Value, k: &str| s["requests"][k].as_u64().unwrap();
    assert!(served(&sa, "peer_narinfos_served") + served(&sb, "peer_narinfos_served") >= 2);
    assert!(served(&sa, "peer_bytes_served") + served(&sb, "peer_bytes_served") >= 24_000_000);
    // nix writes the path; the blocks that carried it are not kept a second time.
    assert_eq!(status["blockstore"]["blocks"], 0, "{:#}", status["blockstore"]);

    // C's indexer publishes what nix wrote; a fourth client then gets it from C's own store.
    let top_hash = hash_part(&f.top).to_owned();
    c.wait_status("the substituted path published", |s| s["index"]["published_paths"].as_u64().unwrap_or(0) >= 2).await;
    let entry: Value = serde_json::from_slice(&get(&format!("{}/api/paths/{top_hash}", c.url)).await.body).unwrap();
    assert_eq!(entry["index"]["status"], "published", "{entry}");
    // Indexed from the blocks it arrived in (not read and chunked again): the same DAG as A's.
    assert!(c.log().contains("indexed from the blocks it arrived in"), "{}", c.log());
    assert_eq!(entry["index"]["root_cid"].as_str(), indexed_root(&w.path("state-a"), &f.top).as_deref());
    let served_before = c.status().await["requests"]["nars_served"].as_u64().unwrap();
    drop(a);
    drop(b);
    let out = w.substitute("client4", &f.top, &c.url, &pk);
    assert!(out.status.success(), "fourth client: {}\n{}", String::from_utf8_lossy(&out.stderr), c.log());
    assert_eq!(c.status().await["requests"]["nars_served"].as_u64().unwrap(), served_before + 2, "both NARs local");
}
