//! Many clients at once cost the daemon memory in proportion and never an error: 5 000 keep-alive
//! connections, all open at once, asking narinfos and NARs are every one answered, with the
//! daemon's RSS reported and bounded; and 1 000 slowloris connections (request headers one byte a
//! second) with 200 clients reading NARs at 1 KiB/s leave a normal client's narinfo fast and its
//! NAR at full speed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Barrier;

/// `VmRSS` or `VmHWM` (peak) of `pid`, in KiB.
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix(field)).unwrap();
    line.trim_start_matches(':').trim().trim_end_matches("kB").trim().parse().unwrap()
}

/// One request on a keep-alive connection: its status and body (by `Content-Length`).
async fn exchange(conn: &mut BufReader<TcpStream>, path: &str) -> Result<(u16, Vec<u8>), String> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    conn.get_mut().write_all(req.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    let mut status = String::new();
    conn.read_line(&mut status).await.map_err(|e| format!("status line: {e}"))?;
    let code = status.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or(format!("status line {status:?}"))?;
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.map_err(|e| format!("header: {e}"))?;
        if line == "\r\n" {
            break;
        }
        if line.is_empty() {
            return Err("closed in the headers".into());
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().map_err(|_| format!("bad length {line:?}"))?;
        }
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await.map_err(|e| format!("body: {e}"))?;
    Ok((code, body))
}

async fn connect(addr: std::net::SocketAddr) -> Result<BufReader<TcpStream>, String> {
    let s = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).unwrap();
    Ok(BufReader::new(s))
}

/// A store of `n` small published paths, served; with each path's narinfo URL, NAR URL and NAR.
async fn small_paths(w: &Work, n: usize) -> (Daemon, Vec<(String, String, Vec<u8>)>) {
    let store = w.path("store");
    let mut paths = Vec::new();
    for i in 0..n {
        let src = w.path(&format!("src{i}"));
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("data"), pseudo_random(3000 + i * 1000, i as u64)).unwrap();
        paths.push(run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(&src)));
    }
    let d = Daemon::start(&w.path("state"), &["--store-root", store.to_str().unwrap(), "--serve-private"]);
    let mut urls = Vec::new();
    for p in &paths {
        let nar = format!("/{}", nar_url_of_store(&d, p).await);
        urls.push((format!("/{}.narinfo", hash_part(p)), nar, nix_dump(&store.join(&p[1..]))));
    }
    (d, urls)
}

/// The two tests load the machine: one at a time, so each measures only its own load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CONNECTIONS: usize = 5000;
const ROUNDS: usize = 2;

#[tokio::test(flavor = "multi_thread")]
async fn five_thousand_keep_alive_connections_are_all_answered() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // 5 000 sockets here and 5 000 in the daemon (which raises its own limit likewise).
    peerix::httpd::connections::raise_fd_limit();
    let w = Work::new();
    let (d, urls) = small_paths(&w, 4).await;
    let urls = Arc::new(urls);
    let rss_before = memory_kib(d.pid(), "VmRSS");

    // Every connection is opened before any asks (so all 5 000 are open at once), then each asks
    // a narinfo and its NAR ROUNDS times on the same connection.
    let (all_open, round_done) = (Arc::new(Barrier::new(CONNECTIONS + 1)), Arc::new(Barrier::new(CONNECTIONS + 1)));
    let (answered, errors) = (Arc::new(AtomicUsize::new(0)), Arc::new(std::sync::Mutex::new(Vec::new())));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let (urls, all_open, round_done) = (urls.clone(), all_open.clone(), round_done.clone());
            let (answered, errors, addr) = (answered.clone(), errors.clone(), d.addr);
            tokio::spawn(async move {
                let conn = connect(addr).await;
                all_open.wait().await;
                let mut conn = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        errors.lock().unwrap().push(e);
                        round_done.wait().await;
                        return;
                    }
                };
                for round in 0..ROUNDS {
                    let (narinfo, nar, expected) = &urls[(i + round) % urls.len()];
                    for (path, body) in [(narinfo, None), (nar, Some(expected))] {
                        match exchange(&mut conn, path).await {
                            Ok((200, got)) if body.is_none_or(|b| *b == got) => {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok((status, _)) => errors.lock().unwrap().push(format!("{path}: {status} or wrong body")),
                            Err(e) => errors.lock().unwrap().push(format!("{path}: {e}")),
                        }
                    }
                    if round == 0 {
                        round_done.wait().await;
                    }
                }
            })
        })
        .collect();
    all_open.wait().await;
    let opened = started.elapsed();
    round_done.wait().await;
    // Every connection is open and has been served once; the second round is under way.
    let rss_loaded = memory_kib(d.pid(), "VmRSS");
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    let errors = errors.lock().unwrap().clone();
    let peak = memory_kib(d.pid(), "VmHWM");
    eprintln!(
        "{CONNECTIONS} connections opened in {opened:?}, {} answers in {took:?}, {} errors; daemon RSS {} MiB idle, \
         {} MiB with every connection open, peak {} MiB ({} KiB per connection)",
        answered.load(Ordering::Relaxed),
        errors.len(),
        rss_before / 1024,
        rss_loaded / 1024,
        peak / 1024,
        (peak.saturating_sub(rss_before)) / CONNECTIONS as u64,
    );
    assert!(errors.is_empty(), "{} errors, first ones: {:?}", errors.len(), &errors[..errors.len().min(5)]);
    assert_eq!(answered.load(Ordering::Relaxed), CONNECTIONS * ROUNDS * 2);
    // Bounded: well under what a buffer per connection of even 100 KiB would cost.
    assert!(peak - rss_before < 100 * CONNECTIONS as u64, "peak RSS grew {} MiB", (peak - rss_before) / 1024);
    assert!(!d.log().contains("panicked"));
}

const SLOWLORIS: usize = 1000;
const TRICKLING: usize = 200;

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_and_trickling_readers_leave_a_normal_client_fast() {
    let _alone = ONE_AT_A_TIME.lock().await;
    peerix::httpd::connections::raise_fd_limit();
    let w = Work::new();
    let store = w.path("store");
    let src = w.path("big");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("data"), pseudo_random(32 << 20, 5)).unwrap();
    let path = run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(&src));
    let d = Daemon::start(&w.path("state"), &["--store-root", store.to_str().unwrap(), "--serve-private"]);
    let narinfo_path = format!("/{}.narinfo", hash_part(&path));
    let nar_path = format!("/{}", nar_url_of_store(&d, &path).await);
    let nar_len = nix_dump(&store.join(&path[1..])).len();

    // A normal client: narinfo latency (a new connection each, median of 20) and NAR MB/s (best of 3).
    let normal = || async {
        let mut lat = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let mut conn = connect(d.addr).await.unwrap();
            assert_eq!(exchange(&mut conn, &narinfo_path).await.unwrap().0, 200);
            lat.push(t.elapsed());
        }
        lat.sort();
        let mut best = 0f64;
        for _ in 0..3 {
            let t = Instant::now();
            let nar = get(&format!("{}{nar_path}", d.url)).await;
            assert_eq!(nar.body.len(), nar_len);
            best = best.max(nar_len as f64 / t.elapsed().as_secs_f64() / 1e6);
        }
        (lat[10], lat[19], best)
    };
    let (lat_alone, lat_alone_max, mbs_alone) = normal().await;

    // 1 000 connections sending a request's headers a byte a second.
    let mut loris = Vec::new();
    for _ in 0..SLOWLORIS {
        let mut s = TcpStream::connect(d.addr).await.unwrap();
        s.write_all(b"GET /nix-cache-info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").await.unwrap();
        loris.push(s);
    }
    // 200 NAR downloads read at 1 KiB a second (a 4 KiB receive buffer, so the kernel holds little).
    let mut readers = Vec::new();
    for _ in 0..TRICKLING {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(d.addr).await.unwrap();
        s.write_all(format!("GET {nar_path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await.unwrap();
        readers.push(s);
    }
    let read_total = Arc::new(AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let trickle = {
        let (stop, read_total) = (stop.clone(), read_total.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while !stop.is_cancelled() {
                let tick = Instant::now();
                for s in loris.iter_mut() {
                    s.write_all(b"x").await.expect("the daemon closed a slowloris connection early");
                }
                for s in readers.iter_mut() {
                    let n = s.read(&mut buf).await.unwrap();
                    assert!(n > 0, "a trickling download was closed");
                    read_total.fetch_add(n, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
            }
            (loris, readers)
        })
    };
    // Every trickling reader has its response under way before the normal client measures.
    poll_until("every trickling reader got bytes", || {
        (read_total.load(Ordering::Relaxed) >= TRICKLING * 1024).then_some(())
    })
    .await;
    let (lat_loaded, lat_loaded_max, mbs_loaded) = normal().await;
    stop.cancel();
    let (loris, readers) = trickle.await.unwrap();
    eprintln!(
        "narinfo median (max) alone {lat_alone:?} ({lat_alone_max:?}), with {SLOWLORIS} slowloris + {TRICKLING} \
         trickling readers {lat_loaded:?} ({lat_loaded_max:?}); NAR {mbs_alone:.0} MB/s alone, {mbs_loaded:.0} MB/s \
         loaded; daemon RSS {} MiB",
        memory_kib(d.pid(), "VmRSS") / 1024
    );
    assert!(lat_loaded < Duration::from_millis(50), "narinfo median {lat_loaded:?} under load");
    assert!(mbs_loaded >= 0.5 * mbs_alone, "NAR at {mbs_loaded:.0} MB/s under load, {mbs_alone:.0} alone");
    drop((loris, readers));
    assert_eq!(get(&format!("{}/nix-cache-info", d.url)).await.status, 200);
    assert!(!d.log().contains("panicked"));
}
