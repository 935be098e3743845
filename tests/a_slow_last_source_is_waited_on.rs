//! A source that is slow but still there is waited on when it is the last one a transfer has: a
//! seeder under a crowd queues a unit behind its other answers for longer than a unit may take
//! (8 s), and dropping it then left the transfer nothing to ask — the NAR failed after its first
//! bytes, though the seeder delivered moments later (a flash crowd of 50: 30 of its 47 404s). A
//! source that vanishes is still dropped: its connection closes (`holder_leaves.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use cid::Cid;
use common::rogue::{Plan, Rogue};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_connected_seeder_slow_for_one_unit_still_delivers_the_nar() {
    let w = Work::new();
    let (sk, pk) = w.keypair("slow-1");
    let f = w.build_big_fixture(3_000_000);
    w.sign(&f.top, &sk);
    let a = seeder(&w, "a", &[&f.top], &pk);
    let narinfo = get(&format!("{}/{}.narinfo", a.url, hash_part(&f.top))).await.text();
    drop(a);

    // The rogue serves A's blocks — nodes from A's index, chunks cut from the NAR — and answers the
    // request for the NAR's last chunk (the last 1 MiB unit: the first bytes are long sent) 10 s late.
    let state = w.path("state-a");
    let root: Cid = indexed_root(&state, &f.top).unwrap().parse().unwrap();
    let db = rusqlite::Connection::open(state.join("peerix.sqlite")).unwrap();
    let hash = hash_part(&f.top);
    let mut blocks: HashMap<Cid, Vec<u8>> = HashMap::new();
    let mut nodes = db.prepare("SELECT cid, data FROM local_nodes WHERE hash32 = ?1").unwrap();
    for row in nodes.query_map([hash], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))).unwrap() {
        let (cid, data) = row.unwrap();
        blocks.insert(Cid::try_from(cid).unwrap(), data);
    }
    let nar = nix_dump(std::path::Path::new(&f.top));
    let mut chunks =
        db.prepare("SELECT cid, nar_offset, length FROM local_chunks WHERE hash32 = ?1 ORDER BY nar_offset").unwrap();
    let mut last = None;
    for row in chunks
        .query_map([hash], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)? as usize, r.get::<_, i64>(2)? as usize))
        })
        .unwrap()
    {
        let (cid, at, len) = row.unwrap();
        let cid = Cid::try_from(cid).unwrap();
        blocks.insert(cid, nar[at..at + len].to_vec());
        last = Some(cid);
    }
    let plan = Plan {
        narinfo: Some((narinfo, root)),
        for_hash: Some(hash.to_owned()),
        blocks,
        slow_block: Some((last.unwrap(), Duration::from_secs(10))),
        ..Default::default()
    };
    let rogue = Rogue::start(plan, None).await;

    // C knows only the rogue; its store already has the dependency (the rogue serves the top only).
    w.chroot_store("client", &[&f.dep]);
    let c = peer_client(&w, "c", "client", &pk, &[&rogue.addr], &[]);
    c.wait_log("have-summary applied");
    let out = w.substitute("client", &f.top, &c.url, &pk);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), c.log());
    w.assert_same_nars("client", [&f.top]);
    c.wait_log("only source is slow but connected; waiting on it");
    assert!(!c.log().contains("source stalled; dropping it"), "{}", c.log());
}
