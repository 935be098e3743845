//! The dashboard at `/`, in a real browser (Debian's Chromium, headless, driven by playwright-core
//! through `tests/dashboard/drive.mjs`), shows the daemon's real state as it changes — index
//! progress while a store is indexed, the pause control taking hold, a peer appearing when it
//! connects, a lookup's outcome — and shows a hostile peer's agent string as text, running nothing.
//! A screenshot is left in the target directory (`dashboard.png`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use common::rogue::{Plan, Rogue};
use common::*;
use serde_json::{Value, json};

/// One headless Chromium page, driven line by line.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Browser {
    fn open(url: &str) -> Self {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard");
        let mut child = Command::new("node")
            .arg(format!("{dir}/drive.mjs"))
            .arg(url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node (test.sh installs playwright-core and chromium)");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut b = Self { child, stdin, stdout };
        assert_eq!(b.answer().unwrap(), "ready");
        b
    }

    fn answer(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("driver said {line:?}"));
        if v["ok"] == true { Ok(v["value"].clone()) } else { Err(v["error"].as_str().unwrap_or("?").to_owned()) }
    }

    /// Runs one command; the driver's waits give up after 30 s.
    fn call(&mut self, cmd: Value) -> Result<Value, String> {
        tokio::task::block_in_place(|| {
            writeln!(self.stdin, "{cmd}").unwrap();
            self.stdin.flush().unwrap();
            self.answer()
        })
    }

    fn must(&mut self, cmd: Value, d: &Daemon) -> Value {
        match self.call(cmd.clone()) {
            Ok(v) => v,
            Err(e) => {
                let shot = self.call(json!({"op": "screenshot", "path": artifact("dashboard-failed.png")}));
                let page = self.call(json!({"op": "eval", "expr": "document.body.innerText"}));
                panic!("{cmd}: {e}\nscreenshot: {shot:?}\npage:\n{}\ndaemon:\n{}", page.unwrap_or_default(), d.log())
            }
        }
    }

    fn text(&mut self, selector: &str) -> String {
        let expr = format!("document.querySelector({}).textContent", json!(selector));
        self.call(json!({"op": "eval", "expr": expr})).unwrap().as_str().unwrap_or("").to_owned()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn artifact(name: &str) -> String {
    format!("{}/{name}", env!("CARGO_TARGET_TMPDIR"))
}

const HOSTILE_AGENT: &str = "<img src=x onerror=\"window.__xss=1\"><script>window.__xss=2</script>";

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_live_state_and_runs_no_peer_supplied_code() {
    let w = Work::new();
    let (sk, pk) = w.keypair("peerix-dash-1");
    // A store of 8 paths (≈ 24 MiB) indexed at 2 MB/s: ~12 s of progress the page must show moving.
    let fixtures: Vec<Fixture> = (0..4).map(|_| w.build_big_fixture(6 << 20)).collect();
    let paths: Vec<&str> = fixtures.iter().flat_map(|f| [f.top.as_str(), f.dep.as_str()]).collect();
    let store = w.chroot_store("a", &paths);
    let a = Daemon::start(
        &w.path("state-a"),
        &[
            &["--store-root", store.to_str().unwrap(), "--serve-private", "--index-rate", "2M"][..],
            &["--trusted-public-key", &pk],
            &LOOPBACK_LAN,
        ]
        .concat(),
    );
    let mut page = Browser::open(&format!("{}/", a.url));
    page.must(json!({"op": "wait_text", "selector": "#node-id", "contains": a.peer_id()}), &a);
    page.must(json!({"op": "wait_text", "selector": "#peers", "contains": "no peers"}), &a);

    // Index progress moves: a value strictly between empty and full, then the pause control holds
    // the indexer (the daemon's own status says so), then resuming lets it finish.
    let progress = "document.getElementById('index-progress')";
    page.must(json!({"op": "wait", "expr": format!("{progress}.value > 0 && {progress}.value < {progress}.max")}), &a);
    page.must(json!({"op": "click", "selector": "#pause-index"}), &a);
    page.must(json!({"op": "wait_text", "selector": "#index-state", "contains": "paused"}), &a);
    let held = a.wait_status("scan paused", |s| s["scan"]["paused"] == true).await;
    page.must(json!({"op": "click", "selector": "#resume-index"}), &a);
    page.must(json!({"op": "wait_text", "selector": "#index-state", "contains": "idle"}), &a);
    let done = a.status().await;
    // (What was published, not the scan's record: the once-a-second look at the Nix DB may have
    // started the next, empty scan by now.)
    let published = |s: &Value| s["index"]["published_paths"].as_u64().unwrap();
    assert!(published(&done) > published(&held), "{held}\n{done}");
    page.must(json!({"op": "wait_text", "selector": "#published-paths", "contains": "8"}), &a);

    // A peer appears when it connects: a real peerix node holding a signed, published path...
    let f = w.build_fixture();
    w.sign(&f.top, &sk);
    let store_b = w.chroot_store("b", &[&f.top]);
    let args = ["--store-root", store_b.to_str().unwrap(), "--trusted-public-key", &pk];
    run(&mut peerix_cmd("publish", &w.path("state-b"), &args));
    let a_addr = a.p2p_addr();
    let b = peer_client(&w, "b", "b", &pk, &[&a_addr], &[]);
    let b_row = format!("document.querySelector('#peers tr[data-peer-id=\"{}\"]')", b.peer_id());
    page.must(json!({"op": "wait", "expr": b_row}), &a);

    // ...and one whose agent string is markup: shown as text, never run.
    let rogue = Rogue::start(Plan { agent: Some(HOSTILE_AGENT.into()), ..Default::default() }, Some(&a_addr)).await;
    page.must(json!({"op": "wait_text", "selector": "#peers", "contains": HOSTILE_AGENT}), &a);
    let row = format!("#peers tr[data-peer-id=\"{}\"]", rogue.peer_id);
    assert_eq!(
        page.must(
            json!({"op": "eval", "expr": format!("document.querySelectorAll('{row} img, {row} script').length")}),
            &a
        ),
        0
    );
    assert_eq!(page.must(json!({"op": "eval", "expr": "window.__xss === undefined"}), &a), true);

    // A lookup shows its outcome: the path B holds is found on a peer; a made-up one is a miss.
    let hash = hash_part(&f.top).to_owned();
    assert_eq!(get(&format!("{}/{hash}.narinfo", a.url)).await.status, 200);
    let missing = "0".repeat(32);
    assert_eq!(get(&format!("{}/{missing}.narinfo", a.url)).await.status, 404);
    page.must(json!({"op": "wait_text", "selector": "#lookups", "contains": hash}), &a);
    let lookups = page.text("#lookups");
    assert!(lookups.contains("peer") && lookups.contains(&missing) && lookups.contains("miss"), "{lookups}");

    // The re-check control: a malformed path is refused in the page; a real one gets the gate's
    // verdict from the daemon (shared: --serve-private).
    page.must(json!({"op": "fill", "selector": "#recheck-path", "text": "/nix/store/<b>not-a-path"}), &a);
    page.must(json!({"op": "click", "selector": "#recheck"}), &a);
    page.must(json!({"op": "wait_text", "selector": "#recheck-result", "contains": "not a store path"}), &a);
    page.must(json!({"op": "fill", "selector": "#recheck-path", "text": &fixtures[0].top}), &a);
    page.must(json!({"op": "click", "selector": "#recheck"}), &a);
    page.must(json!({"op": "wait_text", "selector": "#recheck-result", "contains": "shared: yes"}), &a);

    // Nothing ran that should not have, and the page broke no rule of its CSP.
    let problems = page.must(json!({"op": "problems"}), &a);
    assert_eq!(problems, json!([]), "{problems}");
    let shot = page.must(json!({"op": "screenshot", "path": artifact("dashboard.png")}), &a);
    eprintln!("screenshot: {shot}");
}

/// The tracker's page shows its live peers and the node's addresses, under the same CSP.
#[tokio::test(flavor = "multi_thread")]
async fn the_tracker_page_lists_live_peers() {
    let w = Work::new();
    let t = common::tracker::start_tracker(&w.path("tracker"), &[]);
    let me = common::tracker::Announcer::new();
    let body = me.sign(&me.announcement(1, None, &common::tracker::hashes(3, 1)));
    let r = client().post(format!("{}/v1/announce", t.url)).header("content-type", "application/json").body(body);
    assert_eq!(r.send().await.unwrap().status(), 200);
    let mut page = Browser::open(&format!("{}/", t.url));
    page.must(
        json!({"op": "wait", "expr": format!("document.querySelector('#peers tr[data-peer-id=\"{}\"]')", me.peer_id)}),
        &t,
    );
    assert_eq!(page.text("#peer-count"), "1");
    assert_eq!(page.text("#path-count"), "3");
    page.must(json!({"op": "wait_text", "selector": "#multiaddrs", "contains": "/ip4/127.0.0.1/tcp/"}), &t);
    assert_eq!(page.must(json!({"op": "problems"}), &t), json!([]));
    page.must(json!({"op": "screenshot", "path": artifact("tracker.png")}), &t);
}
