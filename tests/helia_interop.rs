//! An independent IPFS implementation reads our NARs: a Helia node (JavaScript, Node 20) imports
//! the CAR our trustless gateway exports and `@helia/unixfs` cat()s the root; the bytes must equal
//! `nix-store --dump`. `./test.sh` installs the pinned packages (`npm ci` in tests/helia).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::helia::{self, Script};
use common::rogue::{Plan, Rogue};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn helia_cats_the_nar_from_our_car() {
    let w = Work::new();
    let src = w.path("tree");
    std::fs::create_dir_all(src.join("share")).unwrap();
    // ~3 MB of varied bytes: dozens of chunks, one UnixFS node.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(src.join("share/data.bin"), &data).unwrap();
    std::fs::write(src.join("hello"), "hello from peerix\n").unwrap();
    let store = w.path("store");
    let path = run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(&src));
    let state = w.path("state");
    run(&mut peerix_cmd("publish", &state, &["--store-root", store.to_str().unwrap(), "--serve-private"]));
    let root = indexed_root(&state, &path).unwrap();
    let d = Daemon::start(&state, &["--store-root", store.to_str().unwrap(), "--serve-private"]);

    let out = w.path("helia.nar");
    let summary =
        helia::run("car-cat.mjs", &[&format!("{}/ipfs/{root}?format=car", d.url), &root, out.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
    assert_eq!(v["roots"][0], root.as_str());
    assert!(v["blocks"].as_u64().unwrap() > 10, "{summary}");
    let nar = nix_dump(&store.join(&path[1..]));
    assert!(std::fs::read(&out).unwrap() == nar, "Helia's cat differs from nix-store --dump");
}

/// A daemon with a published multi-chunk NAR and an IPFS node on 127.0.0.1.
fn published_daemon(w: &Work, extra: &[&str]) -> (Daemon, String, Vec<u8>) {
    let src = w.path("nar-src");
    std::fs::create_dir_all(&src).unwrap();
    let data: Vec<u8> = (0..2_500_000u32).map(|i| (i.wrapping_mul(2246822519) >> 11) as u8).collect();
    std::fs::write(src.join("payload"), &data).unwrap();
    let store = w.path("nar-store");
    let path = run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(&src));
    let state = w.path("nar-state");
    let root_args = ["--store-root", store.to_str().unwrap(), "--serve-private"];
    run(&mut peerix_cmd("publish", &state, &root_args));
    let root = indexed_root(&state, &path).unwrap();
    let args = [&root_args[..], &["--p2p-listen", "/ip4/127.0.0.1/tcp/0"], extra].concat();
    let d = Daemon::start(&state, &args);
    (d, root, nix_dump(&store.join(&path[1..])))
}

#[tokio::test(flavor = "multi_thread")]
async fn helia_fetches_a_nar_from_our_daemon_by_bitswap() {
    let w = Work::new();
    let (d, root, nar) = published_daemon(&w, &["--mode", "lan"]);
    let out = w.path("from-peerix.nar");
    let summary = helia::run("fetch.mjs", &[&d.p2p_addr(), &root, out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == nar, "Helia's bitswap copy differs from nix-store --dump");
    let v: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
    assert_eq!(v["bytes"].as_u64().unwrap(), nar.len() as u64);
    let status: serde_json::Value = serde_json::from_slice(&get(&format!("{}/api/status", d.url)).await.body).unwrap();
    assert!(status["p2p"]["bitswap"]["blocks_sent"].as_u64().unwrap() > 10, "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn we_find_a_block_only_helia_has_through_the_dht_and_fetch_it() {
    find_through_dht("/ipfs/kad/1.0.0", "wan", false).await;
}

/// A connected peer that takes our wants and never answers must not keep the DHT's providers
/// unasked until the block's 60 s deadline: after one silent round (5 s) the DHT is asked too.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_connected_peer_does_not_hold_back_the_dht_providers() {
    find_through_dht("/ipfs/kad/1.0.0", "wan", true).await;
}

/// kubo's dual DHT: a peer that speaks only `/ipfs/lan/kad/1.0.0` (as kubo does for peers with
/// private addresses) is found through our LAN DHT.
#[tokio::test(flavor = "multi_thread")]
async fn we_find_a_block_through_kubos_lan_dht() {
    find_through_dht("/ipfs/lan/kad/1.0.0", "lan", false).await;
}

async fn find_through_dht(protocol: &str, dht: &str, silent_peer: bool) {
    use std::io::{BufRead, BufReader};
    let w = Work::new();
    let expected = w.path("helia-block.bin");
    let mut peer = Script::spawn("provide.mjs", &["300000", expected.to_str().unwrap(), protocol]);
    let mut lines = BufReader::new(peer.0.stdout.take().unwrap()).lines();
    let hello: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let (addr, cid) = (hello["addr"].as_str().unwrap().to_owned(), hello["cid"].as_str().unwrap().to_owned());

    // Our daemon joins the DHT through Helia; Helia announces the block to it, then hangs up.
    let state = w.path("state");
    let d = Daemon::start(
        &state,
        &["--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", &addr, "--mode", "ipfs", "--dht-server"],
    );
    use std::io::Write as _;
    let mut stdin = peer.0.stdin.take().unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "provided");
    // js kad-dht's provide() can resolve before its ADD_PROVIDER reached anyone; announce again
    // until our daemon has stored the record (3 tries).
    let mut stored = false;
    for _ in 0..3 {
        if let Some(line) = d.wait_log_for("stored provider record", std::time::Duration::from_secs(15)) {
            assert!(line.contains(&format!("dht=\"{dht}\"")) || line.contains(&format!("dht={dht}")), "{line}");
            stored = true;
            break;
        }
        writeln!(stdin, "provide").unwrap();
        assert_eq!(lines.next().unwrap().unwrap(), "provided");
    }
    assert!(stored, "Helia's announcement never reached us:\n{}", d.log());
    let before_hangup = d.mark();
    writeln!(stdin, "hangup").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "hung-up");
    // Our side sees the close a moment after Helia reports it: wait for that event.
    d.wait_log_after(before_hangup, "peer disconnected");
    let status: serde_json::Value = serde_json::from_slice(&get(&format!("{}/api/status", d.url)).await.body).unwrap();
    assert_eq!(status["connected_peers"].as_array().unwrap().len(), 0, "Helia hung up: {status}");
    let silent = match silent_peer {
        true => {
            let mark = d.mark();
            let rogue = Rogue::start(Plan::default(), Some(&d.p2p_addr())).await;
            d.wait_log_after(mark, &format!("peer_id={}", rogue.peer_id));
            Some(rogue)
        }
        false => None,
    };

    let out = w.path("fetched.bin");
    let started = std::time::Instant::now();
    let f = d.fetch(&cid, &out);
    let took = started.elapsed();
    assert!(f.status.success(), "{}\n{}", String::from_utf8_lossy(&f.stderr), d.log());
    if let Some(rogue) = silent {
        let wanted = rogue.wants.lock().unwrap().clone();
        assert!(wanted.iter().any(|c| c.to_string() == cid), "the silent peer was never asked: {wanted:?}");
        // One silent round (5 s) and a DHT walk, against the 60 s the peer could hold us.
        assert!(took < std::time::Duration::from_secs(20), "the silent peer held the fetch for {took:?}");
    }
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&expected).unwrap());
    let line = d.wait_log("looked up providers in the DHT");
    assert!(line.contains(&cid) && line.contains("providers=1"), "{line}");
    drop(stdin);
    let _ = peer.0.wait();
}
