//! Every input a fuzz target was ever seeded with or crashed on stays handled: the seeds
//! (`fuzz/seeds/<target>/`, real NARs, narinfos, keys and messages made by `write_seeds` below) and
//! the regression cases (`fuzz/regressions/<target>/`, each a crash `fuzz/run.sh` found and that
//! was fixed) go through the same `peerix::fuzzing` functions as the fuzzer, on stable Rust.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use peerix::fuzzing::TARGETS;
use peerix::p2p::{bitswap, have, narinfo};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

#[test]
fn seeds_and_past_crashes_are_handled() {
    let mut replayed = 0;
    for (name, check) in TARGETS {
        assert!(fuzz_dir().join(format!("fuzz_targets/{name}.rs")).exists(), "no fuzz target for {name}");
        for kind in ["seeds", "regressions"] {
            let Ok(entries) = fs::read_dir(fuzz_dir().join(kind).join(name)) else { continue };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = fs::read(&path).unwrap();
                if std::panic::catch_unwind(|| check(&data)).is_err() {
                    panic!("{name}: {} fails again", path.display());
                }
                replayed += 1;
            }
        }
        assert!(fs::read_dir(fuzz_dir().join("seeds").join(name)).is_ok_and(|d| d.count() > 0), "{name} has no seeds");
    }
    assert!(replayed >= TARGETS.len());
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    peerix::ipld::put_varint(&mut out, body.len() as u64);
    out.extend_from_slice(body);
    out
}

fn encode(msg: &impl prost::Message) -> Vec<u8> {
    msg.encode_to_vec()
}

/// Writes the seed corpora from real data (`fuzz/run.sh` runs it; the output is committed).
#[test]
#[ignore = "writes fuzz/seeds; run by fuzz/run.sh"]
fn write_seeds() {
    let w = Work::new();
    let seed = |target: &str, name: &str, data: &[u8]| {
        let dir = fuzz_dir().join("seeds").join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), data).unwrap();
    };

    // NARs of an awkward little tree, a single file and a symlink, as nix-store --dump makes them.
    let tree = w.path("tree");
    fs::create_dir_all(tree.join("bin/empty-dir")).unwrap();
    fs::write(tree.join("bin/run"), "#!/bin/sh\necho hi\n").unwrap();
    run(std::process::Command::new("chmod").arg("+x").arg(tree.join("bin/run")));
    fs::write(tree.join("data"), pseudo_random(3000, 1)).unwrap();
    fs::write(tree.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("bin/run", tree.join("link")).unwrap();
    seed("nar", "tree.nar", &nix_dump(&tree));
    seed("nar", "file.nar", &nix_dump(&tree.join("data")));
    seed("nar", "symlink.nar", &nix_dump(&tree.join("link")));

    // A signed path in a binary cache made by nix: its narinfo, hashes, key and signature.
    let (sk, pk) = w.keypair("fuzz-1");
    let f = w.build_fixture();
    w.sign(&f.top, &sk);
    let cache = w.binary_cache("cache", &[&f.top]);
    let narinfo_text = fs::read_to_string(cache.join(format!("{}.narinfo", hash_part(&f.top)))).unwrap();
    seed("narinfo", "top.narinfo", narinfo_text.as_bytes());
    seed("narinfo", "dep.narinfo", &fs::read(cache.join(format!("{}.narinfo", hash_part(&f.dep)))).unwrap());
    seed("nix32", "store-hash", hash_part(&f.top).as_bytes());
    let nar_hash = narinfo_text.lines().find_map(|l| l.strip_prefix("NarHash: sha256:")).unwrap();
    seed("nix32", "nar-hash", nar_hash.as_bytes());
    let info = peerix::nix::narinfo::NarInfo::parse(&narinfo_text).unwrap();
    let sig = narinfo_text.lines().find_map(|l| l.strip_prefix("Sig: ")).unwrap();
    seed("keys", "public-and-sig", format!("{pk}\n{}\n{sig}", info.fingerprint()).as_bytes());
    seed("keys", "secret", fs::read(&sk).unwrap().as_slice());

    // A published path's DAG: its root node, and the messages peers exchange about it.
    let store = w.path("store");
    let path = run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(&tree));
    let nar = nix_dump(&tree);
    let hash = peerix::nix::hash::NarHash(<[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(&nar)));
    let chunked = peerix::publish::chunk_path(store.join(&path[1..]), (hash, nar.len() as u64)).unwrap();
    let leaves: Vec<(cid::Cid, u64)> = chunked.chunks.iter().map(|(_, len, cid)| (*cid, *len as u64)).collect();
    let links: Vec<peerix::ipld::unixfs::Link> = leaves
        .iter()
        .map(|(cid, len)| peerix::ipld::unixfs::Link { cid: *cid, file_size: *len, dag_size: *len })
        .collect();
    seed("unixfs", "file-node", &peerix::ipld::unixfs::encode_file_node(&links));

    use bitswap::message::{Block, BlockPresence, Entry, HAVE, Message, WANT_BLOCK, WANT_HAVE, Wantlist};
    let first = leaves[0].0;
    let wants = Message {
        wantlist: Some(Wantlist {
            entries: vec![
                Entry {
                    block: first.to_bytes(),
                    priority: 1,
                    cancel: false,
                    want_type: WANT_HAVE,
                    send_dont_have: true,
                },
                Entry {
                    block: first.to_bytes(),
                    priority: 2,
                    cancel: true,
                    want_type: WANT_BLOCK,
                    send_dont_have: false,
                },
            ],
            full: false,
        }),
        ..Default::default()
    };
    let data = &nar[..leaves[0].1 as usize];
    let answer = Message {
        payload: vec![Block { prefix: bitswap::message::prefix_of(&first), data: bytes::Bytes::copy_from_slice(data) }],
        block_presences: vec![BlockPresence { cid: first.to_bytes(), r#type: HAVE }],
        ..Default::default()
    };
    seed("bitswap", "wants-then-answer", &[framed(&encode(&wants)), framed(&encode(&answer))].concat());

    let mut bloom = have::bloom::Bloom::with_capacity(100, 7);
    bloom.insert(&[1; 20]);
    let full = have::wire::Have {
        epoch: 9,
        generation: 1,
        full: Some(have::wire::Full {
            hashes: bloom.hashes(),
            seed: bloom.seed(),
            bits: bloom.bits().to_vec(),
            count: 1,
        }),
        delta: None,
    };
    let delta = have::wire::Have {
        epoch: 9,
        generation: 2,
        full: None,
        delta: Some(have::wire::Delta { base: 1, added: vec![vec![2; 20]], removed: vec![vec![1; 20]], count: 1 }),
    };
    seed("have", "full-then-delta", &[framed(&encode(&full)), framed(&encode(&delta))].concat());

    let root = chunked.root.to_bytes();
    let root_node = chunked.nodes.iter().find(|(c, _)| *c == chunked.root).map(|(_, n)| n.clone()).unwrap_or_default();
    let response = narinfo::wire::Response {
        narinfo: narinfo_text.clone(),
        root: root.clone(),
        closure: Vec::new(),
        root_node: root_node.clone(),
    };
    seed("narinfo_answer", "answer", &encode(&response));
    let hash = "0c6kzph7l0dcbfmjap64f0czdafn3b7x".into();
    let related = narinfo::wire::Related { hash, narinfo: narinfo_text.clone(), root, root_node };
    let with_closure = narinfo::wire::Response { closure: vec![related; 2], ..response };
    seed("narinfo_answer", "answer-with-closure", &encode(&with_closure));
    seed("narinfo_answer", "not-here", &encode(&narinfo::wire::Response::default()));

    for (name, spec) in
        [("first", "bytes=0-99"), ("open", "bytes=100-"), ("suffix", "bytes=-10"), ("two", "bytes=0-1,5-6")]
    {
        seed("range", name, &[&1000u64.to_le_bytes()[..], spec.as_bytes()].concat());
    }

    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let toml = readme.split("```toml").nth(1).and_then(|s| s.split("```").next()).expect("README has a TOML example");
    seed("config", "readme.toml", toml.as_bytes());

    // What nix 2.8 sends (nix-client-here.md), pipelined; a control POST; chunked bodies; and the
    // framing the server must refuse (hardening round 2).
    let nix = "GET /nix-cache-info HTTP/1.1\r\nHost: 127.0.0.1:12304\r\nUser-Agent: curl/7.88.1 Nix/2.8.0\r\nAccept: */*\r\n\r\n\
               HEAD /0c6kzph7l0dcbfmjap64f0czdafn3b7x.narinfo HTTP/1.1\r\nHost: 127.0.0.1:12304\r\nAccept: */*\r\n\r\n\
               GET /nar/1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h.nar HTTP/1.1\r\nHost: 127.0.0.1:12304\r\nRange: bytes=10-\r\n\r\n";
    seed("http", "nix-pipelined", nix.as_bytes());
    seed("http", "control", b"POST /api/index/pause HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
    seed("http", "chunked", b"POST /v1/announce HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4;x=1\r\nabcd\r\n0\r\nTrailer: 1\r\n\r\nGET / HTTP/1.0\r\n\r\n");
    seed(
        "http",
        "overflow",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\n",
    );
    seed(
        "http",
        "cl-te",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    seed("http", "absolute", b"GET http://evil.example/api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    seed("http", "expect", b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello");
}
