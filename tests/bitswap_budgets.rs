//! What a bitswap peer can make us spend is bounded: a want-have is answered from the index (no
//! block read or hashed for it, however many arrive), and a peer that keeps opening streams beyond
//! its share is refused and then disconnected, while the daemon serves on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cid::Cid;
use common::rogue::{Plan, Rogue};
use common::*;
use peerix::p2p::bitswap::message::{WANT_BLOCK, WANT_HAVE};

/// A daemon serving a published 3 MB tree (≈ 45 chunks), and the CIDs of its chunks.
async fn serving(w: &Work) -> (Daemon, Vec<(Cid, usize)>) {
    let src = w.path("tree");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("data.bin"), pseudo_random(3_000_000, 11)).unwrap();
    let store = w.path("store");
    let path = run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(&src));
    let state = w.path("state");
    run(&mut peerix_cmd("publish", &state, &["--store-root", store.to_str().unwrap(), "--serve-private"]));
    let root = indexed_root(&state, &path).unwrap();
    let d = Daemon::start(
        &state,
        &["--store-root", store.to_str().unwrap(), "--serve-private", "--p2p-listen", "/ip4/127.0.0.1/tcp/0"],
    );
    let car = get(&format!("{}/ipfs/{root}?format=car", d.url)).await;
    let (_, blocks) = parse_car(&car.body);
    let chunks: Vec<(Cid, usize)> =
        blocks.iter().filter(|(c, b)| c.codec() == 0x55 && b.len() > 1024).map(|(c, b)| (*c, b.len())).collect();
    assert!(chunks.len() > 20, "{} chunks", chunks.len());
    (d, chunks)
}

#[tokio::test(flavor = "multi_thread")]
async fn want_haves_are_answered_from_the_index_without_reading_blocks() {
    let w = Work::new();
    let (d, chunks) = serving(&w).await;
    let rogue = Rogue::start(Plan::default(), Some(&d.p2p_addr())).await;
    let peer: libp2p::PeerId = d.peer_id().parse().unwrap();
    let cids: Vec<Cid> = chunks.iter().map(|c| c.0).collect();
    let read = |s: &serde_json::Value| s["blockstore"]["local_chunk_bytes_read"].as_u64().unwrap();
    let before = read(&d.status().await);

    // 20 messages wanting-have every chunk: 20 × ~45 HAVEs, and not one byte read.
    const ROUNDS: usize = 20;
    rogue.send_wants_times(peer, &cids, WANT_HAVE, ROUNDS).await.unwrap();
    let haves = poll_until("every HAVE", || {
        let p = rogue.presences.lock().unwrap().clone();
        (p.len() >= ROUNDS * cids.len()).then_some(p)
    })
    .await;
    assert!(haves.iter().all(|(c, have)| *have && cids.contains(c)), "{haves:?}");
    let s = d.status().await;
    assert_eq!(read(&s), before, "HAVEs read blocks: {s:#}");
    assert_eq!(s["p2p"]["bitswap"]["blocks_sent"], 0);

    // A want-block reads exactly the block it sends.
    rogue.send_wants(peer, &cids[..1], WANT_BLOCK).await.unwrap();
    let s = d.wait_status("one block sent", |s| s["p2p"]["bitswap"]["blocks_sent"] == 1).await;
    assert_eq!(read(&s), before + chunks[0].1 as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_opening_streams_without_end_is_refused_then_dropped() {
    let w = Work::new();
    let (d, chunks) = serving(&w).await;
    let rogue = Rogue::start(Plan::default(), Some(&d.p2p_addr())).await;
    let peer: libp2p::PeerId = d.peer_id().parse().unwrap();
    d.wait_log(&format!("peer_id={}", rogue.peer_id));

    let mark = d.mark();
    // 32 streams are its share; 64 refusals more and it is flooding.
    let held = rogue.hold_bitswap_streams(peer, 200).await;
    d.wait_log_in_order(mark, &["beyond its share; dropping it", "peer disconnected"]);
    let s = d.status().await;
    assert!(s["p2p"]["bitswap"]["streams_refused"].as_u64().unwrap() >= 64, "{s:#}");
    assert!(s["p2p"]["bitswap"]["peers_dropped"].as_u64().unwrap() >= 1);
    assert!(held.len() < 200, "all 200 streams were taken");
    drop(held);

    // An honest peer is served as before.
    let honest = Rogue::start(Plan::default(), Some(&d.p2p_addr())).await;
    honest.send_wants(peer, &[chunks[0].0], WANT_BLOCK).await.unwrap();
    poll_until("the block", || honest.presences.lock().unwrap().contains(&(chunks[0].0, true)).then_some(())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_over_its_want_rate_is_paced_not_dropped() {
    let w = Work::new();
    let (d, chunks) = serving(&w).await;
    let rogue = Rogue::start(Plan::default(), Some(&d.p2p_addr())).await;
    let peer: libp2p::PeerId = d.peer_id().parse().unwrap();
    // 24 messages of 1 024 want-haves: 24 576 wants, over the 16 384 a peer may spend at once.
    let cids: Vec<Cid> = chunks.iter().map(|c| c.0).cycle().take(1024).collect();
    const ROUNDS: usize = 24;
    rogue.send_wants_times(peer, &cids, WANT_HAVE, ROUNDS).await.unwrap();
    poll_until("every HAVE", || (rogue.presences.lock().unwrap().len() >= ROUNDS * cids.len()).then_some(())).await;
    let s = d.status().await;
    let paced = s["p2p"]["bitswap"]["wants_paced"].as_u64().unwrap();
    assert!(paced >= 1024, "no want waited: {s:#}");
    assert_eq!(s["p2p"]["bitswap"]["peers_dropped"], 0, "pacing is not a disconnect");
}
