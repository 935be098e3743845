//! One-shot commands never fight a running daemon over its state directory: `peerix publish` run
//! beside it without its flags asks it to scan (under its own configuration) and leaves its index
//! as the daemon keeps it; `verify --repair` refuses while it runs; a second `peerix serve` on the
//! same state directory stops at once and names the first. With no daemon running, one-shot
//! commands run with the configuration the daemon last ran with.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn publish_beside_a_daemon_asks_it_and_changes_nothing_it_serves() {
    let w = Work::new();
    let store = w.path("store");
    let paths = w.add_files(&store, "file", (0..2).map(|i| format!("beside {i}").into_bytes()));
    let state = w.path("state");
    let d = Daemon::start(&state, &["--store-root", store.to_str().unwrap(), "--serve-private"]);
    d.wait_log("index scan finished");
    assert_eq!(d.status().await["index"]["published_paths"], 2);

    // Without --serve-private these paths would be private: run alone, publish would say so.
    let mark = d.mark();
    let out =
        peerix_cmd("publish", &state, &["--store-root", store.to_str().unwrap()]).arg(&paths[0]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("a daemon runs on this state directory ({})", d.url)), "{stderr}");
    assert!(stdout.contains("the daemon's index: published 2, private 0"), "{stdout}");
    assert!(stdout.contains(&format!("{}: published", paths[0])), "{stdout}");
    d.wait_log_after(mark, "index scan asked for");
    assert_eq!(d.status().await["index"]["published_paths"], 2, "the daemon's index is as it keeps it");
    for p in &paths {
        assert_eq!(get(&format!("{}/{}.narinfo", d.url, hash_part(p))).await.status, 200);
    }

    // Repairing needs the directory to itself; checking works beside the daemon.
    let repair = peerix_cmd("verify", &state, &["--repair"]).output().unwrap();
    assert!(!repair.status.success());
    assert!(String::from_utf8_lossy(&repair.stderr).contains("stop it to repair"));
    let check = peerix_cmd("verify", &state, &["--store-root", store.to_str().unwrap()]).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    // A second daemon on the same state directory stops and names the first.
    let err = Daemon::try_start(&state, &["--store-root", store.to_str().unwrap()]).err().expect("must not start");
    assert!(err.contains(&format!("is in use by a running `peerix serve` (http://{})", d.addr)), "{err}");

    // With the daemon stopped, publish given no flags runs as the daemon last ran (its store root,
    // --serve-private): nothing turns private.
    drop(d);
    let out = peerix_cmd("publish", &state, &[]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("using the configuration the daemon last ran with"), "{stderr}");
    assert!(stdout.contains("published 0, private 0, failed 0, removed 0"), "{stdout}");
    for p in &paths {
        assert!(indexed_root(&state, p).is_some(), "{p} is no longer published");
    }
}
