//! A closure costs one question: asked for a path's narinfo with `closure`, a seeder sends the
//! narinfos of the path's references it shares (never one it keeps private), and C answers nix's
//! questions for the rest of the closure from them — judged as any answer, no peer asked — so a
//! crowd realising a closure from one seeder asks it once per node, not once per path. Nix asking
//! many narinfos at once makes one closure question at a time (not one per narinfo), and a crowd
//! asking the seeder the same question at once costs it one closure walk.
//! (A lie inside such a closure is refused: `dishonest_peers.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};

use common::rogue::{Plan, Rogue};
use common::*;
use serde_json::Value;

fn closure_hashes(answer: &peerix::p2p::narinfo::Answer) -> BTreeSet<String> {
    answer.closure.iter().map(|(h, _)| h.as_str().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn nix_realises_a_closure_after_one_question_to_the_seeder() {
    let w = Work::new();
    let (sk, pk) = w.keypair("closure-1");
    let (top, all) = w.wide_closure(11, 20_000);
    w.sign(&top, &sk);
    // A second closure whose last dependency nobody signed: A keeps that one private.
    let (top2, all2) = w.wide_closure(3, 1_000);
    let private = all2.iter().find(|p| p.ends_with("wide-dep-2")).unwrap().clone();
    let signed: Vec<&str> = all2.iter().map(String::as_str).filter(|p| *p != private).collect();
    run(w.nix("nix").args(["store", "sign", "--key-file"]).arg(&sk).args(&signed));
    let a = seeder(&w, "a", &[&top, &top2], &pk);

    // On the wire: the answer carries the shared references, nearest first — and only with
    // `closure` (an older asker gets the answer it always got).
    let asker = Rogue::start(Plan::default(), Some(&a.p2p_addr())).await;
    let a_id: libp2p::PeerId = a.peer_id().parse().unwrap();
    let answer = asker.ask_narinfo_answer(a_id, hash_part(&top2), true).await.unwrap();
    let shared: BTreeSet<String> = signed.iter().filter(|p| **p != top2).map(|p| hash_part(p).to_owned()).collect();
    assert_eq!(closure_hashes(&answer), shared, "the private dependency is never named");
    for (hash, related) in &answer.closure {
        let info = peerix::nix::narinfo::NarInfo::parse(&related.narinfo).unwrap();
        assert_eq!(info.store_path.hash(), *hash);
    }
    let plain = asker.ask_narinfo_answer(a_id, hash_part(&top), false).await.unwrap();
    assert!(plain.closure.is_empty());

    // Through C: nix asks 12 narinfos; A answers one question.
    let c = peer_client(&w, "c", "c-store", &pk, &[&a.p2p_addr()], &[]);
    c.wait_log("have-summary applied");
    let out = w.substitute("client", &top, &c.url, &pk);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), c.log());
    w.assert_same_nars("client", &all);
    let x = parse_openmetrics(&get(&format!("{}/metrics", c.url)).await.body);
    let m = |name: &str| x.get(&format!("peerix_{name}{{}}")).copied().unwrap_or_else(|| panic!("no {name}: {x:?}"));
    assert_eq!(m("narinfo_peer_hits_total"), all.len() as f64, "{x:?}");
    assert_eq!(m("narinfo_closure_hits_total"), (all.len() - 1) as f64, "{x:?}");
    let status = a.status().await;
    let c_at_a: HashMap<String, &Value> = status["p2p"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["peer_id"].as_str().unwrap().to_owned(), p))
        .collect();
    let served = c_at_a[&c.peer_id()]["stats"]["narinfos_served"].as_u64().unwrap();
    assert_eq!(served, 1, "{:#}", c_at_a[&c.peer_id()]);
}

/// The seeder's log lines for questions about `hash`.
fn questions<'a>(log: &'a str, hash: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains("narinfo request") && l.contains(&format!("hash={hash}"))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn narinfos_asked_at_once_ask_for_one_closure_at_a_time() {
    // A seeder that answers one question at a time, 50 ms apart (and has none of the paths): the
    // 24 lookups below are all in flight together, as nix's are for a closure.
    let plan = Plan { busy: Some(std::time::Duration::from_millis(50)), ..Default::default() };
    let asked = plan.asked.clone();
    let seeder = Rogue::start(plan, None).await;
    let w = Work::new();
    let (_, pk) = w.keypair("closure-2");
    let c = peer_client(&w, "c", "c-store", &pk, &[&seeder.addr], &[]);
    c.wait_log("have-summary applied");

    // nix asks a closure's narinfos many at once; here 24 at the same moment. Only the lookup
    // holding the turn asks for a closure: 24 closure walks at a seeder for one nix would be what
    // a crowd multiplies.
    let hashes: Vec<String> = (0..24).map(|i| format!("{i:0>2}{}", "a".repeat(30))).collect();
    let urls: Vec<String> = hashes.iter().map(|h| format!("{}/{h}.narinfo", c.url)).collect();
    futures_util::future::join_all(urls.iter().map(|u| get(u))).await;
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.len(), hashes.len(), "one question per path: {asked:?}");
    let with_closure = asked.iter().filter(|(_, closure)| *closure).count();
    assert!((1..=3).contains(&with_closure), "{with_closure} of 24 questions asked for a closure: {asked:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crowd_asking_the_same_question_at_once_costs_the_seeder_one_lookup() {
    let w = Work::new();
    let (sk, pk) = w.keypair("closure-3");
    let (top, all) = w.wide_closure(20, 1_000);
    w.sign(&top, &sk);
    let a = seeder(&w, "a", &[&top], &pk);
    let a_id: libp2p::PeerId = a.peer_id().parse().unwrap();

    // Eight askers (a crowd's first step: the top path with its closure) at the same moment.
    let mut crowd = Vec::new();
    for _ in 0..8 {
        crowd.push(Rogue::start(Plan::default(), Some(&a.p2p_addr())).await);
    }
    let hash = hash_part(&top);
    let answers = futures_util::future::join_all(crowd.iter().map(|r| r.ask_narinfo_answer(a_id, hash, true))).await;
    for answer in &answers {
        assert_eq!(answer.as_ref().unwrap().closure.len(), all.len() - 1, "each gets the whole answer");
    }
    let log = a.log();
    let asked = questions(&log, hash);
    assert_eq!(asked.len(), 8, "{asked:#?}");
    let looked_up = asked.iter().filter(|l| l.contains("shared=false")).count();
    assert_eq!(looked_up, 1, "the closure was looked up once for eight askers: {asked:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nar_root_node_comes_with_its_narinfo_and_costs_no_round_trip() {
    let w = Work::new();
    let (sk, pk) = w.keypair("closure-4");
    let f = w.build_big_fixture(3_000_000);
    w.sign(&f.top, &sk);
    let a = seeder(&w, "a", &[&f.top], &pk);
    let root: cid::Cid = indexed_root(&w.path("state-a"), &f.top).unwrap().parse().unwrap();
    assert_eq!(root.codec(), peerix::ipld::DAG_PB, "3 MB is more than one chunk: a dag-pb root");

    // On the wire: the answer carries the root's node, and it is the root's block.
    let asker = Rogue::start(Plan::default(), Some(&a.p2p_addr())).await;
    let a_id: libp2p::PeerId = a.peer_id().parse().unwrap();
    let answer = asker.ask_narinfo_answer(a_id, hash_part(&f.top), true).await.unwrap();
    assert_eq!(answer.root, root);
    assert!(block_matches(&root, &answer.root_node.expect("the root node comes along")));

    // Through C: A sends C the NAR's chunks and nothing else — no DAG node asked for.
    let c = peer_client(&w, "c", "c-store", &pk, &[&a.p2p_addr()], &[]);
    c.wait_log("have-summary applied");
    let out = w.substitute("client", &f.top, &c.url, &pk);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), c.log());
    w.assert_same_nars("client", [&f.top, &f.dep]);
    let db = rusqlite::Connection::open(w.path("state-a").join("peerix.sqlite")).unwrap();
    let count = |h: &str| -> u64 {
        db.query_row("SELECT count(*) FROM local_chunks WHERE hash32 = ?1", [h], |r| r.get::<_, i64>(0)).unwrap() as u64
    };
    let chunks = count(hash_part(&f.top)) + count(hash_part(&f.dep));
    let status = a.status().await;
    let c_at_a = status["p2p"]["peers"].as_array().unwrap().iter().find(|p| p["peer_id"] == c.peer_id()).unwrap();
    assert_eq!(c_at_a["stats"]["blocks_sent"].as_u64().unwrap(), chunks, "{c_at_a:#}");
}
