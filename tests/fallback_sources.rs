//! Fallbacks: when no peer can deliver a NAR's blocks (the one that named the path has gone), C gets
//! them from `--fallback` sources — another node's trustless gateway, or a kubo RPC API — and a
//! fallback that answers with wrong bytes is refused, block by block.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;

/// An HTTP server that answers every request with 200 and the same wrong bytes.
struct Liar {
    child: Child,
    url: String,
}

impl Liar {
    fn start() -> Self {
        let script = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        self.send_response(200); self.send_header("Content-Length", "7"); self.end_headers(); self.wfile.write(b"garbage")
    do_GET = answer
    do_POST = answer
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
        let mut child =
            Command::new("python3").args(["-c", script]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut port = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut port).unwrap();
        Self { child, url: format!("http://127.0.0.1:{}", port.trim()) }
    }
}

impl Drop for Liar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A knows the path and leaves after C accepted its narinfo; B is no peer of C, only reachable as
/// a fallback (`fallback_of(B's URL)`), behind a liar listed first.
async fn gone_peer_then_fallbacks(fallback_of: impl Fn(&str) -> String) {
    let w = Work::new();
    let (sk, pk) = w.keypair("fallback-1");
    let f = w.build_big_fixture(6_000_000);
    w.sign(&f.top, &sk);
    let (mut a, b) = (seeder(&w, "a", &[&f.top], &pk), seeder(&w, "b", &[&f.top], &pk));
    let liar = Liar::start();
    let good = fallback_of(&b.url);
    // No prefetch: C must not start fetching from A while A is still there (closure_prefetch.rs
    // covers that); here the NAR is asked for only after A has gone.
    let extra = ["--fallback", &liar.url, "--fallback", &good, "--prefetch-size", "0"];
    let c = peer_client(&w, "c", "client", &pk, &[&a.p2p_addr()], &extra);
    c.wait_log("have-summary applied");
    for path in [&f.top, &f.dep] {
        assert_eq!(get(&format!("{}/{}.narinfo", c.url, hash_part(path))).await.status, 200, "A answered for {path}");
    }
    a.kill();
    c.wait_log("peer disconnected");

    let out = w.substitute("client", &f.top, &c.url, &pk);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), c.log());
    w.verify("client", &f.top, &pk);
    let s = c.status().await;
    let top: &Value = s["substitution"]["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["store_path"] == f.top.as_str() && t["outcome"] == "done")
        .unwrap_or_else(|| panic!("{s:#}"));
    let sources = top["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1, "every byte from the good fallback: {top:#}");
    assert_eq!(sources[0]["source"], good.trim_start_matches("kubo+"));
    assert!(s["substitution"]["counters"]["bytes_from_fallbacks"].as_u64().unwrap() >= 6_000_000);
    assert!(c.log().contains("a source sent bytes that are not the block asked for"), "the liar was refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trustless_gateway_fallback_delivers_when_no_peer_can() {
    gone_peer_then_fallbacks(|url| url.to_owned()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kubo_rpc_fallback_delivers_when_no_peer_can() {
    // peerix's own kubo-compatible `POST /api/v0/block/get` stands in for kubo's.
    gone_peer_then_fallbacks(|url| format!("kubo+{url}")).await;
}
