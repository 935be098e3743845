//! One connection carries whatever a client asks in turn, as nix's curl does: narinfos, whole NARs
//! (sent with sendfile), ranges, HEADs, zstd NARs and errors on one keep-alive connection, each
//! answer exact; pipelined requests are answered in order; an HTTP/1.0 client gets its answer
//! and a close; a chunked request body is read; and a client that closes mid-NAR costs the
//! daemon nothing (it serves on, with no thread or connection left behind).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A response read off a connection: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Reads one response; `head_only` for a HEAD (no body whatever the headers say).
async fn read_answer(conn: &mut BufReader<TcpStream>, head_only: bool) -> Answer {
    let mut line = String::new();
    conn.read_line(&mut line).await.unwrap();
    let status = line.split(' ').nth(1).unwrap_or_else(|| panic!("status line {line:?}")).parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        let Some((k, v)) = line.trim_end().split_once(':') else { break };
        headers.push((k.to_ascii_lowercase(), v.trim().to_owned()));
    }
    let mut a = Answer { status, headers, body: Vec::new() };
    if head_only {
        return a;
    }
    if let Some(n) = a.header("content-length") {
        a.body = vec![0; n.parse().unwrap()];
        conn.read_exact(&mut a.body).await.unwrap();
    } else if a.header("transfer-encoding") == Some("chunked") {
        loop {
            let mut size = String::new();
            conn.read_line(&mut size).await.unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            conn.read_exact(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            a.body.extend_from_slice(&chunk[..n]);
        }
    } else {
        conn.read_to_end(&mut a.body).await.unwrap();
    }
    a
}

async fn ask(conn: &mut BufReader<TcpStream>, method: &str, path: &str, extra: &str) -> Answer {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n");
    conn.get_mut().write_all(req.as_bytes()).await.unwrap();
    read_answer(conn, method == "HEAD").await
}

/// A daemon serving one published path of a `size`-byte file and a small one; with the path, its
/// narinfo path, its NAR URL path and its NAR.
async fn serving(w: &Work, size: usize) -> (Daemon, String, String, String, Vec<u8>) {
    let src = w.path("tree");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("big"), pseudo_random(size, 21)).unwrap();
    fs::write(src.join("sub/small"), b"small").unwrap();
    let store = w.path("store");
    let path = run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(&src));
    let d = Daemon::start(&w.path("state"), &["--store-root", store.to_str().unwrap(), "--serve-private"]);
    let narinfo = format!("/{}.narinfo", hash_part(&path));
    let nar_path = format!("/{}", nar_url_of_store(&d, &path).await);
    let nar = nix_dump(&store.join(&path[1..]));
    (d, path, narinfo, nar_path, nar)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_connection_carries_narinfos_nars_ranges_heads_and_errors() {
    let w = Work::new();
    let (d, _, narinfo, nar_path, nar) = serving(&w, 5_000_000).await;
    let mut conn = BufReader::new(TcpStream::connect(d.addr).await.unwrap());
    for round in 0..3 {
        let info = ask(&mut conn, "GET", &narinfo, "").await;
        assert_eq!(info.status, 200);
        assert!(String::from_utf8_lossy(&info.body).contains(&nar_path[1..]), "round {round}");
        let whole = ask(&mut conn, "GET", &nar_path, "").await;
        assert_eq!((whole.status, whole.header("content-length")), (200, Some(nar.len().to_string().as_str())));
        assert!(whole.body == nar, "round {round}: the NAR differs from nix-store --dump");
        let part = ask(&mut conn, "GET", &nar_path, "Range: bytes=100000-4000000\r\n").await;
        assert_eq!(part.status, 206);
        assert!(part.body == nar[100_000..=4_000_000], "round {round}: range");
        let tail = ask(&mut conn, "GET", &nar_path, "Range: bytes=-10\r\n").await;
        assert_eq!((tail.status, &tail.body[..]), (206, &nar[nar.len() - 10..]));
        let head = ask(&mut conn, "HEAD", &nar_path, "").await;
        assert_eq!((head.status, head.header("content-length")), (200, Some(nar.len().to_string().as_str())));
        let missing = ask(&mut conn, "GET", &format!("/{}.narinfo", "0".repeat(32)), "").await;
        assert_eq!(missing.status, 404);
        assert!(missing.body.ends_with(b"\n") && missing.body.iter().filter(|&&b| b == b'\n').count() == 1);
        let past = ask(&mut conn, "GET", &nar_path, &format!("Range: bytes={}-\r\n", nar.len())).await;
        assert_eq!(past.status, 416);
        let zstd = ask(&mut conn, "GET", &nar_path, "Accept-Encoding: zstd\r\n").await;
        assert_eq!((zstd.status, zstd.header("content-encoding")), (200, Some("zstd")));
        assert!(zstd::decode_all(&zstd.body[..]).unwrap() == nar, "round {round}: zstd");
    }
    let s = d.status().await;
    assert_eq!(s["requests"]["nars_served"].as_u64(), Some(3 * 4), "{s:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_http10_and_chunked_requests_are_answered() {
    let w = Work::new();
    let (d, _, narinfo, nar_path, nar) = serving(&w, 5_000_000).await;

    // Three requests in one write: three answers, in order.
    let mut conn = BufReader::new(TcpStream::connect(d.addr).await.unwrap());
    let req = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let all = [req(&narinfo), req(&nar_path), req("/nix-cache-info")].concat();
    conn.get_mut().write_all(all.as_bytes()).await.unwrap();
    assert!(String::from_utf8(read_answer(&mut conn, false).await.body).unwrap().starts_with("StorePath: "));
    assert!(read_answer(&mut conn, false).await.body == nar);
    assert!(String::from_utf8(read_answer(&mut conn, false).await.body).unwrap().starts_with("StoreDir: "));

    // HTTP/1.0 without keep-alive: the answer, then the connection closes.
    let mut conn = BufReader::new(TcpStream::connect(d.addr).await.unwrap());
    conn.get_mut().write_all(format!("GET {nar_path} HTTP/1.0\r\n\r\n").as_bytes()).await.unwrap();
    let a = read_answer(&mut conn, false).await;
    assert!(a.status == 200 && a.body == nar);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "HTTP/1.0 connection left open");

    // A POST whose (ignored) body comes chunked, after asking for 100-continue.
    let mut conn = BufReader::new(TcpStream::connect(d.addr).await.unwrap());
    let post = "POST /api/v0/id HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\
                Expect: 100-continue\r\n\r\n";
    conn.get_mut().write_all(post.as_bytes()).await.unwrap();
    let interim = read_answer(&mut conn, true).await;
    assert_eq!(interim.status, 100);
    conn.get_mut().write_all(b"5\r\nhello\r\n0\r\n\r\n").await.unwrap();
    let id = read_answer(&mut conn, false).await;
    assert_eq!(id.status, 200, "{}", String::from_utf8_lossy(&id.body));
    let v: serde_json::Value = serde_json::from_slice(&id.body).unwrap();
    assert!(v["ID"].as_str().is_some_and(|id| id.starts_with("12D3KooW")), "{v}");
    // The connection is still good for the next request.
    assert_eq!(ask(&mut conn, "GET", "/nix-cache-info", "").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_closing_mid_nar_costs_nothing() {
    let w = Work::new();
    let (d, _, narinfo, nar_path, nar) = serving(&w, 32 << 20).await;
    let before = threads(d.pid());
    let mark = d.mark();
    for i in 0..50 {
        let mut conn = BufReader::new(TcpStream::connect(d.addr).await.unwrap());
        let req = format!("GET {nar_path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        conn.get_mut().write_all(req.as_bytes()).await.unwrap();
        // Read the head and a little of the body (more each time), then hang up.
        let mut line = String::new();
        while line != "\r\n" {
            line.clear();
            conn.read_line(&mut line).await.unwrap();
        }
        let mut some = vec![0; 1000 * (i + 1)];
        conn.read_exact(&mut some).await.unwrap();
        assert!(some == nar[..some.len()]);
    }
    // Every one of them ended on the daemon's side (a 32 MiB NAR does not fit in the sockets'
    // buffers, so each was cut short), and the daemon serves on.
    d.wait_log_count("response aborted", 50);
    let mut conn = BufReader::new(TcpStream::connect(d.addr).await.unwrap());
    assert_eq!(ask(&mut conn, "GET", &narinfo, "").await.status, 200);
    assert!(ask(&mut conn, "GET", &nar_path, "").await.body == nar);
    assert!(threads(d.pid()) <= before + 8, "threads {before} before, {} after", threads(d.pid()));
    assert!(!d.log().lines().skip(mark).any(|l| l.contains("panicked")));
    let s = d.status().await;
    assert_eq!(s["requests"]["nars_served"].as_u64(), Some(1), "only the whole NAR counts as served: {s:#}");
}
