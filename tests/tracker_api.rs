//! `peerix tracker` refuses what it must — a bad signature, a replay, another peer's id, a body too
//! large, malformed JSON, a stale timestamp, a delta on the wrong generation — with a 4xx and a
//! one-line reason, and changes nothing in its database when it does; it records the address it
//! saw, not one a client claims; it shows private addresses only to their own network; records
//! live while heartbeats come and expire when they stop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::tracker::{Announcer, hashes, start_tracker};
use common::*;
use serde_json::Value;

async fn post(t: &Daemon, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let c = client();
    let mut rb = c.post(format!("{}/v1/announce", t.url)).header("content-type", "application/json");
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.body(body.to_owned()).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Writes `request` on a new connection and reads until the server closes it.
async fn exchange(t: &Daemon, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(t.addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn providers(t: &Daemon, hash: &str) -> Vec<Value> {
    let r = get(&format!("{}/v1/providers/{hash}", t.url)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["providers"].as_array().unwrap().clone()
}

/// Every row of the tracker's tables, in order.
fn dump(state: &Path) -> Vec<String> {
    let db = rusqlite::Connection::open(state.join("tracker.sqlite")).unwrap();
    let mut rows = Vec::new();
    for table in ["peers", "paths", "nonces"] {
        let mut q = db.prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2")).unwrap();
        let n = q.column_count();
        let mut r = q.query([]).unwrap();
        while let Some(row) = r.next().unwrap() {
            let cells: Vec<String> = (0..n)
                .map(|i| match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    other => format!("{other:?}"),
                })
                .collect();
            rows.push(format!("{table}: {}", cells.join(" | ")));
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_announcements_are_refused_and_change_nothing() {
    let w = Work::new();
    let state = w.path("tracker");
    let t = start_tracker(&state, &[]);
    let me = Announcer::new();
    let paths = hashes(3, 1);
    let first = me.sign(&me.announcement(1, None, &paths));
    assert_eq!(post(&t, &first, &[]).await.0, 200);
    let before = dump(&state);
    assert!(before.iter().any(|r| r.contains(&paths[0])), "{before:?}");

    let mut refusals: Vec<(&str, String, u16, &str)> = Vec::new();
    // The payload changed after signing.
    let a = me.announcement(2, None, &hashes(5, 2));
    let mut signed: Value = serde_json::from_str(&me.sign(&a)).unwrap();
    let payload = signed["payload"].as_str().unwrap().replace("tcp/4001", "tcp/4002");
    signed["payload"] = Value::String(payload);
    refusals.push(("bad signature", signed.to_string(), 403, "signature does not verify"));
    // The same bytes again.
    refusals.push(("replay", first.clone(), 409, "replayed"));
    // Another peer's id, signed with my key.
    let victim = Announcer::new();
    let mut forged = me.announcement(1, None, &hashes(1, 3));
    forged.peer_id = victim.peer_id.clone();
    refusals.push(("another peer's id", me.sign(&forged), 403, "signature does not verify"));
    refusals.push(("malformed JSON", "{\"payload\": ".into(), 400, "malformed JSON"));
    refusals.push(("not an announcement", "{\"payload\": \"[]\", \"signature\": \"\"}".into(), 400, "not a valid"));
    let mut stale = me.announcement(2, None, &paths);
    stale.timestamp -= 3600;
    refusals.push(("stale timestamp", me.sign(&stale), 400, "stale timestamp"));
    let mut future = me.announcement(2, None, &paths);
    future.timestamp += 3600;
    refusals.push(("timestamp in the future", me.sign(&future), 400, "stale timestamp"));
    // `now - ts` wrapped for a timestamp near i64::MIN and passed as no skew at all.
    let mut wrapping = me.announcement(1, None, &paths);
    wrapping.timestamp = wrapping.timestamp.wrapping_add(i64::MIN);
    refusals.push(("timestamp that wraps", me.sign(&wrapping), 400, "stale timestamp"));
    refusals.push(("delta on the wrong generation", me.sign(&me.announcement(8, Some(7), &paths)), 409, "full"));
    let mut bad_hash = me.announcement(2, None, &paths);
    bad_hash.full.as_mut().unwrap().push("<script>".into());
    refusals.push(("a hash that is not one", me.sign(&bad_hash), 400, "not a store path hash"));
    let mut bad_addr = me.announcement(2, None, &paths);
    bad_addr.addrs = vec!["http://evil".into()];
    refusals.push(("an address that is not one", me.sign(&bad_addr), 400, "not a multiaddr"));
    let mut many = me.announcement(2, None, &paths);
    many.addrs = vec!["/ip4/127.0.0.1/tcp/1".into(); 17];
    refusals.push(("too many addresses", me.sign(&many), 400, "addresses"));

    for (what, body, status, reason) in refusals {
        let (got, text) = post(&t, &body, &[]).await;
        assert_eq!(got, status, "{what}: {text}");
        assert!(text.contains(reason) && text.trim().lines().count() == 1, "{what}: {text:?}");
        assert_eq!(dump(&state), before, "{what} changed the tracker's records");
    }
    // 9 MiB of body: refused from its Content-Length, before a byte of it is read.
    let head = format!(
        "POST /v1/announce HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        9 << 20
    );
    let answer = exchange(&t, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413") && answer.contains("too large"), "{answer}");
    assert_eq!(dump(&state), before, "an over-size announcement changed the tracker's records");

    // A delta on the right generation still applies.
    let delta = me.sign(&me.announcement(2, Some(1), &hashes(1, 9)));
    assert_eq!(post(&t, &delta, &[]).await.0, 200);
    assert_eq!(providers(&t, &hashes(1, 9)[0]).await.len(), 1);

    // /metrics is OpenMetrics (the reference parser reads it) and counted all of the above.
    let m = parse_openmetrics(&get(&format!("{}/metrics", t.url)).await.body);
    assert_eq!(m["peerix_tracker_announces_total{outcome=accepted}"], 2.0, "{m:?}");
    assert_eq!(m["peerix_tracker_announces_total{outcome=refused}"], 12.0, "{m:?}");
    assert_eq!(m["peerix_tracker_lookups_total{found=yes}"], 1.0, "{m:?}");
    assert_eq!(m["peerix_tracker_peers{}"], 1.0, "{m:?}");

    // A route the tracker does not have is a 404 in one line, like every error it answers.
    let r = get(&format!("{}/v2/no-such-route", t.url)).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.text(), "no such resource\n");
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_recorded_address_is_the_one_seen_and_private_ones_stay_in_their_network() {
    let w = Work::new();
    let state = w.path("tracker");
    let t = start_tracker(&state, &[]);
    let me = Announcer::new();
    let paths = hashes(1, 4);
    let mut a = me.announcement(1, None, &paths);
    a.addrs =
        vec!["/ip4/127.0.0.1/tcp/4001".into(), "/ip4/192.168.1.2/tcp/4001".into(), "/ip4/203.0.113.7/tcp/4001".into()];
    let (status, text) = post(&t, &me.sign(&a), &[("x-forwarded-for", "198.51.100.66")]).await;
    assert_eq!(status, 200, "{text}");
    let seen = dump(&state).into_iter().find(|r| r.starts_with("peers:")).unwrap();
    assert!(seen.contains("127.0.0.1") && !seen.contains("198.51.100.66"), "{seen}");
    let found = providers(&t, &paths[0]).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["peer_id"], me.peer_id);
    // A loopback requester is not in 192.168/16.
    assert_eq!(found[0]["addrs"], serde_json::json!(["/ip4/127.0.0.1/tcp/4001", "/ip4/203.0.113.7/tcp/4001"]));
    assert_eq!(get(&format!("{}/v1/providers/not-a-hash", t.url)).await.status, 400);
    assert_eq!(providers(&t, &hashes(1, 5)[0]).await.len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn records_live_while_heartbeats_come_and_expire_when_they_stop() {
    let w = Work::new();
    let t = start_tracker(&w.path("tracker"), &["--ttl", "2"]);
    let (kept, gone) = (Announcer::new(), Announcer::new());
    let shared = hashes(1, 6);
    assert_eq!(post(&t, &kept.sign(&kept.announcement(1, None, &shared)), &[]).await.0, 200);
    assert_eq!(post(&t, &gone.sign(&gone.announcement(1, None, &shared)), &[]).await.0, 200);
    assert_eq!(providers(&t, &shared[0]).await.len(), 2);
    // Heartbeats (deltas that change nothing) from one peer for three TTLs; the other is silent.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(6);
    let mut last = Vec::new();
    while std::time::Instant::now() < until {
        let beat = kept.sign(&kept.announcement(1, Some(1), &[]));
        assert_eq!(post(&t, &beat, &[]).await.0, 200);
        last = providers(&t, &shared[0]).await;
        assert!(last.iter().any(|p| p["peer_id"] == kept.peer_id), "a heartbeating peer expired");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(last.len(), 1, "the silent peer outlived its TTL: {last:?}");
    let status: Value = serde_json::from_slice(&get(&format!("{}/v1/status", t.url)).await.body).unwrap();
    assert_eq!((status["peers"].as_u64(), status["paths"].as_u64()), (Some(1), Some(1)), "{status}");
    // The sweep removes the silent peer's rows.
    t.wait_log("expired peers");
}

/// 200 peers announce 500 paths each while 5 000 lookups run at once: no errors, and the
/// tracker's memory stays bounded. (Lookups per second and p99 are printed for the notes.)
#[tokio::test(flavor = "multi_thread")]
async fn many_announcers_and_five_thousand_concurrent_lookups() {
    let w = Work::new();
    let t = start_tracker(&w.path("tracker"), &[]);
    let c = client();
    let announcers: Vec<Announcer> = (0..200).map(|_| Announcer::new()).collect();
    let mut tasks = Vec::new();
    for (i, a) in announcers.iter().enumerate() {
        let body = a.sign(&a.announcement(1, None, &hashes(500, i as u64 % 50)));
        let (c, url) = (c.clone(), format!("{}/v1/announce", t.url));
        tasks.push(tokio::spawn(async move {
            c.post(url).header("content-type", "application/json").body(body).send().await.unwrap().status().as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let wanted = hashes(500, 7);
    let started = std::time::Instant::now();
    let lookups: Vec<_> = (0..5000)
        .map(|i| {
            let url = format!("{}/v1/providers/{}", t.url, wanted[i % wanted.len()]);
            let c = c.clone();
            tokio::spawn(async move {
                let t0 = std::time::Instant::now();
                let r = c.get(url).send().await.unwrap();
                let status = r.status().as_u16();
                let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
                (status, v["providers"].as_array().map(Vec::len).unwrap_or(0), t0.elapsed())
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for l in lookups {
        let (status, n, took) = l.await.unwrap();
        assert_eq!((status, n), (200, 4), "hashes of seed 7 are announced by the 4 peers with i % 50 == 7");
        latencies.push(took);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let rss = std::fs::read_to_string(format!("/proc/{}/status", t.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_owned()))
        .unwrap();
    eprintln!(
        "5000 lookups in {:?}: {:.0}/s, p50 {:?}, p99 {:?}; tracker peak RSS {rss}",
        elapsed,
        5000.0 / elapsed.as_secs_f64(),
        latencies[2500],
        latencies[4950]
    );
    let kib: u64 = rss.split_whitespace().next().unwrap().parse().unwrap();
    assert!(kib < 256 << 10, "tracker peak RSS {rss}");
}

/// The documented limit is the real one: an announcement of `MAX_PATHS` paths is taken whole
/// (axum's default 2 MiB body limit refused anything over ~56 000), and the README states the
/// limits the code has.
#[tokio::test(flavor = "multi_thread")]
async fn the_largest_announcement_the_docs_allow_is_accepted() {
    use peerix::tracker_wire::{MAX_ANNOUNCEMENT_BYTES, MAX_PATHS};
    let w = Work::new();
    let t = start_tracker(&w.path("tracker"), &[]);
    let me = Announcer::new();
    let paths = hashes(MAX_PATHS, 77);
    let body = me.sign(&me.announcement(1, None, &paths));
    assert!(body.len() > 2 << 20 && body.len() <= MAX_ANNOUNCEMENT_BYTES, "{}", body.len());
    let (status, text) = post(&t, &body, &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(providers(&t, &paths[MAX_PATHS - 1]).await.len(), 1);
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let documented =
        format!("over {} MiB or {} {:03} paths", MAX_ANNOUNCEMENT_BYTES >> 20, MAX_PATHS / 1000, MAX_PATHS % 1000);
    assert!(readme.contains(&documented), "README must say {documented:?}");
}

/// Forty keys made for the purpose, announcing a path from one network, do not push its one
/// long-lived honest provider out of the answer; their records keep no address but their own;
/// and an older announcement does not roll a record back.
#[tokio::test(flavor = "multi_thread")]
async fn sybils_cannot_hide_an_honest_provider_or_point_peers_elsewhere() {
    let w = Work::new();
    // Behind a "proxy" on loopback, so X-Forwarded-For names each announcer's address.
    let t = start_tracker(&w.path("tracker"), &["--trust-proxy", "127.0.0.1"]);
    let path = hashes(1, 41);
    let honest = Announcer::new();
    let mut a = honest.announcement(1, None, &path);
    a.addrs = vec!["/ip4/198.51.100.7/tcp/12306".into()];
    assert_eq!(post(&t, &honest.sign(&a), &[("x-forwarded-for", "198.51.100.7")]).await.0, 200);
    // The record's first_seen is in whole seconds: the Sybils come a second later.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for i in 0..40 {
        let sybil = Announcer::new();
        let mut s = sybil.announcement(1, None, &path);
        s.addrs = vec!["/ip4/203.0.113.80/tcp/80".into(), format!("/ip4/203.0.113.{i}/tcp/1")];
        let (status, text) = post(&t, &sybil.sign(&s), &[("x-forwarded-for", &format!("203.0.113.{i}"))]).await;
        assert_eq!(status, 200, "{text}");
    }
    for _ in 0..10 {
        let found = providers(&t, &path[0]).await;
        assert!(found.iter().any(|p| p["peer_id"] == honest.peer_id), "the honest provider is hidden: {found:?}");
        assert!(found.len() <= 3, "one /24 filled more than two places: {found:?}");
        for p in &found {
            assert!(!p["addrs"].to_string().contains("203.0.113.80/"), "a victim's address was handed out: {p}");
        }
    }
    // An older announcement (its timestamp before the record's) is refused and changes nothing.
    let mut older = honest.announcement(1, None, &[]);
    older.timestamp -= 60;
    let (status, text) = post(&t, &honest.sign(&older), &[("x-forwarded-for", "198.51.100.7")]).await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("roll the record back"), "{text}");
    assert!(providers(&t, &path[0]).await.iter().any(|p| p["peer_id"] == honest.peer_id));
}
