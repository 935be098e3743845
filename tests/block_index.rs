//! NARs as content-defined IPLD blocks: the trustless gateway and the kubo RPC subset serve every
//! block of a published path, each hashing to its CID and reassembling to `nix-store --dump`; roots
//! are stable across runs and stores; a private path's blocks are reachable nowhere; a path that
//! vanishes from the store drops out and `peerix verify` reports it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cid::Cid;
use common::*;

/// A tree with several FastCDC chunks (a 1.5 MB pseudo-random file) and small files.
fn tree(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let root = dir.join(name);
    fs::create_dir_all(root.join("lib")).unwrap();
    fs::write(root.join("lib/big.so"), pseudo_random(1_500_000, seed)).unwrap();
    fs::write(root.join("README"), format!("tree {name}\n")).unwrap();
    fs::write(root.join("run"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("run"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("lib/big.so", root.join("link")).unwrap();
    root
}

struct Published {
    w: Work,
    store: PathBuf,
    shared: String,
    private: String,
    pk: String,
}

/// A chroot store with one signed (shareable) and one unsigned (private) path, indexed by
/// `peerix publish` into `state`.
fn published() -> Published {
    let w = Work::new();
    let (sk, pk) = w.keypair("index-1");
    let store = w.path("store");
    let add = |p: &Path| run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(p));
    let shared = add(&tree(w.dir.path(), "shared", 1));
    let private = add(&tree(w.dir.path(), "private", 2));
    run(w.nix("nix").args(["store", "sign", "--store"]).arg(&store).arg("--key-file").arg(&sk).arg(&shared));
    let out = run(&mut peerix_cmd(
        "publish",
        &w.path("state"),
        &["--store-root", store.to_str().unwrap(), "--trusted-public-key", &pk],
    ));
    assert!(out.contains("published 1, private 1, failed 0"), "{out}");
    Published { w, store, shared, private, pk }
}

impl Published {
    fn daemon(&self) -> Daemon {
        Daemon::start(
            &self.w.path("state"),
            &["--store-root", self.store.to_str().unwrap(), "--trusted-public-key", &self.pk],
        )
    }

    fn nar(&self, path: &str) -> Vec<u8> {
        nix_dump(&self.store.join(&path[1..]))
    }
}

async fn root_of(d: &Daemon, path: &str) -> Cid {
    let r = get(&format!("{}/api/paths/{}", d.url, hash_part(path))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["gate"]["shared"], true);
    assert_eq!(v["index"]["status"], "published");
    assert!(v["index"]["chunk_count"].as_u64().unwrap() >= 2, "{v}");
    v["index"]["root_cid"].as_str().unwrap().parse().unwrap()
}

/// Concatenates the raw leaves under `cid` in DAG order.
fn reassemble(cid: &Cid, blocks: &std::collections::HashMap<Cid, Vec<u8>>, out: &mut Vec<u8>) {
    let data = &blocks[cid];
    if cid.codec() == 0x55 {
        out.extend_from_slice(data);
    } else {
        for child in peerix::ipld::unixfs::decode(data).unwrap().links {
            reassemble(&child, blocks, out);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_serves_verified_blocks_that_reassemble_to_the_nar() {
    let p = published();
    let d = p.daemon();
    let root = root_of(&d, &p.shared).await;
    let nar = p.nar(&p.shared);

    let car = get(&format!("{}/ipfs/{root}?format=car", d.url)).await;
    assert_eq!(car.status, 200);
    assert_eq!(car.header("content-type"), Some("application/vnd.ipld.car; version=1; order=dfs; dups=n"));
    assert!(car.header("etag").is_some());
    let (header, blocks) = parse_car(&car.body);
    assert!(header.windows(root.to_bytes().len()).any(|w| w == root.to_bytes()), "root named in the header");
    assert_eq!(blocks[0].0, root, "depth-first: root first");
    let distinct: HashSet<&Cid> = blocks.iter().map(|(c, _)| c).collect();
    assert_eq!(distinct.len(), blocks.len(), "no duplicates");
    for (cid, data) in &blocks {
        assert!(block_matches(cid, data), "{cid} does not hash to its CID");
        assert!(data.len() <= 1 << 20);
    }
    let map = blocks.iter().cloned().collect();
    let mut bytes = Vec::new();
    reassemble(&root, &map, &mut bytes);
    assert!(bytes == nar, "CAR reassembles to nix-store --dump");

    for (cid, data) in &blocks {
        let r = get(&format!("{}/ipfs/{cid}?format=raw", d.url)).await;
        assert_eq!(r.status, 200);
        assert_eq!(&r.body, data);
        assert_eq!(r.header("content-type"), Some("application/vnd.ipld.raw"));
        assert_eq!(r.header("content-disposition"), Some(format!("attachment; filename=\"{cid}.bin\"").as_str()));
    }
    let by_accept = request(
        &client(),
        "GET",
        &format!("{}/ipfs/{}", d.url, blocks[1].0),
        &[("accept", "application/vnd.ipld.raw")],
    )
    .await;
    assert_eq!((by_accept.status, &by_accept.body), (200, &blocks[1].1));
    let head = request(&client(), "HEAD", &format!("{}/ipfs/{root}?format=car", d.url), &[]).await;
    assert_eq!((head.status, head.body.len()), (200, 0));

    let one = get(&format!("{}/ipfs/{root}?format=car&dag-scope=block", d.url)).await;
    let (_, only) = parse_car(&one.body);
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].0, root);

    assert_eq!(get(&format!("{}/ipfs/bafkqaaa", d.url)).await.status, 200);
    for (url, status) in [
        (format!("{}/ipfs/not-a-cid?format=raw", d.url), 400),
        (format!("{}/ipfs/{root}", d.url), 400),
        (format!("{}/ipfs/{root}?format=tar", d.url), 400),
        (format!("{}/ipfs/{root}?format=car&dag-scope=some", d.url), 400),
        (format!("{}/ipfs/{}?format=raw", d.url, peerix::ipld::raw_cid(b"nobody has this")), 404),
    ] {
        let r = get(&url).await;
        assert_eq!(r.status, status, "{url}");
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn private_paths_blocks_are_reachable_nowhere() {
    let p = published();
    let d = p.daemon();
    // The daemon's own scan has decided too (a gate bug there could publish the path late).
    d.wait_log("index scan finished");
    // The private path's chunks, computed the way the indexer would. (Bitswap, the block protocol
    // and the DHT refuse them in privacy_gate.rs's `a_private_path_is_refused_on_every_peer_interface`.)
    let fs_path = p.store.join(&p.private[1..]);
    let nar = p.nar(&p.private);
    let hash = peerix::nix::hash::NarHash(<[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(&nar)));
    let chunked = peerix::publish::chunk_path(fs_path, (hash, nar.len() as u64)).unwrap();
    assert!(chunked.chunks.len() >= 2);
    let c = client();
    let mut cids: Vec<Cid> = chunked.chunks.iter().map(|(_, _, cid)| *cid).collect();
    cids.push(chunked.root);
    for cid in cids {
        assert_eq!(get(&format!("{}/ipfs/{cid}?format=raw", d.url)).await.status, 404);
        assert_eq!(get(&format!("{}/ipfs/{cid}?format=car", d.url)).await.status, 404);
        for rpc in ["block/get", "block/stat", "cat", "dag/export"] {
            let r = request(&c, "POST", &format!("{}/api/v0/{rpc}?arg={cid}", d.url), &[]).await;
            assert_eq!(r.status, 404, "{rpc} {cid}");
        }
    }
    let info = get(&format!("{}/api/paths/{}", d.url, hash_part(&p.private))).await;
    let v: serde_json::Value = serde_json::from_slice(&info.body).unwrap();
    assert_eq!(v["gate"]["shared"], false);
    assert!(v["gate"]["reason"].as_str().unwrap().contains("no trusted signature"), "{v}");
    assert!(v["index"]["root_cid"].is_null());
    // Nor does the narinfo route show it.
    assert_eq!(get(&format!("{}/{}.narinfo", d.url, hash_part(&p.private))).await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn kubo_rpc_subset_behaves_like_kubo() {
    let p = published();
    let d = p.daemon();
    let root = root_of(&d, &p.shared).await;
    let nar = p.nar(&p.shared);
    let c = client();
    let rpc = |path: &str| format!("{}/api/v0/{path}", d.url);

    let block = request(&c, "POST", &rpc(&format!("block/get?arg={root}")), &[]).await;
    assert_eq!(block.status, 200);
    assert!(block_matches(&root, &block.body));
    let stat = request(&c, "POST", &rpc(&format!("block/stat?arg=/ipfs/{root}")), &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&stat.body).unwrap();
    assert_eq!(
        (v["Key"].as_str().unwrap(), v["Size"].as_u64().unwrap()),
        (root.to_string().as_str(), block.body.len() as u64)
    );

    let cat = request(&c, "POST", &rpc(&format!("cat?arg={root}")), &[]).await;
    assert!(cat.status == 200 && cat.body == nar, "cat returns the NAR");
    let part = request(&c, "POST", &rpc(&format!("cat?arg={root}&offset=70000&length=300000")), &[]).await;
    assert!(part.body == nar[70000..370000], "cat with offset and length");

    let export = request(&c, "POST", &rpc(&format!("dag/export?arg={root}")), &[]).await;
    let gateway = get(&format!("{}/ipfs/{root}?format=car", d.url)).await;
    assert_eq!(export.body, gateway.body);

    let id = request(&c, "POST", &rpc("id"), &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&id.body).unwrap();
    let status: serde_json::Value = serde_json::from_slice(&get(&format!("{}/api/status", d.url)).await.body).unwrap();
    assert!(v["ID"].as_str().unwrap().starts_with("12D3KooW"));
    assert_eq!(v["ID"], status["peer_id"]);

    for (method, path, status) in [
        ("GET", format!("block/get?arg={root}"), 405),
        ("POST", "block/get".to_owned(), 400),
        ("POST", "block/get?arg=garbage".to_owned(), 400),
        ("POST", format!("block/get?arg={}", peerix::ipld::raw_cid(b"absent")), 404),
    ] {
        let r = request(&c, method, &rpc(&path), &[]).await;
        assert_eq!(r.status, status, "{method} {path}");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["Type"], "error");
        assert!(v["Message"].as_str().is_some() && v["Code"].as_u64().is_some());
    }

    // kubo's own client library (what reads real kubo answers) against the same daemon: it must
    // parse every answer, get the same bytes, and surface our errors with their statuses.
    let out = p.w.path("rpc-client");
    fs::create_dir_all(&out).unwrap();
    let args = [d.url.clone(), root.to_string(), out.to_str().unwrap().to_owned()];
    let summary = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::helia::run("rpc.mjs", &args)
    })
    .await
    .unwrap();
    let s: serde_json::Value = serde_json::from_str(summary.trim()).expect("rpc.mjs prints JSON");
    assert_eq!(fs::read(out.join("block")).unwrap(), block.body);
    assert!(fs::read(out.join("cat")).unwrap() == nar, "kubo-rpc-client cat returns the NAR");
    assert!(fs::read(out.join("part")).unwrap() == nar[70000..370000]);
    assert_eq!(fs::read(out.join("car")).unwrap(), gateway.body);
    assert_eq!(s["stat"]["cid"], root.to_string());
    assert_eq!(s["stat"]["size"], block.body.len() as u64);
    assert_eq!(s["id"]["id"], status["peer_id"]);
    assert_eq!((&s["bad"]["status"], &s["missing"]["status"]), (&400.into(), &404.into()), "{s}");
    assert!(s["bad"]["message"].as_str().unwrap().contains("invalid CID"), "{s}");
    assert!(s["missing"]["message"].as_str().unwrap().contains("not found"), "{s}");
}

#[test]
fn roots_are_stable_across_runs_and_stores() {
    let w = Work::new();
    let src = tree(w.dir.path(), "same", 9);
    let mut roots = Vec::new();
    for n in 0..2 {
        let store = w.path(&format!("store{n}"));
        let path = run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(&src));
        for run_no in 0..2 {
            let state = w.path(&format!("state{n}-{run_no}"));
            run(&mut peerix_cmd("publish", &state, &["--store-root", store.to_str().unwrap(), "--serve-private"]));
            roots.push(indexed_root(&state, &path).expect("indexed"));
        }
    }
    assert!(roots.iter().all(|r| *r == roots[0]), "{roots:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vanished_path_drops_out_and_verify_reports_it() {
    let p = published();
    let d = p.daemon();
    let root = root_of(&d, &p.shared).await;
    let car = get(&format!("{}/ipfs/{root}?format=car", d.url)).await;
    let (_, blocks) = parse_car(&car.body);
    let chunk = blocks.iter().find(|(c, _)| c.codec() == 0x55).unwrap().0;
    assert_eq!(get(&format!("{}/ipfs/{chunk}?format=raw", d.url)).await.status, 200);
    let args = ["--store-root", p.store.to_str().unwrap(), "--trusted-public-key", &p.pk];
    run(&mut peerix_cmd("verify", &p.w.path("state"), &args));

    // The files disappear from the store (the DB still lists the path).
    let files = p.store.join(&p.shared[1..]);
    run(std::process::Command::new("chmod").args(["-R", "u+w"]).arg(p.store.join("nix/store")));
    fs::remove_dir_all(&files).unwrap();
    let verify = peerix_cmd("verify", &p.w.path("state"), &args).output().unwrap();
    assert!(!verify.status.success());
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(out.contains("BAD") && out.contains(&p.shared), "{out}");

    // Missing, never wrong.
    assert_eq!(get(&format!("{}/ipfs/{chunk}?format=raw", d.url)).await.status, 404);
    assert_eq!(get(&format!("{}/ipfs/{root}?format=raw", d.url)).await.status, 404);

    // Repairing writes the index: it needs the daemon stopped (tests/publish_beside_a_daemon.rs).
    drop(d);
    run(&mut peerix_cmd("verify", &p.w.path("state"), &[&args[..], &["--repair"]].concat()));
    let clean = run(&mut peerix_cmd("verify", &p.w.path("state"), &args));
    assert!(clean.contains(": 0 bad"), "{clean}");
}
