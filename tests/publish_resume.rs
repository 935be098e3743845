//! Indexing survives a kill -9 at any moment: each path is committed whole, the next run picks up
//! exactly what is left, `peerix verify` is clean, and the roots equal those of an uninterrupted run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::Stdio;

use common::*;

#[test]
fn kill_9_during_publish_loses_nothing() {
    let w = Work::new();
    // 24 paths of 6 MB each: long enough to be interrupted in the middle.
    let mut srcs = Vec::new();
    for i in 0..24u64 {
        let f = w.path(&format!("blob-{i:02}.bin"));
        std::fs::File::create(&f)
            .unwrap()
            .write_all(&pseudo_random(6 << 20, (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            .unwrap();
        srcs.push(f);
    }
    let store = w.path("store");
    let paths: Vec<String> = run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").args(&srcs))
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(paths.len(), 24);
    let state = w.path("state");
    let args = ["--store-root", store.to_str().unwrap(), "--serve-private"];

    // 30 MB/s: the 144 MB take ~5 s, so the kill lands mid-way.
    let mut child = peerix_cmd("publish", &state, &[&args[..], &["--jobs", "1", "--index-rate", "30M"]].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once some, not all, paths are committed (each commit is a row in the state DB).
    let indexed = || paths.iter().filter(|p| indexed_root(&state, p).is_some()).count();
    let done = loop {
        let n = if state.join("peerix.sqlite").exists() { indexed() } else { 0 };
        if n >= 1 {
            break n;
        }
        assert!(child.try_wait().unwrap().is_none(), "publish ended before the first path was committed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!((1..24).contains(&done), "killed after {done} paths");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let partial = paths.iter().filter(|p| indexed_root(&state, p).is_some()).count();
    assert!(partial >= done && partial < 24, "{partial} indexed before the kill");

    let out = run(&mut peerix_cmd("publish", &state, &args));
    assert!(out.contains(&format!("published {}, ", 24 - partial)), "resumed: {out}");
    let verify = run(&mut peerix_cmd("verify", &state, &args));
    assert!(verify.contains("24 paths") && verify.contains(": 0 bad"), "{verify}");

    let fresh = w.path("fresh");
    run(&mut peerix_cmd("publish", &fresh, &args));
    for p in &paths {
        assert_eq!(indexed_root(&state, p), indexed_root(&fresh, p), "{p}");
    }
}
