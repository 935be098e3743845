//! A flash crowd spreads over the peers that already have a unit: a seeder with a crowd's answers
//! in progress names the peers it sent the same blocks to moments ago, and the asker fetches from
//! them — which serve the blocks they verified in transit, before nix registered the path (here
//! never: B fetched the NARs over HTTP only, so nothing but its in-memory store holds them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::rogue::{Plan, Rogue};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_seeder_sends_the_crowd_to_peers_that_just_received_the_blocks() {
    let w = Work::new();
    let (sk, pk) = w.keypair("crowd-1");
    let f = w.build_big_fixture(3_000_000);
    w.sign(&f.top, &sk);
    let a = seeder(&w, "a", &[&f.top], &pk);
    let a_peer: libp2p::PeerId = a.peer_id().parse().unwrap();

    // B gets both NARs from A over HTTP: verified, streamed, never registered in B's store.
    let b = peer_client(&w, "b", "store-b", &pk, &[&a.p2p_addr()], &[]);
    b.wait_log("have-summary applied");
    for p in [&f.top, &f.dep] {
        let nar = get(&format!("{}/{}", b.url, nar_url_of_store(&b, p).await)).await;
        assert_eq!(nar.status, 200);
        assert!(nar.body == nix_dump(std::path::Path::new(p)), "{p}: B's NAR differs");
    }
    let held = b.status().await["received"]["held_bytes"].as_u64().unwrap();
    assert!(held >= 3_000_000, "B holds what it verified: {held}");

    // A crowd keeps 8 of A's answers in progress (`BUSY_ANSWERS`; one peer may hold 8): a peer
    // asking for the big NAR's chunks again and again and reading slowly.
    let chunks = indexed_blocks(&w.path("state-a"), &f.top);
    let crowd = Rogue::start(Plan { no_summary: true, ..Default::default() }, Some(&a.p2p_addr())).await;
    let trickle = crowd.trickle_block_answers(a_peer, &chunks[..chunks.len().min(64)], 8).await;

    // C knows A and B; only A says it holds the paths (B never indexed them). nix gets the
    // closure at once, byte for byte, and the bytes came from B.
    let c = peer_client(&w, "c", "client", &pk, &[&a.p2p_addr(), &b.p2p_addr()], &[]);
    c.wait_log_count("have-summary applied", 1);
    let out = w.substitute("client", &f.top, &c.url, &pk);
    assert!(out.status.success(), "{}\n{}\n{}", String::from_utf8_lossy(&out.stderr), c.log(), a.log());
    w.assert_same_nars("client", [&f.top, &f.dep]);
    let named = a.wait_log("busy; naming peers that have the blocks");
    assert!(named.contains(&b.peer_id()), "{named}");
    c.wait_log("source busy; asking the peers it named");
    let served = b.status().await["received"]["served_bytes"].as_u64().unwrap();
    assert!(served >= 3_000_000, "B served the big NAR from what it received: {served} bytes\n{}", c.log());
    drop(trickle);
}
