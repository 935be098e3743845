//! An independent IPFS implementation reads our NARs: a Helia node (JavaScript, Node 20) imports
//! the CAR our trustless gateway exports and `@helia/unixfs` cat()s the root; the bytes must equal
//! `nix-store --dump`. `./test.sh` installs the pinned packages (`npm ci` in tests/helia).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Runs a script of the Helia test peer; panics with its output if it fails.
fn helia(script: &str, args: &[&str]) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helia");
    assert!(dir.join("node_modules").exists(), "run `npm ci` in tests/helia (./test.sh does)");
    let out = Command::new("node")
        .current_dir(&dir)
        .args(["--import", "./polyfill.mjs", script])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

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
    let summary = helia("car-cat.mjs", &[&format!("{}/ipfs/{root}?format=car", d.url), &root, out.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
    assert_eq!(v["roots"][0], root.as_str());
    assert!(v["blocks"].as_u64().unwrap() > 10, "{summary}");
    let nar = nix_dump(&store.join(&path[1..]));
    assert!(std::fs::read(&out).unwrap() == nar, "Helia's cat differs from nix-store --dump");
}
