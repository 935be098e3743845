//! `/health` says what is wrong: 200 `ok` while the daemon can work, 503 with a one-line reason
//! when the state DB or Nix's DB can no longer be read (the daemon's open connections would not
//! notice a file that went away; nothing creates a new one in its place), and 200 again once it
//! is back — the daemon serving on throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn health_turns_503_while_a_database_is_unreadable_and_back() {
    let w = Work::new();
    let src = w.path("tree");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("file"), b"health").unwrap();
    let store = w.path("store");
    let path = run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(&src));
    let state = w.path("state");
    let d = Daemon::start(&state, &["--store-root", store.to_str().unwrap(), "--serve-private"]);
    d.wait_log("index scan finished");
    let health = || async {
        let r = get(&format!("{}/health", d.url)).await;
        (r.status, r.text())
    };
    assert_eq!(health().await, (200, "ok\n".to_owned()));

    for (file, what) in [
        (state.join("peerix.sqlite"), "state DB unreadable"),
        (store.join("nix/var/nix/db/db.sqlite"), "Nix DB unreadable"),
    ] {
        let aside = file.with_extension("aside");
        std::fs::rename(&file, &aside).unwrap();
        let (status, body) = health().await;
        assert_eq!(status, 503, "{body}");
        assert!(body.starts_with(&format!("degraded: {what}")) && body.matches('\n').count() == 1, "{body:?}");
        // The phrase only: the cause (file paths, SQLite's words) is in the log, not on the wire.
        assert!(!body.contains('/') && !body.contains('('), "{body:?}");
        // A status read in the meantime fails; nothing makes a new, empty database in its place.
        let _ = get(&format!("{}/api/status", d.url)).await;
        assert!(!file.exists(), "{} was created anew", file.display());
        std::fs::rename(&aside, &file).unwrap();
        assert_eq!(health().await, (200, "ok\n".to_owned()), "after {what}");
    }
    let narinfo = get(&format!("{}/{}.narinfo", d.url, hash_part(&path))).await;
    assert_eq!(narinfo.status, 200);
}

/// A daemon told to reach a peer (`--peer`) is healthy while connected, and degraded — with the
/// reason — once it has had none for the grace period (30 s after its start).
#[tokio::test(flavor = "multi_thread")]
async fn health_turns_503_when_the_peers_it_should_have_are_gone() {
    let w = Work::new();
    // A store with a Nix DB (an empty one would be degraded for that reason).
    std::fs::write(w.path("file"), b"peers").unwrap();
    let store = w.path("store");
    run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(w.path("file")));
    let mut b = Daemon::start(&w.path("state-b"), &LOOPBACK_LAN);
    let args = ["--store-root", store.to_str().unwrap(), "--peer", &b.p2p_addr()];
    let a = Daemon::start(&w.path("state-a"), &[&LOOPBACK_LAN[..], &args].concat());
    a.wait_log("peer connected");
    let health = || async {
        let r = get(&format!("{}/health", a.url)).await;
        (r.status, r.text())
    };
    // Past the grace period, still connected: healthy.
    a.wait_status("30 s of uptime", |s| s["uptime_secs"].as_u64() > Some(30)).await;
    assert_eq!(health().await, (200, "ok\n".to_owned()));
    b.kill();
    a.wait_log("peer disconnected");
    let (status, body) = health().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("degraded: no peers connected") && body.matches('\n').count() == 1, "{body:?}");
}
