//! HTTP behaviour of the binary-cache API: HEAD, Range (206/416), zstd negotiation, many
//! concurrent narinfo requests, and bad input answered with a one-line 4xx while the daemon keeps
//! serving (a real substitution after a burst of garbage still works).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

struct Setup {
    w: Work,
    pk: String,
    f: Fixture,
    d: Daemon,
    nar_url: String,
    nar: Vec<u8>,
}

fn setup() -> Setup {
    let w = Work::new();
    let (sk, pk) = w.keypair("http-1");
    let f = w.build_fixture();
    w.sign(&f.top, &sk);
    let srv = w.chroot_store("srv", &[&f.top]);
    let d = Daemon::start(&w.path("state"), &["--store-root", srv.to_str().unwrap(), "--trusted-public-key", &pk]);
    let nar_url = format!("{}/{}", d.url, nar_url_of(&w, &f.top));
    let nar = nix_dump(std::path::Path::new(&f.top));
    Setup { w, pk, f, d, nar_url, nar }
}

#[tokio::test(flavor = "multi_thread")]
async fn head_range_and_zstd() {
    let s = setup();
    let c = client();
    let n = s.nar.len();

    let full = request(&c, "GET", &s.nar_url, &[]).await;
    assert_eq!(full.status, 200);
    assert_eq!(full.body, s.nar);
    assert_eq!(full.header("content-length"), Some(n.to_string().as_str()));
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    assert_eq!(full.header("content-encoding"), None);

    let head = request(&c, "HEAD", &s.nar_url, &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(n.to_string().as_str()));
    assert!(head.body.is_empty());
    let narinfo_url = format!("{}/{}.narinfo", s.d.url, hash_part(&s.f.top));
    let head = request(&c, "HEAD", &narinfo_url, &[]).await;
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(head.header("content-type"), Some("text/x-nix-narinfo"));

    for (spec, want) in [
        ("bytes=0-9", 0..10),
        ("bytes=100-", 100..n),
        ("bytes=-17", n - 17..n),
        ("bytes=13-13", 13..14),
        ("bytes=5-999999", 5..n),
    ] {
        let r = request(&c, "GET", &s.nar_url, &[("range", spec)]).await;
        assert_eq!(r.status, 206, "{spec}");
        assert_eq!(r.body, &s.nar[want.clone()], "{spec}");
        let cr = format!("bytes {}-{}/{n}", want.start, want.end - 1);
        assert_eq!(r.header("content-range"), Some(cr.as_str()), "{spec}");
        assert_eq!(r.header("content-encoding"), None, "ranges are never compressed");
    }
    let r = request(&c, "GET", &s.nar_url, &[("range", &format!("bytes={n}-"))]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some(format!("bytes */{n}").as_str()));
    // A Range we do not understand is ignored (RFC 9110): the whole NAR.
    let r = request(&c, "GET", &s.nar_url, &[("range", "bytes=0-1,4-5")]).await;
    assert_eq!((r.status, r.body.len()), (200, n));

    let z = request(&c, "GET", &s.nar_url, &[("accept-encoding", "gzip, zstd")]).await;
    assert_eq!(z.status, 200);
    assert_eq!(z.header("content-encoding"), Some("zstd"));
    assert_eq!(zstd::decode_all(&z.body[..]).unwrap(), s.nar);
    let r = request(&c, "GET", &s.nar_url, &[("accept-encoding", "zstd"), ("range", "bytes=0-3")]).await;
    assert_eq!((r.status, r.header("content-encoding")), (206, None));
    assert_eq!(r.body, &s.nar[0..4]);
}

#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_concurrent_narinfo_requests_are_all_correct() {
    let s = setup();
    let c = client();
    let top = format!("{}/{}.narinfo", s.d.url, hash_part(&s.f.top));
    let dep = format!("{}/{}.narinfo", s.d.url, hash_part(&s.f.dep));
    let miss = format!("{}/{}.narinfo", s.d.url, "1".repeat(32));
    let expect_top = get(&top).await.text();
    let expect_dep = get(&dep).await.text();
    assert!(expect_top.starts_with(&format!("StorePath: {}\n", s.f.top)));
    let mut tasks = Vec::new();
    for i in 0..500 {
        let (c, url) = (c.clone(), [&top, &dep, &miss][i % 3].clone());
        tasks.push(tokio::spawn(async move { (i % 3, request(&c, "GET", &url, &[]).await) }));
    }
    for t in tasks {
        let (kind, r) = t.await.unwrap();
        match kind {
            0 => assert_eq!((r.status, r.text()), (200, expect_top.clone())),
            1 => assert_eq!((r.status, r.text()), (200, expect_dep.clone())),
            _ => assert_eq!(r.status, 404),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_one_line_4xx_and_the_daemon_keeps_serving() {
    let mut s = setup();
    let c = client();
    let u = &s.d.url.clone();
    let cases: Vec<(String, &str, u16)> = vec![
        (format!("{u}/{}.narinfo", "e".repeat(32)), "GET", 400),
        (format!("{u}/short.narinfo"), "GET", 400),
        (format!("{u}/nar/{}.nar", "!".repeat(52)), "GET", 400),
        (format!("{u}/nar/{}.nar", "0".repeat(52)), "GET", 404),
        (format!("{u}/nar/{}.nar.xz", "0".repeat(52)), "GET", 404),
        (format!("{u}/nar/x"), "GET", 404),
        (format!("{u}/no/such/route"), "GET", 404),
        (format!("{u}/index.html"), "GET", 404),
        (format!("{u}/nix-cache-info"), "POST", 405),
        (format!("{u}/{}.narinfo", hash_part(&s.f.top)), "PUT", 405),
        (format!("{u}/{}.narinfo", hash_part(&s.f.top)), "DELETE", 405),
    ];
    for (url, method, status) in &cases {
        let r = request(&c, method, url, &[]).await;
        assert_eq!(r.status, *status, "{method} {url}");
        let body = r.text();
        assert!(body.ends_with('\n') && body.matches('\n').count() == 1, "one line: {body:?}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{method} {url}");
    }
    // Raw garbage on the socket: bad request lines, huge headers, a client that sends half a
    // request and leaves. Each gets an error or a closed connection, never a crash.
    let garbage: [&[u8]; 4] = [
        b"\x00\x01\x02\x03\r\n\r\n",
        b"GET /nix-cache-info HTTP/9.9\r\n\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /nix-cache-info HTTP/1.1\r\nHo",
    ];
    for _ in 0..20 {
        for g in garbage {
            let mut sock = TcpStream::connect(s.d.addr).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = sock.write_all(g);
            let _ = sock.shutdown(std::net::Shutdown::Write);
            let mut reply = Vec::new();
            let _ = sock.read_to_end(&mut reply);
            assert!(reply.is_empty() || reply.starts_with(b"HTTP/1.1 4"), "{:?}", String::from_utf8_lossy(&reply));
        }
    }
    // A Range header that is not valid text is a header we ignore, not an error: the whole NAR.
    let path = s.nar_url.trim_start_matches(u.as_str());
    let mut sock = TcpStream::connect(s.d.addr).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nRange: bytes=");
    sock.write_all(&[req.as_bytes(), b"\xff-\xfe\r\n\r\n"].concat()).unwrap();
    let mut reply = Vec::new();
    sock.read_to_end(&mut reply).unwrap();
    assert!(
        reply.starts_with(b"HTTP/1.1 200 OK\r\n") && reply.ends_with(&s.nar),
        "{:?}",
        String::from_utf8_lossy(&reply[..60])
    );
    // 1 MiB of headers (past the 64 KiB a head may take): a 431 and a closed connection, read while
    // the rest is still being written; the next connection is served as usual.
    let mut sock = TcpStream::connect(s.d.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = sock.try_clone().unwrap();
    let huge = format!("GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "x".repeat(1 << 20));
    let writer = std::thread::spawn(move || w.write_all(huge.as_bytes()));
    let mut reply = Vec::new();
    let _ = sock.read_to_end(&mut reply);
    let _ = writer.join();
    let head = String::from_utf8_lossy(&reply[..reply.len().min(120)]).into_owned();
    assert!(head.starts_with("HTTP/1.1 431 ") && head.contains("connection: close"), "{head:?}");
    assert_eq!(get(&format!("{u}/nix-cache-info")).await.status, 200);
    assert!(s.d.alive(), "daemon died:\n{}", s.d.log());

    // A made-up NAR hash costs one scan of Nix's DB, not one per request.
    let scans = || async {
        let v: serde_json::Value = serde_json::from_slice(&get(&format!("{u}/api/status")).await.body).unwrap();
        v["requests"]["nar_db_scans"].as_u64().unwrap()
    };
    let before = scans().await;
    for _ in 0..20 {
        assert_eq!(get(&format!("{u}/nar/{}.nar", "1".repeat(52))).await.status, 404);
    }
    assert_eq!(scans().await, before + 1);

    let out = s.w.substitute("client", &s.f.top, &s.d.url, &s.pk);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!s.d.log().contains("panicked"), "{}", s.d.log());
}
