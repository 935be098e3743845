//! What an attacker on the HTTP port got through before (hardening round 2), refused now on the
//! real daemon and tracker over raw sockets: smuggling-style framing is a 400 and a closed
//! connection (RFC 9112 §6), never a panic or a kept connection; the Host identity holds for
//! absolute-form targets and duplicate or missing Hosts; and idle sockets cannot lock nix out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::tracker::start_tracker;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `request`, returns what came back until the server closed (or 5 s passed: `closed` false).
async fn exchange(addr: SocketAddr, request: &[u8]) -> (String, bool) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Sends `request` and returns the answer's status line (within 5 s; empty if none came), without
/// waiting for the server to close: a poll costs a round trip, not a keep-alive timeout.
async fn status_line(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 256];
        while !out.windows(2).any(|w| w == b"\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    String::from_utf8_lossy(&out).lines().next().unwrap_or_default().to_owned()
}

/// Requests whose framing a front proxy and we could read differently.
fn smuggling(host: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "chunk-size overflow",
            format!(
                "POST /v1/announce HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\n"
            ),
        ),
        (
            "CL and TE",
            format!(
                "POST /v1/announce HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
        ),
        (
            "differing CLs",
            format!("POST /v1/announce HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        ),
        ("signed CL", format!("POST /v1/announce HTTP/1.1\r\nHost: {host}\r\nContent-Length: +3\r\n\r\nabc")),
        (
            "chunked, identity",
            format!(
                "POST /v1/announce HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"
            ),
        ),
        (
            "TE in HTTP/1.0",
            format!("POST /v1/announce HTTP/1.0\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ),
        (
            "8 KB chunk extension",
            format!(
                "POST /v1/announce HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\na\r\n0\r\n\r\n",
                "x".repeat(8192)
            ),
        ),
        ("duplicate Host", format!("GET /health HTTP/1.1\r\nHost: {host}\r\nHost: evil.example\r\n\r\n")),
        ("no Host", "GET /health HTTP/1.1\r\n\r\n".to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_framing_is_a_400_and_a_closed_connection_on_daemon_and_tracker() {
    let w = Work::new();
    let d = Daemon::start(&w.path("d"), &[]);
    let t = start_tracker(&w.path("t"), &[]);
    for (who, server) in [("daemon", &d), ("tracker", &t)] {
        for (what, request) in smuggling(&server.addr.to_string()) {
            let (answer, closed) = exchange(server.addr, request.as_bytes()).await;
            assert!(answer.starts_with("HTTP/1.1 400 "), "{who}, {what}: {answer}");
            assert!(closed, "{who}, {what}: the connection was kept");
        }
        // Still serving, and no connection task panicked. (The daemon's /health is 503 here: its
        // store has no Nix DB.)
        let route = if who == "daemon" { "nix-cache-info" } else { "health" };
        assert_eq!(get(&format!("{}/{route}", server.url)).await.status, 200, "{who}");
        assert!(!server.log().contains("panicked"), "{who}: {}", server.log());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absolute_form_target_does_not_bypass_the_host_check_and_operator_routes_check_it_too() {
    let w = Work::new();
    let d = Daemon::start(&w.path("d"), &[]);
    let host = d.addr.to_string();
    let (answer, _) =
        exchange(d.addr, format!("GET http://evil.example/api/status HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .await;
    assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
    for route in ["/metrics", "/health", "/api/status"] {
        let (answer, _) = exchange(
            d.addr,
            format!("GET {route} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 403 "), "{route}: {answer}");
        let (answer, _) =
            exchange(d.addr, format!("GET {route} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
                .await;
        // Answered (the empty daemon's /health says 503 "degraded": no Nix DB), not refused.
        assert!(answer.starts_with("HTTP/1.1 ") && !answer.starts_with("HTTP/1.1 403"), "{route}: {answer}");
    }
    // The binary-cache API answers whatever the name (a LAN client may use any).
    let (answer, _) =
        exchange(d.addr, b"GET /nix-cache-info HTTP/1.1\r\nHost: cache.lan\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sockets_from_one_local_process_cannot_lock_nix_out() {
    let w = Work::new();
    // 2 200 open files leave the daemon 152 connection slots (2 048 are kept for everything else).
    let d = Daemon::start_in(&["prlimit", "--nofile=2200:2200"], &w.path("d"), &[]);
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(tokio::net::TcpStream::connect(d.addr).await.unwrap());
    }
    // Half-sent heads too (slowloris).
    for s in idle.iter_mut().take(100) {
        s.write_all(b"GET /nix-cache-info HTTP/1.1\r\nHo").await.unwrap();
    }
    for _ in 0..3 {
        let r = tokio::time::timeout(Duration::from_secs(3), get(&format!("{}/nix-cache-info", d.url))).await;
        assert_eq!(r.expect("nix was kept waiting behind idle sockets").status, 200);
    }
    drop(idle);
}

/// Bodies nobody asked for: the daemon refuses any over 1 KiB (its routes take none but a `{}`)
/// before reading it; on the tracker, one address may have at most four announcements' worth of
/// body bytes in flight, whatever it declares and then withholds.
#[tokio::test(flavor = "multi_thread")]
async fn declared_bodies_are_refused_or_held_within_the_address_budget() {
    let w = Work::new();
    let d = Daemon::start(&w.path("d"), &[]);
    let head = |host: &SocketAddr, len: usize| {
        format!(
            "POST /api/index/pause HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    let (answer, closed) = exchange(d.addr, head(&d.addr, 1 << 20).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413 ") && closed, "{answer}");

    let t = start_tracker(&w.path("t"), &[]);
    let announce = format!("POST /v1/announce HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n{{", t.addr, 8 << 20);
    let stall = || async {
        let mut s = tokio::net::TcpStream::connect(t.addr).await.unwrap();
        s.write_all(announce.as_bytes()).await.unwrap();
        s
    };
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(stall().await);
    }
    // A complete one-byte body: refused (429) once the four hold the address's whole budget,
    // answered (400, not JSON) while they do not.
    let probe = announce.replace("Content-Length: 8388608", "Content-Length: 1");
    let refused = || async { status_line(t.addr, probe.as_bytes()).await.starts_with("HTTP/1.1 429 ") };
    let mut held = false;
    for _ in 0..100 {
        if refused().await {
            held = true;
            break;
        }
        // The server reads connections' heads in any order: a stalled head read while a probe
        // held its one byte found the budget a byte short and was refused (429, closed). Such a
        // connection is answered; it is made again.
        for s in stalled.iter_mut() {
            if !matches!(s.try_read(&mut [0u8; 256]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
                *s = stall().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(held, "never: the four stalled bodies hold the budget");
    let (answer, closed) = exchange(t.addr, announce.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 429 ") && closed, "a fifth 8 MiB body: {answer}");
    drop(stalled);
    // Their budget comes back when they go.
    poll_until_async("the budget comes back", || async { (!refused().await).then_some(()) }).await;
}

async fn poll_until_async<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    for _ in 0..100 {
        if f().await.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never: {what}");
}
