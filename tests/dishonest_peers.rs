//! Dishonest peers: a peer (in this test process, speaking the peerix protocols) answers C's lookup
//! with a narinfo signed only by an untrusted key, a forged signature, a valid signature over
//! altered fields, the wrong store path, an honest narinfo carrying an altered one in its closure,
//! the right narinfo over blocks of other content, or the right narinfo over a hostile DAG. Each answer is refused, the peer is counted (and, when it
//! lied, deprioritised), and C's nix still gets the path — verified — from an honest peer.
//!
//! Every scenario runs in the same order, so the lie is always seen: C first knows only the rogue
//! and asks it for the path; then honest A connects, and C's nix substitutes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use cid::Cid;
use common::rogue::{Plan, Rogue};
use common::*;
use peerix::nix::narinfo::NarInfo;
use serde_json::Value;

/// What an honest peer would answer for the fixture's top path.
struct Genuine {
    w: Work,
    pk: String,
    top: String,
    dep: String,
    narinfo: String,
    dep_narinfo: String,
    root: Cid,
    store_a: std::path::PathBuf,
    /// Keeps the fixture in the machine's store until the scenario is done.
    _f: Fixture,
}

async fn genuine() -> Genuine {
    let w = Work::new();
    let (sk, pk) = w.keypair("honest-1");
    let f = w.build_big_fixture(8_000_000);
    w.sign(&f.top, &sk);
    let store_a = w.chroot_store("a", &[&f.top]);
    let args = ["--store-root", store_a.to_str().unwrap(), "--trusted-public-key", &pk];
    run(&mut peerix_cmd("publish", &w.path("state-a"), &args));
    let a0 = Daemon::start(&w.path("state-a"), &args);
    let narinfo = get(&format!("{}/{}.narinfo", a0.url, hash_part(&f.top))).await.text();
    let dep_narinfo = get(&format!("{}/{}.narinfo", a0.url, hash_part(&f.dep))).await.text();
    drop(a0);
    let root: Cid = indexed_root(&w.path("state-a"), &f.top).unwrap().parse().unwrap();
    Genuine { pk, top: f.top.clone(), dep: f.dep.clone(), narinfo, dep_narinfo, root, store_a, w, _f: f }
}

/// C, the rogue and A, run through the scenario; returns C (for its log), the rogue's entry in C's
/// status, and the status code of C's answer while only the rogue was known.
async fn scenario(g: &Genuine, plan: Plan) -> (Daemon, Value, u16) {
    // The rogue lies about the top path only (asked about its dependency, it has nothing).
    let plan = Plan { for_hash: Some(hash_part(&g.top).to_owned()), ..plan };
    let rogue = Rogue::start(plan, None).await;
    let c = peer_client(&g.w, "c", "client", &g.pk, &[&rogue.addr], &[]);
    c.wait_log("have-summary applied");
    let first = get(&format!("{}/{}.narinfo", c.url, hash_part(&g.top))).await.status;

    let a = Daemon::start(
        &g.w.path("state-a"),
        &[
            &["--store-root", g.store_a.to_str().unwrap(), "--trusted-public-key", &g.pk, "--peer", &c.p2p_addr()][..],
            &LOOPBACK_LAN,
        ]
        .concat(),
    );
    c.wait_log_count("have-summary applied", 2);
    let out = g.w.substitute("client", &g.top, &c.url, &g.pk);
    assert!(out.status.success(), "substitution failed: {}\n{}", String::from_utf8_lossy(&out.stderr), c.log());
    g.w.verify("client", &g.top, &g.pk);
    let status = c.status().await;
    let from_rogue: u64 = status["substitution"]["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["sources"].as_array().unwrap().iter())
        .filter(|s| s["source"] == rogue.peer_id.to_string().as_str())
        .map(|s| s["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(from_rogue, 0, "no byte of the NAR came from the rogue");
    let entry = status["p2p"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == rogue.peer_id.to_string().as_str())
        .cloned()
        .unwrap_or_else(|| panic!("rogue not in C's peers: {status:#}"));
    drop(a);
    (c, entry, first)
}

fn with_sigs(text: &str, sigs: &[String]) -> String {
    let mut info = NarInfo::parse(text).unwrap();
    info.sigs = sigs.to_vec();
    info.render()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_narinfo_signed_only_by_an_untrusted_key_is_refused() {
    let g = genuine().await;
    let other = peerix::nix::signing::SecretKey::generate("untrusted-1").unwrap();
    let info = NarInfo::parse(&g.narinfo).unwrap();
    let text = with_sigs(&g.narinfo, &[other.sign(&info.fingerprint())]);
    let (_c, rogue, first) = scenario(&g, Plan { narinfo: Some((text, g.root)), ..Default::default() }).await;
    assert_eq!(first, 404, "an untrusted narinfo must not be served");
    assert!(rogue["stats"]["untrusted_answers"].as_u64().unwrap() >= 1, "{rogue}");
    // Trusting other keys than we do is not a lie.
    assert_eq!(rogue["dishonest"], false, "{rogue}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_signature_is_refused_and_the_peer_deprioritised() {
    let g = genuine().await;
    let name = g.pk.split(':').next().unwrap();
    let forged = format!("{name}:{}", data_encoding::BASE64.encode(&[7u8; 64]));
    let text = with_sigs(&g.narinfo, &[forged]);
    let (_c, rogue, first) = scenario(&g, Plan { narinfo: Some((text, g.root)), ..Default::default() }).await;
    assert_eq!(first, 404);
    assert!(rogue["stats"]["untrusted_answers"].as_u64().unwrap() >= 1, "{rogue}");
    assert_eq!(rogue["dishonest"], true, "{rogue}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_signature_over_an_altered_nar_hash_or_size_is_refused() {
    let g = genuine().await;
    let mut info = NarInfo::parse(&g.narinfo).unwrap();
    info.nar_hash = peerix::nix::hash::NarHash([9; 32]);
    info.nar_size += 1;
    let (_c, rogue, first) = scenario(&g, Plan { narinfo: Some((info.render(), g.root)), ..Default::default() }).await;
    assert_eq!(first, 404);
    assert_eq!(rogue["dishonest"], true, "{rogue}");
}

/// The rogue answers the top path honestly and sends with it, as the path's closure, the
/// dependency's narinfo with its NarSize altered under the genuine signature: C keeps it unjudged,
/// refuses it when nix asks for the dependency, and gets the dependency from A.
#[tokio::test(flavor = "multi_thread")]
async fn a_lie_inside_a_closure_is_refused_when_nix_asks_for_that_path() {
    let g = genuine().await;
    let mut dep = NarInfo::parse(&g.dep_narinfo).unwrap();
    dep.nar_size += 1;
    let closure = vec![(hash_part(&g.dep).to_owned(), dep.render(), g.root)];
    let plan = Plan { narinfo: Some((g.narinfo.clone(), g.root)), closure, ..Default::default() };
    let (c, rogue, first) = scenario(&g, plan).await;
    assert_eq!(first, 200, "the top path's answer was honest");
    assert_eq!(rogue["dishonest"], true, "{rogue}");
    assert!(rogue["stats"]["untrusted_answers"].as_u64().unwrap() >= 1, "{rogue}");
    let counters = &c.status().await["substitution"]["counters"];
    assert_eq!(counters["closure_hits"], 0, "{counters}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_narinfo_for_another_store_path_is_refused() {
    let g = genuine().await;
    // The dependency's narinfo — genuine and signed — in answer to a request for the top path.
    let (_c, rogue, first) =
        scenario(&g, Plan { narinfo: Some((g.dep_narinfo.clone(), g.root)), ..Default::default() }).await;
    assert_eq!(first, 404);
    assert_eq!(rogue["dishonest"], true, "{rogue}");
    assert!(!g.dep.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn blocks_of_other_content_are_dropped_and_fetched_from_an_honest_peer() {
    let g = genuine().await;
    let blocks: HashMap<Cid, Vec<u8>> =
        indexed_blocks(&g.w.path("state-a"), &g.top).into_iter().map(|c| (c, b"not the block".to_vec())).collect();
    // 8 MB of random data is ~100 chunks of ~80 KiB, and a root node.
    assert!(blocks.len() > 50, "the DAG has its chunks: {}", blocks.len());
    let plan = Plan { narinfo: Some((g.narinfo.clone(), g.root)), blocks, ..Default::default() };
    let (_c, rogue, first) = scenario(&g, plan).await;
    assert_eq!(first, 200, "the narinfo itself is genuine");
    assert!(rogue["stats"]["bad_blocks"].as_u64().unwrap() >= 1, "{rogue}");
    assert_eq!(rogue["dishonest"], true, "{rogue}");
}

/// A dag-pb root with `links` links whose blocksizes add up to the NAR's size, or (`honest_sizes`
/// false) to one byte more.
fn hostile_root(links: usize, nar_size: u64, honest_sizes: bool) -> (Cid, Vec<u8>) {
    let leaf = peerix::ipld::raw_cid(b"x");
    let each = nar_size / links as u64;
    let mut l: Vec<peerix::ipld::unixfs::Link> =
        (0..links).map(|_| peerix::ipld::unixfs::Link { cid: leaf, file_size: each, dag_size: 1 }).collect();
    l[0].file_size += nar_size - each * links as u64;
    if !honest_sizes {
        l[0].file_size += 1;
    }
    let node = peerix::ipld::unixfs::encode_file_node(&l);
    (peerix::ipld::dag_pb_cid(&node), node)
}

/// The rogue names a hostile root and serves its node — over the block protocol or (`inline`)
/// with the narinfo: either way the same bounded walk refuses it.
async fn hostile_dag_scenario(links: usize, sizes_add_up: bool, inline: bool) {
    let g = genuine().await;
    let nar_size = NarInfo::parse(&g.narinfo).unwrap().nar_size;
    let (root, node) = hostile_root(links, nar_size, sizes_add_up);
    let (blocks, root_node) = match inline {
        true => (HashMap::new(), Some(node)),
        false => (HashMap::from([(root, node)]), None),
    };
    let plan = Plan { narinfo: Some((g.narinfo.clone(), root)), blocks, root_node, ..Default::default() };
    let (c, rogue, first) = scenario(&g, plan).await;
    assert_eq!(first, 200, "the narinfo itself is genuine");
    assert!(c.log().contains("refused a NAR root that does not describe the NAR"), "{}", c.log());
    assert_eq!(rogue["dishonest"], true, "{rogue}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_dag_with_a_huge_link_list_is_refused() {
    hostile_dag_scenario(9000, true, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dag_whose_blocksizes_do_not_add_up_to_nar_size_is_refused() {
    hostile_dag_scenario(3, false, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_root_node_sent_with_the_narinfo_is_refused_as_one_fetched() {
    hostile_dag_scenario(3, false, true).await;
}
