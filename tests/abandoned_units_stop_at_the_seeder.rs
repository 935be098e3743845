//! A unit nobody waits for any more stops at the seeder: when the asker of a bulk block request
//! gives up on it (the other copy of a hedged unit won, a deadline passed), its lane is given up
//! at once, the stream ends, and the seeder's answer breaks off instead of being sent whole — a
//! busy seeder loses most such races. Lanes that drain abandoned answers (narinfos, DAG nodes)
//! keep their stream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::rogue::{Plan, Rogue};
use common::*;
use peerix::p2p::blocks::{self, IfBusy};
use peerix::p2p::lanes::Lanes;

/// Asks `peer` for `cids` on `lanes` and gives up once the first block of the answer arrived.
async fn ask_and_give_up(lanes: Lanes, peer: libp2p::PeerId, cids: &[cid::Cid]) {
    let first = Arc::new(tokio::sync::Notify::new());
    let told = first.clone();
    let lanes = lanes.on_frame(move |_| told.notify_one());
    let asked = cids.to_vec();
    let asking = tokio::spawn(async move { blocks::fetch(&lanes, peer, &asked, false, IfBusy::default()).await });
    tokio::time::timeout(Duration::from_secs(20), first.notified()).await.expect("no block came");
    asking.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_answer_nobody_waits_for_is_broken_off_at_the_seeder() {
    let w = Work::new();
    let store = w.path("store");
    let src = w.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // 24 MB of random bytes: ~96 chunks of ~256 KiB, so one request of 64 is ~16 MiB.
    std::fs::write(src.join("blob"), pseudo_random(24 << 20, 3)).unwrap();
    let path = run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(&src));
    let state = w.path("state");
    let args = ["--store-root", store.to_str().unwrap(), "--serve-private", "--p2p-listen", "/ip4/127.0.0.1/tcp/0"];
    let a = Daemon::start(&state, &[&args[..], &LOOPBACK_LAN].concat());
    a.wait_log("index scan finished");
    let peer: libp2p::PeerId = a.peer_id().parse().unwrap();
    let chunks: Vec<cid::Cid> =
        indexed_blocks(&state, &path).into_iter().filter(|c| c.codec() == 0x55).take(64).collect();
    assert!(chunks.len() >= 48, "{} chunks", chunks.len());

    // Draining lanes (the default) read the abandoned answer to its end and keep their stream
    // (4 MiB: well within the 2 s they wait for it).
    let rogue = Rogue::start(Plan { no_summary: true, ..Default::default() }, Some(&a.p2p_addr())).await;
    let draining = rogue.block_lanes();
    ask_and_give_up(draining.clone(), peer, &chunks[..16]).await;
    let again = blocks::fetch(&draining, peer, &chunks[..1], false, IfBusy::default()).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(draining.counters.streams_opened.load(Ordering::SeqCst), 1, "the lane stayed in step");
    assert_eq!(a.log().matches("block stream ended").count(), 0, "the seeder's answers all ended well");

    // Bulk lanes give up the lane at once: the seeder's answer breaks off, and the next request
    // goes on a fresh lane.
    let bulk = rogue.block_lanes().drain_abandoned(Duration::ZERO);
    ask_and_give_up(bulk.clone(), peer, &chunks).await;
    let ended = a.wait_log("block stream ended");
    assert!(ended.contains(&rogue.peer_id.to_string()), "{ended}");
    let again = blocks::fetch(&bulk, peer, &chunks[..1], false, IfBusy::default()).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(bulk.counters.streams_opened.load(Ordering::SeqCst), 2, "asked again on a fresh lane");
}
