//! The operator's controls (the dashboard's buttons, plain JSON POSTs under `/api/`) do what they
//! say: a paused indexer leaves a new path alone until resumed, and a path signed after the gate
//! found it private is shared once checked again — not an hour later, when the private verdict
//! would expire.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;

async fn post(d: &Daemon, path: &str) -> (u16, Value) {
    let r = request(&client(), "POST", &format!("{}{path}", d.url), &[("content-type", "application/json")]).await;
    (r.status, serde_json::from_slice(&r.body).unwrap_or(Value::Null))
}

async fn index_status(d: &Daemon, store_path: &str) -> Value {
    let r = get(&format!("{}/api/paths/{}", d.url, hash_part(store_path))).await;
    serde_json::from_slice::<Value>(&r.body).unwrap()["index"]["status"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_indexer_leaves_new_paths_until_resumed() {
    let w = Work::new();
    let a = w.build_fixture();
    let store = w.chroot_store("s", &[&a.dep]);
    let d = Daemon::start(&w.path("state"), &["--store-root", store.to_str().unwrap(), "--serve-private"]);
    d.wait_log("index scan finished");
    assert_eq!(post(&d, "/api/index/pause").await, (200, serde_json::json!({ "paused": true })));

    let mark = d.mark();
    run(w.nix("nix").args(["copy", "--no-check-sigs", "--to"]).arg(&store).arg(&a.top));
    d.wait_log_after(mark, "indexing store paths");
    let s = d.status().await;
    assert_eq!((&s["scan"]["running"], &s["scan"]["paused"]), (&Value::Bool(true), &Value::Bool(true)), "{s}");
    assert_eq!(index_status(&d, &a.top).await, Value::Null, "a paused indexer published a path");
    assert_eq!(get(&format!("{}/health", d.url)).await.status, 200, "a paused indexer is not a stuck one");

    assert_eq!(post(&d, "/api/index/resume").await.0, 200);
    d.wait_log_after(mark, &format!("published path={}", a.top));
    assert_eq!(index_status(&d, &a.top).await, "published");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_signed_after_it_was_found_private_is_shared_once_checked_again() {
    let w = Work::new();
    let (sk, pk) = w.keypair("peerix-controls-1");
    let a = w.build_fixture();
    let store = w.chroot_store("s", &[&a.top]);
    let d = Daemon::start(&w.path("state"), &["--store-root", store.to_str().unwrap(), "--trusted-public-key", &pk]);
    d.wait_log("index scan finished");
    assert_eq!(index_status(&d, &a.top).await, "private");

    // Signed now; the next scan (the DB changed) keeps the private verdict until its TTL (1 h).
    let mark = d.mark();
    run(w.nix("nix").args(["store", "sign", "--store"]).arg(&store).args(["--key-file"]).arg(&sk).arg(&a.top));
    d.wait_log_after(mark, "index scan finished");
    assert_eq!(index_status(&d, &a.top).await, "private");

    let (status, answer) = post(&d, &format!("/api/paths/{}/recheck", hash_part(&a.top))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["shared"], true, "{answer}");
    assert_eq!(answer["changed"], true, "{answer}");
    assert_eq!(answer["verdict"], "signed", "{answer}");
    d.wait_log_after(mark, &format!("published path={}", a.top));
    assert_eq!(index_status(&d, &a.top).await, "published");
    assert_eq!(get(&format!("{}/{}.narinfo", d.url, hash_part(&a.top))).await.status, 200);

    // Asked again with nothing changed: the same verdict, nothing to do.
    let (_, again) = post(&d, &format!("/api/paths/{}/recheck", hash_part(&a.top))).await;
    assert_eq!((again["shared"].clone(), again["changed"].clone()), (Value::Bool(true), Value::Bool(false)));
}
