//! Slow HTTP clients cost a buffer, not a thread: hundreds of clients that start a download and
//! stop reading leave the daemon serving everyone else — a narinfo, a whole NAR, a CAR — with its
//! thread count flat. (Each stalled body used to hold one of tokio's 512 blocking threads until
//! its client read on, so the 513th download, and the indexer, waited forever.) And a store path
//! that changed on disk after Nix registered it is refused with an error status, never served wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// More than tokio's 512 blocking threads.
const STALLED: usize = 520;

/// Sends `GET path` and reads until the end of the response headers, then reads nothing more. A
/// 4 KiB receive buffer keeps what the kernel holds per connection small.
async fn stall(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "connection closed in the headers");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    s
}

/// A store path of one 16 MiB file (far more than a stalled connection's buffers hold), published.
fn big_path(w: &Work) -> (std::path::PathBuf, String) {
    let src = w.path("big");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("data"), pseudo_random(16 << 20, 7)).unwrap();
    let store = w.path("store");
    let path = run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(&src));
    (store, path)
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_downloads_hold_no_thread_and_block_no_one() {
    let w = Work::new();
    let (store, path) = big_path(&w);
    let d = Daemon::start(&w.path("state"), &["--store-root", store.to_str().unwrap(), "--serve-private"]);
    d.wait_log("index scan finished");
    let nar_path = format!("/{}", nar_url_of_store(&d, &path).await);
    let root = root_cid(&d, &path).await;
    let before = threads(d.pid());

    // Stalled NAR downloads, and a few stalled CARs (the gateway's body).
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        let target = if i % 10 == 0 { format!("/ipfs/{root}?format=car") } else { nar_path.clone() };
        stalled.push(stall(d.addr, &target).await);
    }
    // A few blocking threads are busy or idle (tokio keeps them 10 s); one per stall would be > 512.
    let during = threads(d.pid());
    assert!(during < 128, "{STALLED} stalled downloads hold threads: {before} before, {during} now");

    // Everyone else is served, in full.
    let t = Instant::now();
    let narinfo = get(&format!("{}/{}.narinfo", d.url, hash_part(&path))).await;
    let narinfo_took = t.elapsed();
    assert_eq!(narinfo.status, 200);
    let t = Instant::now();
    let nar = tokio::time::timeout(Duration::from_secs(60), get(&format!("{}{nar_path}", d.url)))
        .await
        .expect("a NAR download behind stalled ones never finished");
    let nar_took = t.elapsed();
    assert!(nar.body == nix_dump(&store.join(&path[1..])), "the NAR differs from nix-store --dump");
    eprintln!(
        "with {STALLED} stalled downloads: narinfo in {narinfo_took:?}, 16 MiB NAR in {nar_took:?}, {during} threads"
    );
    assert!(threads(d.pid()) < 128);

    // The stalled clients go; the daemon serves on.
    drop(stalled);
    let again = get(&format!("{}{nar_path}", d.url)).await;
    assert_eq!(again.body.len(), nar.body.len());
    assert!(!d.log().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_path_changed_on_disk_is_refused_not_served_wrong() {
    let w = Work::new();
    let (store, path) = big_path(&w);
    let d = Daemon::start(&w.path("state"), &["--store-root", store.to_str().unwrap(), "--serve-private"]);
    let url = format!("{}/{}", d.url, nar_url_of_store(&d, &path).await);
    assert_eq!(get(&url).await.body, nix_dump(&store.join(&path[1..])));

    // Something writes into the store behind Nix's back: the NAR no longer has NarSize bytes.
    let file = store.join(&path[1..]).join("data");
    run(std::process::Command::new("chmod").arg("u+w").arg(store.join(&path[1..])).arg(&file));
    std::io::Write::write_all(&mut fs::OpenOptions::new().append(true).open(&file).unwrap(), b"tampered").unwrap();
    let mark = d.mark();
    // Refused up front (the layout is made before the status goes out), not cut short.
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.text().await.unwrap(), "internal error\n");
    d.wait_log_after(mark, "NAR on disk differs in size from Nix's DB");
    // The daemon serves on.
    assert_eq!(get(&format!("{}/nix-cache-info", d.url)).await.status, 200);
}
