//! Peers that ask for blocks and stop reading cannot take a seeder from everyone else: one peer
//! gets at most 8 answers in progress (its other requests end their lanes), and an answer whose
//! asker takes no block for 10 s ends and frees its slot — before, a few peers that asked and never
//! read held all 64 answer slots for a minute, and every honest transfer from that seeder missed its
//! first-bytes deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::rogue::{Plan, Rogue};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn peers_that_ask_and_never_read_free_their_slots_and_honest_peers_are_served() {
    let s = seeder_and_client("stall-1");
    let SeederAndClient { a, a_peer, c, pk, f, w, .. } = &s;
    let (a_peer, asked) = (*a_peer, &s.blocks[..s.blocks.len().min(64)]);

    // One peer opens 32 streams (as many as a peer may hold) and asks on each: 8 answers begin,
    // the other 24 requests end their lanes.
    let greedy = Rogue::start(Plan { no_summary: true, ..Default::default() }, Some(&a.p2p_addr())).await;
    let mut held = greedy.hold_block_answers(a_peer, asked, 32).await;
    a.wait_log_count("peer has too many answers in progress; ending its lane", 24);

    // Seven more take the other 56 slots: every slot is held by a reader that never reads.
    let mut crowd = Vec::new();
    for _ in 0..7 {
        let r = Rogue::start(Plan { no_summary: true, ..Default::default() }, Some(&a.p2p_addr())).await;
        held.extend(r.hold_block_answers(a_peer, asked, 8).await);
        crowd.push(r);
    }
    // Each of the 64 answers ends after 10 s without a block taken, not after the minute an answer
    // may take in all.
    a.wait_log_count("answer not written within 10s", 64);

    // C then gets the closure, byte for byte, while the
    // stalled streams are still open on the rogues' side.
    let out = w.substitute("client", &f.top, &c.url, pk);
    assert!(out.status.success(), "{}\n{}\n{}", String::from_utf8_lossy(&out.stderr), c.log(), a.log());
    w.assert_same_nars("client", [&f.top, &f.dep]);
    drop(held);
}
