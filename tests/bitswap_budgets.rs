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
    // 32 messages of 1 024 want-haves: 32 768 wants, 16 384 over what a peer may spend at once, so
    // answering them all takes at least a second at 16 384 a second. (A lower bound on time: a
    // slow machine only adds to it — and, when it answers slower than the budget refills, has
    // nothing to pace: wants_paced may then stay 0.)
    let cids: Vec<Cid> = chunks.iter().map(|c| c.0).cycle().take(1024).collect();
    const ROUNDS: usize = 32;
    let started = std::time::Instant::now();
    rogue.send_wants_times(peer, &cids, WANT_HAVE, ROUNDS).await.unwrap();
    poll_until("every HAVE", || (rogue.presences.lock().unwrap().len() >= ROUNDS * cids.len()).then_some(())).await;
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(950), "32 768 wants answered in {took:?}");
    let s = d.status().await;
    eprintln!("32 768 want-haves answered in {took:?}; {} paced", s["p2p"]["bitswap"]["wants_paced"]);
    assert_eq!(s["p2p"]["bitswap"]["peers_dropped"], 0, "pacing is not a disconnect");
}

/// CPU-seconds `pid` has used (user + system).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

/// Benchmark (run by `benches/flood.sh` on a release build; not part of CI): an honest peerix
/// client fetches a NAR from seeder S over the peerix block protocol, alone and while another peer
/// floods S with want-haves for S's chunks (1 024 per message, as fast as S takes them), rounds
/// alternating. Prints the honest transfer's MB/s in each condition, and what the flood cost S.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: benches/flood.sh"]
async fn flood_bench() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let mb: usize = std::env::var("FLOOD_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(128);
    let rounds: usize = std::env::var("FLOOD_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let w = Work::new();
    let (sk, pk) = w.keypair("flood-1");
    let f = w.build_big_fixture(mb << 20);
    w.sign(&f.top, &sk);
    let s = seeder(&w, "s", &[&f.top], &pk);
    let c = peer_client(&w, "c", "client", &pk, &[&s.p2p_addr()], &[]);
    c.wait_log("have-summary applied");
    let nar_url = format!("{}/{}", c.url, nar_url_of_store(&c, &f.top).await);
    let root = root_cid(&s, &f.top).await;
    let (_, blocks) = parse_car(&get(&format!("{}/ipfs/{root}?format=car", s.url)).await.body);
    let chunks: Vec<Cid> = blocks.iter().filter(|(c, _)| c.codec() == 0x55).map(|(c, _)| *c).collect();
    let wants: Vec<Cid> = chunks.iter().copied().cycle().take(1024).collect();
    let flooder = Arc::new(Rogue::start(Plan { no_summary: true, ..Plan::default() }, Some(&s.p2p_addr())).await);
    let s_peer: libp2p::PeerId = s.peer_id().parse().unwrap();
    s.wait_log(&format!("peer_id={}", flooder.peer_id));

    let flooding = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    {
        let (flooder, flooding, sent, wants) = (flooder.clone(), flooding.clone(), sent.clone(), wants.clone());
        tokio::spawn(async move {
            loop {
                if flooding.load(Ordering::Relaxed) {
                    if flooder.send_wants_times(s_peer, &wants, WANT_HAVE, 16).await.is_ok() {
                        sent.fetch_add(16 * 1024, Ordering::Relaxed);
                    }
                } else {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        });
    }
    let answered = || flooder.presences.lock().unwrap().len() as u64;
    let read = |st: &serde_json::Value| st["blockstore"]["local_chunk_bytes_read"].as_u64().unwrap();
    // (MB/s, S's CPU-s, S's chunk bytes read, wants sent, wants answered) per transfer.
    type Row = (f64, f64, u64, u64, u64);
    let mut results: [Vec<Row>; 2] = [Vec::new(), Vec::new()];
    let expected_len = nix_dump(std::path::Path::new(&f.top)).len();
    for round in 0..rounds * 2 {
        let flood = round % 2 == 1;
        if flood {
            let before = answered();
            flooding.store(true, Ordering::Relaxed);
            poll_until("the flood under way", || (answered() > before + 16 * 1024).then_some(())).await;
        }
        let (cpu0, read0, sent0, ans0) =
            (cpu_secs(s.pid()), read(&s.status().await), sent.load(Ordering::Relaxed), answered());
        let t = std::time::Instant::now();
        let nar = get(&nar_url).await;
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(nar.body.len(), expected_len);
        let row = (
            expected_len as f64 / secs / 1e6,
            cpu_secs(s.pid()) - cpu0,
            read(&s.status().await) - read0,
            sent.load(Ordering::Relaxed) - sent0,
            answered() - ans0,
        );
        results[flood as usize].push(row);
        if flood {
            flooding.store(false, Ordering::Relaxed);
            // Let S answer what is queued before the next unloaded round.
            let mut last = answered();
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let now = answered();
                if now == last {
                    break;
                }
                last = now;
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    println!("{mb} MiB NAR, seeder S → client C over /peerix/blocks, {rounds} rounds each, alternating");
    println!(
        "{:<10} {:>8} {:>10} {:>14} {:>12} {:>14}",
        "condition", "MB/s", "S CPU-s", "S bytes read", "wants sent", "wants answered"
    );
    let mut mbs = [0.0; 2];
    for (i, name) in ["alone", "flooded"].iter().enumerate() {
        let r = &results[i];
        mbs[i] = median(&mut r.iter().map(|x| x.0).collect());
        println!(
            "{:<10} {:>8.1} {:>10.2} {:>14} {:>12} {:>14}",
            name,
            mbs[i],
            median(&mut r.iter().map(|x| x.1).collect()),
            r.iter().map(|x| x.2).sum::<u64>() / r.len() as u64,
            r.iter().map(|x| x.3).sum::<u64>() / r.len() as u64,
            r.iter().map(|x| x.4).sum::<u64>() / r.len() as u64,
        );
    }
    let st = s.status().await;
    println!(
        "honest transfer under flood: {:.2}x of alone (goal >= 0.80); S paced {} wants, dropped {} peers",
        mbs[1] / mbs[0],
        st["p2p"]["bitswap"]["wants_paced"],
        st["p2p"]["bitswap"]["peers_dropped"]
    );
}
