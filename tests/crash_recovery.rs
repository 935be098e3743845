//! A crash costs nothing that is served: the daemon killed with SIGKILL while indexing, and while
//! fetching a NAR from a peer and evicting received blocks, restarts to a state `peerix verify`
//! finds clean (SQLite's own check, every published path's chunks tiling its NAR and matching
//! their CIDs, every stored block matching its CID), and everything it serves afterwards is
//! byte-exact.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;

/// Runs `peerix verify` on a stopped daemon's state; returns its summary line.
fn verify_clean(state: &Path, args: &[&str]) -> String {
    let out = peerix_cmd("verify", state, args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "verify failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(": 0 bad"), "{stdout}");
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_while_indexing_it_restarts_clean() {
    let w = Work::new();
    let store = w.path("store");
    let paths = w.add_files(&store, "data", (0..6).map(|i| pseudo_random(6 << 20, 40 + i)));
    let state = w.path("state");
    let args = ["--store-root", store.to_str().unwrap(), "--serve-private"];
    // Indexing at 8 MB/s: the 36 MB take seconds, so the kill lands between two paths or inside one.
    let mut d = Daemon::start(&state, &[&args[..], &["--index-rate", "8M"]].concat());
    d.wait_status("indexing under way", |s| {
        s["scan"]["running"] == true && s["scan"]["done_paths"].as_u64().is_some_and(|n| (1..5).contains(&n))
    })
    .await;
    d.kill();
    let after_crash = verify_clean(&state, &args);

    let d = Daemon::start(&state, &args);
    d.wait_log("index scan finished");
    for p in &paths {
        let nar = get(&format!("{}/{}", d.url, nar_url_of_store(&d, p).await)).await;
        assert!(nar.body == nix_dump(&store.join(&p[1..])), "{p}: the NAR differs from nix-store --dump");
    }
    drop(d);
    let clean = verify_clean(&state, &args);
    assert!(clean.contains("verified 6 paths"), "after the crash: {after_crash}; after the restart: {clean}");
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_while_fetching_and_evicting_it_restarts_clean() {
    let w = Work::new();
    let (sk, pk) = w.keypair("crash-1");
    let f = w.build_big_fixture(96_000_000);
    w.sign(&f.top, &sk);
    let a = seeder(&w, "a", &[&f.top], &pk);
    let root = root_cid(&a, &f.top).await;
    let expected = nix_dump(Path::new(&f.top));
    // C keeps 16 MiB of received blocks (the least it takes): fetching the 96 MB DAG evicts.
    let extra = ["--cache-size", "16M"];
    let mut c = peer_client(&w, "c", "client", &pk, &[&a.p2p_addr()], &extra);
    c.wait_log("have-summary applied");

    // Two transfers at once: the NAR through the binary-cache API (from the peer, not stored) and
    // the same DAG through /api/v0/cat (bitswap, into the blockstore, evicting). The NAR's reader
    // stops after 8 MiB and holds the response, so that transfer cannot end before the kill (on
    // loopback a 24 MB one ended in 0.7 s, before the waits below). What C may hold ahead of a
    // reader that stopped — the transfer's 32 MiB window, its queue of pieces, socket buffers — is
    // under 60 MB: 96 MB leaves the transfer running.
    let nar = format!("/{}", nar_url_of_store(&c, &f.top).await);
    let cat = format!("/api/v0/cat?arg={root}");
    let (release, held) = tokio::sync::oneshot::channel::<()>();
    let nar_reader = tokio::spawn({
        let url = format!("{}{nar}", c.url);
        async move {
            let mut resp = client().get(&url).send().await.unwrap();
            let mut got = 0;
            while got < 8 << 20 {
                match resp.chunk().await {
                    Ok(Some(piece)) => got += piece.len(),
                    _ => break,
                }
            }
            let _ = held.await;
            got
        }
    });
    let cat_reader = tokio::spawn({
        let url = format!("{}{cat}", c.url);
        async move {
            let mut resp = client().post(&url).send().await.unwrap();
            while let Ok(Some(_)) = resp.chunk().await {}
        }
    });
    c.wait_status("the NAR transfer running, received blocks evicted", |s| {
        s["blockstore"]["evicted_bytes"].as_u64() > Some(0)
            && s["substitution"]["transfers"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["outcome"] == "running" && t["bytes_done"].as_u64() > Some(0)))
    })
    .await;
    c.kill();
    let _ = release.send(());
    let nar_got = nar_reader.await.unwrap();
    cat_reader.await.unwrap();
    assert!(nar_got >= 8 << 20 && nar_got < expected.len(), "the NAR reader got {nar_got} bytes before the kill");
    let store = w.path("client");
    let args = ["--store-root", store.to_str().unwrap(), "--trusted-public-key", &pk];
    let after_crash = verify_clean(&w.path("state-c"), &args);

    let c = peer_client(&w, "c", "client", &pk, &[&a.p2p_addr()], &extra);
    c.wait_log("have-summary applied");
    assert!(get(&format!("{}{nar}", c.url)).await.body == expected, "NAR after restart");
    let cat = request(&client(), "POST", &format!("{}{cat}", c.url), &[]).await;
    assert!(cat.status == 200 && cat.body == expected, "cat after restart: {}", cat.status);
    let s = c.status().await;
    assert!(s["blockstore"]["bytes"].as_u64().unwrap() <= 16 << 20, "over the cap: {s:#}");
    drop(c);
    let clean = verify_clean(&w.path("state-c"), &args);
    eprintln!("after the crash: {after_crash}after the restart: {clean}");
}
