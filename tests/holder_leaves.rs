//! Never worse than no peerix: the only peer holding a closure leaves — killed, silently cut off
//! (its p2p port's packets dropped, no FIN: a lid closed), or stopped while a tracker still lists
//! it — after nix already has C's narinfos in its disk cache. nix, with C first and an ordinary
//! cache second (default retries), takes the closure from the second cache at once, byte for
//! byte: C answers the NAR requests 404 (nix moves on without retrying) instead of stalling or
//! aborting, and C's narinfo for the path turns 404 once the holder is declared gone. (nix writes
//! into a store of its own, not C's, so C never holds the path itself.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::tracker::start_tracker;
use common::*;

/// `nix-store --realise` into chroot store `store` from `substituters`, with nix's narinfo disk
/// cache at `xdg` and nix's default retries (5 download attempts).
fn realise(w: &Work, xdg: &Path, store: &str, path: &str, substituters: &str, pk: &str, dry: bool) -> Output {
    let mut c = nix("nix-store", xdg);
    c.arg("--store").arg(w.path(store)).args(["--realise", path]);
    if dry {
        c.arg("--dry-run");
    }
    c.args(["--option", "substituters", substituters, "--option", "trusted-public-keys", pk]).output().unwrap()
}

/// The closure's narinfos, asked of C alone: nix keeps the positive answers (for days) in `xdg`.
fn warm(w: &Work, xdg: &Path, c: &Daemon, top: &str, pk: &str) {
    let out = realise(w, xdg, "client", top, &c.url, pk, true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("will be fetched"), "dry run through C: {err}\n{}", c.log());
}

/// nix takes the closure from `up` after C (first) can no longer deliver: checked byte for byte;
/// returns how long it took.
fn falls_through(w: &Work, xdg: &Path, c: &Daemon, up: &Upstream, f: &Fixture, pk: &str) -> Duration {
    let t0 = Instant::now();
    let out = realise(w, xdg, "client", &f.top, &format!("{} {}", c.url, up.url), pk, false);
    let took = t0.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nix did not complete from the second cache: {err}\n{}", c.log());
    assert!(!err.contains("retrying"), "nix retried a download: {err}");
    w.verify("client", &f.top, pk);
    w.assert_same_nars("client", [&f.top, &f.dep]);
    eprintln!("holder gone: nix completed from the second cache in {took:?}");
    assert!(took < Duration::from_secs(15), "nix took {took:?} to move on");
    took
}

/// C's narinfo for `path` answers 404 (it may take until the holder is declared gone).
async fn narinfo_turns_404(c: &Daemon, path: &str) {
    let url = format!("{}/{}.narinfo", c.url, hash_part(path));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = get(&url).await.status;
        if status == 404 {
            return;
        }
        assert!(Instant::now() < deadline, "C still answers {status} for {path}:\n{}", c.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// C holds no NAR of its own: the dry run must not prefetch the closure (closure_prefetch.rs
/// covers prefetch), so that every NAR request here needs the holder.
const NO_PREFETCH: &[&str] = &["--prefetch-size", "0"];

struct Lab {
    w: Work,
    pk: String,
    f: Fixture,
    up: Upstream,
}

fn lab(name: &str) -> Lab {
    let w = Work::new();
    let (sk, pk) = w.keypair(name);
    let f = w.build_fixture();
    w.sign(&f.top, &sk);
    let up = Upstream::start(&w.binary_cache("upstream", &[&f.top]));
    Lab { w, pk, f, up }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_holder_costs_nix_a_404_and_the_second_cache_serves_the_closure() {
    let Lab { w, pk, f, up } = lab("leaves-killed-1");
    let mut a = seeder(&w, "a", &[&f.top], &pk);
    let c = peer_client(&w, "c", "c-store", &pk, &[&a.p2p_addr()], NO_PREFETCH);
    c.wait_log("have-summary applied");
    let xdg = w.xdg();
    warm(&w, &xdg, &c, &f.top, &pk);
    a.kill();
    c.wait_log("peer disconnected");
    // The NAR URL nix holds from the narinfo is a 404 before any byte.
    let nar = get(&format!("{}/{}", c.url, nar_url_of(&w, &f.top))).await;
    assert_eq!(nar.status, 404, "a NAR with no live source");
    falls_through(&w, &xdg, &c, &up, &f, &pk);
    narinfo_turns_404(&c, &f.top).await;
}

/// Drops every packet to and from a loopback TCP port while it lives (no RST, no FIN: the peer
/// just goes quiet); the rules are removed on drop.
struct Blackhole(Vec<Vec<String>>);

impl Blackhole {
    fn port(port: &str) -> Self {
        let rules: Vec<Vec<String>> = ["--dport", "--sport"]
            .iter()
            .map(|dir| ["INPUT", "-i", "lo", "-p", "tcp", dir, port, "-j", "DROP"].map(String::from).to_vec())
            .collect();
        for r in &rules {
            run(Command::new("iptables").arg("-I").args(r));
        }
        Self(rules)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        for r in &self.0 {
            let _ = Command::new("iptables").arg("-D").args(r).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_holder_cut_off_without_a_word_is_declared_gone_within_seconds() {
    let Lab { w, pk, f, up } = lab("leaves-silent-1");
    let a = seeder(&w, "a", &[&f.top], &pk);
    let c = peer_client(&w, "c", "c-store", &pk, &[&a.p2p_addr()], NO_PREFETCH);
    c.wait_log("have-summary applied");
    let xdg = w.xdg();
    warm(&w, &xdg, &c, &f.top, &pk);
    let port = a.p2p_addr().split('/').nth(4).unwrap().to_owned();
    let mark = c.mark();
    let _cut = Blackhole::port(&port);
    falls_through(&w, &xdg, &c, &up, &f, &pk);
    let gone = Instant::now();
    c.wait_log_after(mark, "peer stopped answering pings");
    eprintln!("silent holder declared gone {:?} after nix finished", gone.elapsed());
    narinfo_turns_404(&c, &f.top).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_holder_the_tracker_still_lists_is_dialled_and_found_gone() {
    let Lab { w, pk, f, up } = lab("leaves-tracked-1");
    // A tracker without its libp2p node cannot see A leave (tests/tracker_forgets_departed_peers.rs
    // shows one that does): it names A until A's record expires.
    let t = start_tracker(&w.path("tracker"), &["--no-p2p"]);
    let tracked = |name: &str, store: &std::path::Path| {
        let args = ["--store-root", store.to_str().unwrap(), "--trusted-public-key", &pk];
        let p2p = ["--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--tracker", &t.url];
        Daemon::start(&w.path(&format!("state-{name}")), &[&args[..], &p2p, NO_PREFETCH].concat())
    };
    let store_a = w.chroot_store("a", &[&f.top]);
    run(&mut peerix_cmd(
        "publish",
        &w.path("state-a"),
        &["--store-root", store_a.to_str().unwrap(), "--trusted-public-key", &pk],
    ));
    let mut a = tracked("a", &store_a);
    a.wait_log("announced to the tracker");
    let c = tracked("c", &w.path("c-store"));
    let xdg = w.xdg();
    warm(&w, &xdg, &c, &f.top, &pk);
    assert!(c.log().contains(&a.peer_id()), "C found A through the tracker");
    a.kill();
    // The tracker still lists A (its record lives until its TTL): C must dial A to learn it is gone.
    let listed = get(&format!("{}/v1/providers/{}", t.url, hash_part(&f.top))).await;
    assert!(listed.text().contains(&a.peer_id()), "the tracker still lists A: {}", listed.text());
    falls_through(&w, &xdg, &c, &up, &f, &pk);
    narinfo_turns_404(&c, &f.top).await;
}
