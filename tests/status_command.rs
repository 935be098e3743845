//! `peerix status` reads a running daemon: a readable summary whose numbers are the daemon's,
//! `--json` for scripts, and `--watch` refusing (with a reason) when there is no terminal to
//! refresh. Polling `/api/status` on an idle daemon reads no table twice; a change is seen at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;

fn status(url: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_peerix")).arg("status").args(["--url", url]).args(extra).output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_summarises_json_lists_and_watch_needs_a_terminal() {
    let w = Work::new();
    let src = w.path("tree");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("file"), b"status").unwrap();
    let store = w.path("store");
    run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(&src));
    let d = Daemon::start(&w.path("state"), &["--store-root", store.to_str().unwrap(), "--serve-private"]);
    d.wait_log("index scan finished");

    let text = status(&d.url, &[]);
    assert!(text.status.success(), "{}", String::from_utf8_lossy(&text.stderr));
    let text = String::from_utf8(text.stdout).unwrap();
    let index = text.lines().find(|l| l.starts_with("index")).unwrap_or_else(|| panic!("{text}"));
    assert!(index.contains("1 published"), "{text}");

    let json = status(&d.url, &["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["index"]["published_paths"], 1);
    assert!(text.contains(v["peer_id"].as_str().unwrap()), "the summary names the daemon's peer id");

    let watch = status(&d.url, &["--watch"]);
    assert!(!watch.status.success());
    assert!(String::from_utf8_lossy(&watch.stderr).contains("--watch refreshes a terminal"));

    let down = status("http://127.0.0.1:9", &[]);
    assert!(!down.status.success());
    assert!(String::from_utf8_lossy(&down.stderr).contains("is `peerix serve` running?"));
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reads_the_tables_again_only_after_a_change() {
    let w = Work::new();
    let store = w.path("store");
    let add = |name: &str| {
        let src = w.path(name);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("file"), name.as_bytes()).unwrap();
        run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(&src))
    };
    add("first");
    let d = Daemon::start(&w.path("state"), &["--store-root", store.to_str().unwrap(), "--serve-private"]);
    // The scan's last words (after "index scan finished" it still records its totals).
    d.wait_log("index updated");
    let mark = d.mark();
    for _ in 0..10 {
        assert_eq!(d.status().await["index"]["published_paths"], 1);
    }
    let reads = |from| d.log().lines().skip(from).filter(|l| l.contains("reading status totals")).count();
    assert_eq!(reads(mark), 1, "ten polls of an idle daemon read the tables once");

    // A new path: the next status that follows the index's commits shows it.
    add("second");
    d.wait_status("the second path published", |s| s["index"]["published_paths"] == 2).await;
    assert!(reads(mark) >= 2);
    d.wait_log_count("index updated", 2);
    let mark = d.mark();
    for _ in 0..5 {
        assert_eq!(d.status().await["index"]["published_paths"], 2);
    }
    assert!(reads(mark) <= 1, "idle again: {} reads", reads(mark));
}

/// The human status says what `/health` says, first, and fails like it; then what another machine
/// needs: the p2p addresses to give as `--peer` and the signing key's public half to trust.
#[tokio::test(flavor = "multi_thread")]
async fn status_puts_health_first_and_says_how_to_reach_and_trust_this_node() {
    let w = Work::new();
    let (sk, pk) = w.keypair("status-1");
    // No Nix database under this store root: /health is 503, and so is the status.
    let d = Daemon::start(
        &w.path("state"),
        &["--private-key-file", sk.to_str().unwrap(), "--mode", "lan", "--p2p-listen", "/ip4/127.0.0.1/tcp/0"],
    );
    let health = get(&format!("{}/health", d.url)).await;
    assert_eq!(health.status, 503, "{}", health.text());
    let out = status(&d.url, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a degraded daemon's status must fail:\n{text}");
    assert!(text.lines().next().unwrap().starts_with("health     DEGRADED: Nix DB unreadable"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("degraded"));
    assert!(text.contains(&d.p2p_addr()), "the --peer address is shown:\n{text}");
    assert!(text.contains(&format!("signing    {pk}")), "the public key to trust is shown:\n{text}");
    let json = status(&d.url, &["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["health"]["ok"], false);
    assert_eq!(v["trust"]["signing_public_key"], pk.as_str());

    // A healthy daemon says so and exits 0.
    let src = w.path("tree");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("file"), b"healthy").unwrap();
    let store = w.path("store");
    run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(&src));
    let ok = Daemon::start(&w.path("state-ok"), &["--store-root", store.to_str().unwrap()]);
    let out = status(&ok.url, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("health     ok\n"));
}

/// Indexing progress counts bytes as they are read, so a large path moves it before it is done:
/// what `peerix publish`'s bar and the dashboard's show.
#[tokio::test(flavor = "multi_thread")]
async fn scan_progress_moves_within_a_large_path() {
    let w = Work::new();
    let src = w.path("big");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("blob"), pseudo_random(24 << 20, 5)).unwrap();
    let store = w.path("store");
    run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(&src));
    // 4 MB/s: the one path takes ~6 s.
    let d = Daemon::start(
        &w.path("state"),
        &["--store-root", store.to_str().unwrap(), "--serve-private", "--index-rate", "4M"],
    );
    let s = d
        .wait_status("bytes counted inside the path", |s| {
            let scan = &s["scan"];
            let (done, total) = (scan["done_bytes"].as_u64().unwrap_or(0), scan["total_bytes"].as_u64().unwrap_or(0));
            scan["done_paths"] == 0 && done > 0 && done < total
        })
        .await;
    assert_eq!(s["scan"]["total_paths"], 1, "{:#}", s["scan"]);
}
