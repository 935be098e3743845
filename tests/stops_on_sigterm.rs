//! SIGTERM (and SIGINT, Ctrl-C) stops the daemon cleanly within 5 s in every state an operator
//! meets (systemd's stop, `timeout`, a container runtime): idle with its stderr reader gone, in the middle of indexing a
//! large store, and while a NAR download stalls in a slow client's socket. Each exits 0, and what
//! it had written stays sound (`peerix verify` finds it clean, a restart serves byte-exact NARs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

/// What systemd's default `TimeoutStopSec` would forgive is 90 s; we hold ourselves to 5.
const STOP_WITHIN: Duration = Duration::from_secs(5);

fn assert_clean_stop(d: &mut Daemon, state: &str) {
    assert_clean_stop_with(d, state, "-TERM");
}

fn assert_clean_stop_with(d: &mut Daemon, state: &str, signal: &str) {
    let (took, status) = d.stop_with(signal);
    let status = status.unwrap_or_else(|| panic!("{state}: still running 20 s after {signal}:\n{}", d.log()));
    assert!(status.success(), "{state}: exit status {status:?}:\n{}", d.log());
    assert!(took < STOP_WITHIN, "{state}: took {took:?} to stop:\n{}", d.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_its_stderr_reader_gone_it_keeps_serving_and_stops_on_sigterm() {
    let w = Work::new();
    let mut d = Daemon::start(&w.path("state"), &[]);
    d.close_stderr();
    // Every request logs at debug (the test daemon's level): the first closes the pipe, the rest
    // are written to a stderr nobody reads (EPIPE).
    for i in 0..50 {
        let miss = get(&format!("{}/{:032}.narinfo", d.url, i)).await;
        assert_eq!(miss.status, 404);
    }
    assert_eq!(get(&format!("{}/nix-cache-info", d.url)).await.status, 200, "still serving with stderr gone");
    assert!(d.alive(), "the daemon died when its stderr went away");
    assert_clean_stop(&mut d, "stderr gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn in_the_middle_of_indexing_it_stops_and_restarts_clean() {
    let w = Work::new();
    let store = w.path("store");
    let paths = w.add_files(&store, "data", (0..4).map(|i| pseudo_random(8 << 20, 70 + i)));
    let state = w.path("state");
    let args = ["--store-root", store.to_str().unwrap(), "--serve-private"];
    // 2 MB/s: the 32 MB take ~16 s, so SIGTERM lands inside a path's read.
    let mut d = Daemon::start(&state, &[&args[..], &["--index-rate", "2M"]].concat());
    d.wait_status("indexing under way", |s| {
        s["scan"]["running"] == true && s["scan"]["done_bytes"].as_u64().is_some_and(|n| n > 0)
    })
    .await;
    assert_clean_stop(&mut d, "indexing");

    let out = peerix_cmd("verify", &state, &args).output().unwrap();
    assert!(out.status.success(), "verify after the stop: {}", String::from_utf8_lossy(&out.stderr));
    let d = Daemon::start(&state, &args);
    d.wait_log("index scan finished");
    for p in &paths {
        let nar = get(&format!("{}/{}", d.url, nar_url_of_store(&d, p).await)).await;
        assert!(nar.body == nix_dump(&store.join(&p[1..])), "{p}: the NAR differs from nix-store --dump");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_download_stalled_in_a_slow_client_it_stops_within_the_limit() {
    let w = Work::new();
    let store = w.path("store");
    let path = w.add_files(&store, "data", [pseudo_random(64 << 20, 7)]).remove(0);
    let args = ["--store-root", store.to_str().unwrap(), "--serve-private"];
    let mut d = Daemon::start(&w.path("state"), &args);
    d.wait_log("index scan finished");
    let url = nar_url_of_store(&d, &path).await;

    // A client that asks for the 64 MiB NAR, reads its first bytes and then stops reading: the
    // response sits in a full socket.
    let mut sock = std::net::TcpStream::connect(d.addr).unwrap();
    write!(sock, "GET /{url} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut first = [0u8; 4096];
    let n = sock.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"), "the download began");
    assert_clean_stop(&mut d, "mid-download");
    // The client sees the connection end (after what the kernel had buffered), not a hang.
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let _ = sock.read_to_end(&mut rest);
    assert!(n + rest.len() < (64 << 20), "a stopped daemon cannot have sent the whole NAR");
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_it_like_sigterm() {
    let w = Work::new();
    let mut d = Daemon::start(&w.path("state"), &["--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--mode", "lan"]);
    assert_eq!(get(&format!("{}/nix-cache-info", d.url)).await.status, 200);
    assert_clean_stop_with(&mut d, "SIGINT", "-INT");
    assert!(d.log().contains("shutting down"), "{}", d.log());
}
