//! Hostile DAGs stop every reader: a Helia node serves, by bitswap, file DAGs built to cost their
//! reader memory or time — a node with 9 000 links, blocksizes that lie about the bytes below, a
//! chain 20 nodes deep, and three blocks that claim 64 million pieces by repeating one CID at each
//! level. `peerix fetch` (the RPC's `cat` over bitswap) refuses each with the bound it broke and
//! keeps the blocks it fetched, verified; then the same DAGs, now local, are refused by the local
//! `cat` (a 400 before any byte), the gateway's CAR and the RPC's `dag/export` (an aborted body) —
//! the one walk (`ipld::walk`) behind all of them. A genuine file beside them comes through
//! whole, and the daemon keeps serving. (The peer NAR transfer's refusals, by the same walk, are
//! in `dishonest_peers.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use cid::Cid;
use common::helia::Script;
use common::*;
use peerix::ipld::unixfs::{Link, encode_file_node};
use peerix::ipld::{car, dag_pb_cid, raw_cid, unixfs};

/// A file node over `n` copies of one link.
fn repeated(cid: Cid, file_size: u64, n: usize) -> (Cid, Vec<u8>) {
    let node = encode_file_node(&vec![Link { cid, file_size, dag_size: file_size }; n]);
    (dag_pb_cid(&node), node)
}

struct Fixture {
    blocks: Vec<(Cid, Vec<u8>)>,
    genuine: (Cid, Vec<u8>),
    /// (what it is, root, the phrase its refusal names)
    hostile: Vec<(&'static str, Cid, String)>,
    /// The middle of the repeated-CID DAG: a fair file by itself (8 000 bytes).
    laughs_inner: Cid,
}

fn fixture() -> Fixture {
    let mut blocks = Vec::new();
    let chunks: Vec<Vec<u8>> = (0..3).map(|i| pseudo_random(200_000, i)).collect();
    for c in &chunks {
        blocks.push((raw_cid(c), c.clone()));
    }
    let dag = unixfs::build(&chunks.iter().map(|c| (raw_cid(c), c.len() as u64)).collect::<Vec<_>>());
    blocks.extend(dag.nodes.iter().cloned());
    let genuine = (dag.root, chunks.concat());

    let x = raw_cid(b"x");
    blocks.push((x, b"x".to_vec()));
    let wide = repeated(x, 1, 9000);
    // Says 6 bytes are under the child; the child's own blocksizes add up to 5.
    let child = repeated(x, 1, 5);
    let liar = encode_file_node(&[Link { cid: child.0, file_size: 6, dag_size: 6 }]);
    let liar = (dag_pb_cid(&liar), liar);
    let mut deep = (x, Vec::new());
    for _ in 0..20 {
        deep = repeated(deep.0, 1, 1);
        blocks.push(deep.clone());
    }
    let inner = repeated(x, 1, 8000);
    let middle = repeated(inner.0, 8000, 8000);
    let laughs = repeated(middle.0, 64_000_000, 8000);
    let hostile = vec![
        ("9 000 links", wide.0, "bounds (links per node)".to_owned()),
        ("lying blocksizes", liar.0, format!("node {} describes 5 bytes where 6 were expected", child.0)),
        ("20 levels", deep.0, "bounds (depth)".to_owned()),
        ("repeated CIDs", laughs.0, "bounds (nodes)".to_owned()),
    ];
    blocks.extend([wide, child, liar, inner.clone(), middle, laughs]);
    Fixture { blocks, genuine, hostile, laughs_inner: inner.0 }
}

fn write_car(path: &std::path::Path, root: &Cid, blocks: &[(Cid, Vec<u8>)]) {
    let mut out = car::header(root);
    for (cid, data) in blocks {
        out.extend(car::block_prefix(cid, data.len()));
        out.extend(data);
    }
    std::fs::write(path, out).unwrap();
}

/// `peerix fetch` of `cid`: its output (or stderr) and how long it took.
fn fetch(d: &Daemon, cid: &Cid, out: &std::path::Path) -> (bool, String, Duration) {
    let started = Instant::now();
    let f = d.fetch(&cid.to_string(), out);
    (f.status.success(), String::from_utf8_lossy(&f.stderr).into_owned(), started.elapsed())
}

/// POSTs or GETs `url` and reads the body to its end: the status (none when the connection broke
/// before the head: hyper sends the head with the first body bytes, so a body that fails at once
/// takes the head with it) and the body, or why it did not complete.
async fn read_all(method: reqwest::Method, url: &str) -> (Option<u16>, Result<Vec<u8>, String>) {
    match client().request(method, url).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (Some(status), resp.bytes().await.map(|b| b.to_vec()).map_err(|e| e.to_string()))
        }
        Err(e) => (None, Err(e.to_string())),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_dags_are_refused_by_bitswap_cat_gateway_and_car_export() {
    let w = Work::new();
    let f = fixture();
    let car_file = w.path("dags.car");
    write_car(&car_file, &f.genuine.0, &f.blocks);
    let mut helia = Script::spawn("serve-car.mjs", &[car_file.to_str().unwrap()]);
    let mut lines = BufReader::new(helia.0.stdout.take().unwrap()).lines();
    let hello: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let addr = hello["addr"].as_str().unwrap().to_owned();

    let d = Daemon::start(&w.path("state"), &["--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", &addr]);
    d.wait_log("peer connected");

    // The genuine file comes through whole: the path works, so each refusal below is the DAG's.
    let out = w.path("out.bin");
    let (ok, err, _) = fetch(&d, &f.genuine.0, &out);
    assert!(ok, "{err}\n{}", d.log());
    assert!(std::fs::read(&out).unwrap() == f.genuine.1, "the genuine file differs");

    // Over bitswap: each hostile DAG is refused, naming its bound, within seconds.
    for (what, root, phrase) in &f.hostile {
        let (ok, err, took) = fetch(&d, root, &out);
        assert!(!ok && err.contains(phrase), "{what}: {err}\n{}", d.log());
        assert!(took < Duration::from_secs(10), "{what}: refused after {took:?}");
    }
    // The repeated-CID DAG stopped while its third level was being named; fetch that level's
    // node by itself (a fair 8 000-byte file) so the whole DAG is local for the readers below.
    let (ok, err, _) = fetch(&d, &f.laughs_inner, &out);
    assert!(ok && std::fs::read(&out).unwrap() == vec![b'x'; 8000], "{err}");

    // Local now. The RPC's `cat` plans the file before it answers: a 400 naming the bound.
    for (what, root, phrase) in &f.hostile {
        let url = format!("{}/api/v0/cat?arg={root}&offline=true", d.url);
        let (status, body) = read_all(reqwest::Method::POST, &url).await;
        let body = String::from_utf8_lossy(&body.unwrap()).into_owned();
        assert!(status == Some(400) && body.contains(phrase.as_str()), "{what} by cat: {status:?} {body}");
    }
    // A CAR streams as it walks (the trustless gateway's way): the transfer is aborted where the
    // DAG broke a rule (never a clean short CAR), the log naming it.
    let gateway = |root: &Cid| format!("{}/ipfs/{root}?format=car", d.url);
    for (what, root, phrase) in &f.hostile[..3] {
        let export = format!("{}/api/v0/dag/export?arg={root}", d.url);
        for (reader, method, url) in
            [("gateway CAR", reqwest::Method::GET, gateway(root)), ("dag/export", reqwest::Method::POST, export)]
        {
            let mark = d.mark();
            let (status, body) = read_all(method, &url).await;
            assert!(status.is_none_or(|s| s == 200) && body.is_err(), "{what} by {reader}: {status:?} {body:?}");
            let line = d.wait_log_after(mark, "response body aborted");
            assert!(line.contains(phrase.as_str()), "{what} by {reader}: {line}");
        }
    }
    // The repeated-CID DAG holds four distinct blocks: its CAR, which carries each block once, is
    // fair and complete.
    let laughs = f.hostile[3].1;
    let (status, body) = read_all(reqwest::Method::GET, &gateway(&laughs)).await;
    let (_, blocks) = parse_car(&body.expect("the CAR of four distinct blocks completes"));
    assert_eq!((status, blocks.len()), (Some(200), 4), "each distinct block once");

    // Still serving (its /health is 503 here: the test's store has no Nix database).
    assert_eq!(get(&format!("{}/nix-cache-info", d.url)).await.status, 200, "{}", d.log());
    drop(helia.0.stdin.take());
}
