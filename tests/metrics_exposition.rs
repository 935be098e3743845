//! `/metrics` is valid OpenMetrics text — parsed by Prometheus's own Python parser, not matched
//! with patterns — and its counters move with the traffic that caused them: narinfo hits and
//! misses with their latency by outcome, NAR bytes served, requests by route and status.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::*;

async fn scrape(d: &Daemon) -> HashMap<String, f64> {
    let r = get(&format!("{}/metrics", d.url)).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("application/openmetrics-text"));
    parse_openmetrics(&r.body)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_move_with_traffic() {
    let w = Work::new();
    let src = w.path("tree");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("data"), pseudo_random(2_000_000, 3)).unwrap();
    let store = w.path("store");
    let path = run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(&src));
    let d = Daemon::start(
        &w.path("state"),
        &["--store-root", store.to_str().unwrap(), "--serve-private", "--p2p-listen", "/ip4/127.0.0.1/tcp/0"],
    );
    let nar_len = nix_dump(&store.join(&path[1..])).len() as f64;
    let before = scrape(&d).await;
    let m = |s: &HashMap<String, f64>, k: &str| s.get(k).copied().unwrap_or(0.0);

    let nar_url = format!("{}/{}", d.url, nar_url_of_store(&d, &path).await); // One narinfo hit.
    for _ in 0..3 {
        assert_eq!(get(&nar_url).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&format!("{}/{}.narinfo", d.url, "0".repeat(32))).await.status, 404);
    }
    assert_eq!(get(&format!("{}/nar/{}.nar", d.url, "!".repeat(52))).await.status, 400);
    let after = scrape(&d).await;

    let moved = |k: &str| m(&after, k) - m(&before, k);
    assert_eq!(moved("peerix_narinfo_hits_total{}"), 1.0, "{after:#?}");
    assert_eq!(moved("peerix_narinfo_misses_total{}"), 2.0);
    assert_eq!(moved("peerix_nars_served_total{}"), 3.0);
    assert_eq!(moved("peerix_nar_served_bytes_total{}"), 3.0 * nar_len);
    assert_eq!(moved("peerix_http_requests_total{route=narinfo,status=200}"), 1.0);
    assert_eq!(moved("peerix_http_requests_total{route=narinfo,status=404}"), 2.0);
    assert_eq!(moved("peerix_http_requests_total{route=nar,status=200}"), 3.0);
    assert_eq!(moved("peerix_http_requests_total{route=nar,status=400}"), 1.0);
    assert_eq!(moved("peerix_narinfo_lookup_seconds_count{outcome=local}"), 1.0);
    assert_eq!(moved("peerix_narinfo_lookup_seconds_count{outcome=miss}"), 2.0);
    assert!(m(&after, "peerix_narinfo_lookup_seconds_sum{outcome=miss}") > 0.0);
    // The node's own counters are there, and the scrape itself was counted.
    assert!(after.contains_key("peerix_bitswap_blocks_sent_total{}"), "{after:#?}");
    assert_eq!(moved("peerix_http_requests_total{route=metrics,status=200}"), 1.0);

    // Connected peers by discovery and link: one that dialled us, directly.
    let _peer = common::rogue::Rogue::start(Default::default(), Some(&d.p2p_addr())).await;
    d.wait_status("a connected peer", |s| s["connected_peers"].as_array().is_some_and(|p| p.len() == 1)).await;
    let with_peer = scrape(&d).await;
    assert_eq!(m(&with_peer, "peerix_peers_connected{found=inbound,link=direct}"), 1.0, "{with_peer:#?}");
}
