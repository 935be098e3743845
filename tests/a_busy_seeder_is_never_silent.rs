//! A seeder with every answer slot taken tells an asker so at once ("busy, ask again shortly"),
//! and the asker's wait for a NAR's first bytes goes on while it hears that: before, the request
//! waited in silence for a slot, and after 3 s without a word the asker answered nix 404 — at
//! N = 51 in a flash crowd on one seeder, 10–13 of 50 nodes failed their build so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::rogue::{Plan, Rogue};
use common::*;
use peerix::p2p::blocks::{FetchError, IfBusy};

#[tokio::test(flavor = "multi_thread")]
async fn a_seeder_with_every_slot_taken_defers_and_the_nar_still_arrives() {
    let s = seeder_and_client("defer-1");
    let SeederAndClient { a, a_peer, c, pk, f, w, .. } = &s;
    let (a_peer, chunks) = (*a_peer, &s.blocks);
    let asked = &chunks[..chunks.len().min(64)];

    // Eight peers ask for blocks 8 times each and never read: A's 64 answer slots are all taken
    // until each answer's first block write gives up (10 s).
    let mut held = Vec::new();
    let mut crowd = Vec::new();
    for _ in 0..8 {
        let r = Rogue::start(Plan { no_summary: true, ..Default::default() }, Some(&a.p2p_addr())).await;
        held.extend(r.hold_block_answers(a_peer, asked, 8).await);
        crowd.push(r);
    }
    // An asker that allows it is told at once that A is full (polled: the 64 requests above
    // take their slots as A reads them).
    let probe = Rogue::start(Plan { no_summary: true, ..Default::default() }, Some(&a.p2p_addr())).await;
    let defer = IfBusy { redirect: false, defer: true };
    // A chunk: DAG nodes never wait for a slot.
    let chunk = *chunks.iter().find(|c| c.codec() == 0x55).unwrap();
    let mut full = false;
    for _ in 0..100 {
        match probe.fetch_blocks_if_busy(a_peer, &[chunk], false, defer).await {
            Err(FetchError::Deferred) => {
                full = true;
                break;
            }
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(full, "A never said it was full\n{}", a.log());

    // C, with A its only source, asks while every slot is held: A defers each request, C asks
    // again every 250 ms and keeps waiting for the first bytes, and the NAR arrives byte for byte
    // once the held answers end — where a silent wait made it answer nix 404 after 3 s.
    let out = w.substitute("client", &f.top, &c.url, pk);
    assert!(out.status.success(), "{}\n{}\n{}", String::from_utf8_lossy(&out.stderr), c.log(), a.log());
    w.assert_same_nars("client", [&f.top, &f.dep]);
    a.wait_log("answer not written within 10s");
    assert!(!c.log().contains("answering 404"), "{}", c.log());
    let c_peer = c.peer_id();
    let deferred = a.log().lines().filter(|l| l.contains("ask again shortly") && l.contains(&c_peer)).count();
    assert!(deferred >= 2, "C was deferred {deferred} times: it never met a full A\n{}", a.log());
    drop(held);
}
