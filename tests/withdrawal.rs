//! A path that stops being shareable stops being announced: when it is garbage-collected on A, A's
//! have-summary drops it (C no longer asks A about it, at no network cost) and A's DHT provider
//! records for it go, while the rest of A's closure stays announced.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// A's own provider records for `key` in its state DB.
fn own_records(state_dir: &std::path::Path, peer: &str, key: &[u8]) -> i64 {
    let db = rusqlite::Connection::open(state_dir.join("peerix.sqlite")).unwrap();
    let me = peer.parse::<libp2p::PeerId>().unwrap().to_bytes();
    db.query_row("SELECT count(*) FROM kad_providers WHERE key = ?1 AND provider = ?2", (key, me), |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_garbage_collected_path_leaves_the_summary_and_the_dht() {
    let w = Work::new();
    let (sk, pk) = w.keypair("withdraw-1");
    let f = w.build_big_fixture(1_000_000);
    w.sign(&f.top, &sk);
    let store_a = w.chroot_store("a", &[&f.top]);
    let state_a = w.path("state-a");
    let args = ["--store-root", store_a.to_str().unwrap(), "--trusted-public-key", &pk];
    run(&mut peerix_cmd("publish", &state_a, &args));
    let root: cid::Cid = indexed_root(&state_a, &f.top).unwrap().parse().unwrap();
    let dht = ["--mode", "ipfs", "--dht-server", "--p2p-listen", "/ip4/127.0.0.1/tcp/0"];
    let a = Daemon::start(&state_a, &[&args[..], &dht].concat());
    let a_id = a.peer_id();
    let c = Daemon::start(
        &w.path("state-c"),
        &[&["--trusted-public-key", &pk, "--peer", &a.p2p_addr()][..], &dht].concat(),
    );
    c.wait_log("have-summary applied");
    let keys = [root.hash().to_bytes(), peerix::p2p::store_path_key(hash_part(&f.top)).to_vec()];
    for key in &keys {
        poll_until("A's provider records for the path", || (own_records(&state_a, &a_id, key) > 0).then_some(())).await;
    }

    // The top path is deleted from A's store (its dependency stays).
    run(w.nix("nix-store").arg("--store").arg(&store_a).args(["--delete", &f.top]));
    c.wait_log_count("have-summary applied", 2);
    for key in &keys {
        poll_until("A's provider records withdrawn", || (own_records(&state_a, &a_id, key) == 0).then_some(())).await;
    }
    let before = c.status().await["substitution"]["counters"].clone();
    assert_eq!(get(&format!("{}/{}.narinfo", c.url, hash_part(&f.top))).await.status, 404);
    let after = c.status().await["substitution"]["counters"].clone();
    assert_eq!(
        after["misses_unasked"].as_u64().unwrap(),
        before["misses_unasked"].as_u64().unwrap() + 1,
        "C must not even ask A about a path A withdrew: {after}"
    );
    // The dependency is still A's to share.
    assert_eq!(get(&format!("{}/{}.narinfo", c.url, hash_part(&f.dep))).await.status, 200);
    assert!(own_records(&state_a, &a_id, &peerix::p2p::store_path_key(hash_part(&f.dep)).to_vec()) > 0);
}
