//! Blocks between peerix nodes travel zstd-compressed when the asker asks (a far peer): a seeder
//! sends a compressible path's chunks as `0x02 ‖ zstd` frames well under their size, the asker
//! gets back exactly the blocks (each checked against its CID), and chunks that do not compress
//! (random bytes) go as they are even when compression is asked for.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::rogue::{Plan, Rogue};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_far_asker_gets_compressible_blocks_compressed_and_exact() {
    let w = Work::new();
    let store = w.path("store");
    // 3 MB of text, compressible as packages' files are, and 3 MB of random bytes.
    let text: Vec<u8> = (0..200_000u32).flat_map(|i| format!("line {i} of a manual page\n").into_bytes()).collect();
    let (text_src, noise_src) = (w.path("text"), w.path("noise"));
    std::fs::create_dir_all(&text_src).unwrap();
    std::fs::create_dir_all(&noise_src).unwrap();
    std::fs::write(text_src.join("doc"), &text).unwrap();
    std::fs::write(noise_src.join("blob"), pseudo_random(3 << 20, 9)).unwrap();
    let text_path = run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(&text_src));
    let noise_path = run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(&noise_src));
    let state = w.path("state");
    let args = ["--store-root", store.to_str().unwrap(), "--serve-private", "--p2p-listen", "/ip4/127.0.0.1/tcp/0"];
    let a = Daemon::start(&state, &[&args[..], &LOOPBACK_LAN].concat());
    a.wait_log("index scan finished");
    let rogue = Rogue::start(Plan { no_summary: true, ..Default::default() }, Some(&a.p2p_addr())).await;
    let peer: libp2p::PeerId = a.peer_id().parse().unwrap();

    let text_cids = indexed_blocks(&state, &text_path);
    let noise_cids = indexed_blocks(&state, &noise_path);
    assert!(text_cids.len() >= 4 && noise_cids.len() >= 4, "{} and {} chunks", text_cids.len(), noise_cids.len());
    let text_cids = &text_cids[..text_cids.len().min(64)];
    let noise_cids = &noise_cids[..noise_cids.len().min(64)];

    let plain = rogue.fetch_blocks_as(peer, text_cids, false).await.unwrap();
    let packed = rogue.fetch_blocks_as(peer, text_cids, true).await.unwrap();
    assert!(plain == packed, "compressed blocks differ from the plain ones");
    let size: usize = plain.iter().map(|b| b.len()).sum();

    let frames = rogue.block_frames(peer, text_cids, true).await;
    assert!(frames.iter().all(|(status, _)| *status == 2), "{frames:?}");
    let wire: usize = frames.iter().map(|(_, len)| len).sum();
    assert!(wire * 3 < size, "{size} bytes of text went as {wire} bytes");
    let frames = rogue.block_frames(peer, text_cids, false).await;
    assert!(frames.iter().all(|(status, _)| *status == 0), "not asked, not compressed: {frames:?}");

    // (The first chunk holds the NAR's framing, which compresses; the rest are random bytes.)
    let frames = rogue.block_frames(peer, noise_cids, true).await;
    assert!(frames[1..].iter().all(|(status, _)| *status == 0), "random bytes are sent as they are: {frames:?}");
    assert!(rogue.fetch_blocks_as(peer, noise_cids, true).await.is_ok());
}
