//! Shared test harness: a real `nix` (Debian's 2.8, single-user as root), fixture closures built from
//! derivations, chroot stores, and the `peerix` binary run as a separate process.
//!
//! Every daemon binds 127.0.0.1 port 0 and reports its address on stderr ("listening on http://…"),
//! which the harness waits for: no fixed ports, no sleeps.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod daemon;
pub mod helia;
pub mod netns;
pub mod nixos;
pub mod rogue;
pub mod tracker;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// Each test crate uses a part of the harness.
#[allow(unused_imports)]
pub use daemon::{
    Daemon, KEEP_DEFAULT_BOOTSTRAP, LOOPBACK_LAN, SeederAndClient, peer_client, seeder, seeder_and_client,
};

pub const NIX_CONFIG: &str =
    "experimental-features = nix-command\nsubstituters =\nsandbox = false\nbuild-users-group =\n";

/// A `Command` for a nix tool with settings that work here without a daemon or network.
pub fn nix(program: &str, xdg_cache: &Path) -> Command {
    let mut c = Command::new(program);
    c.env_remove("NIX_REMOTE").env("NIX_CONFIG", NIX_CONFIG).env("XDG_CACHE_HOME", xdg_cache);
    c
}

/// Runs a command, panicking with its stderr if it fails; returns trimmed stdout.
/// The root CID a running daemon reports for a store path.
pub async fn root_cid(d: &Daemon, store_path: &str) -> String {
    let r = get(&format!("{}/api/paths/{}", d.url, hash_part(store_path))).await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    v["index"]["root_cid"].as_str().unwrap_or_else(|| panic!("not indexed: {v}")).to_owned()
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A unique string per call, for fixture paths no other test (or earlier run) has built.
pub fn nonce() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}-{}-{}", std::process::id(), t, N.fetch_add(1, Ordering::Relaxed))
}

/// A scratch directory with helpers for keys, fixtures and stores.
pub struct Work {
    pub dir: tempfile::TempDir,
}

impl Work {
    pub fn new() -> Self {
        Self { dir: tempfile::Builder::new().prefix("peerix-test-").tempdir().expect("tempdir") }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A fresh narinfo disk cache dir (nix caches hits for 30 days and misses for 1 h).
    pub fn xdg(&self) -> PathBuf {
        self.path(&format!("xdg-{}", nonce()))
    }

    pub fn nix(&self, program: &str) -> Command {
        nix(program, &self.xdg())
    }

    /// `nix-store --generate-binary-cache-key`; returns (secret key file, public key text).
    pub fn keypair(&self, name: &str) -> (PathBuf, String) {
        let sk = self.path(&format!("{name}.sk"));
        let pk = self.path(&format!("{name}.pk"));
        run(self.nix("nix-store").arg("--generate-binary-cache-key").arg(name).arg(&sk).arg(&pk));
        (sk, std::fs::read_to_string(&pk).expect("pk"))
    }

    /// Builds an input-addressed closure (top → dep) in /nix/store: top has an executable and a
    /// symlink into dep. Input-addressed, because content-addressed paths need no signature.
    pub fn build_fixture(&self) -> Fixture {
        let n = nonce();
        let expr = self.path(&format!("fixture-{n}.nix"));
        std::fs::write(
            &expr,
            format!(
                r#"let dep = builtins.derivation {{ name = "peerix-dep"; system = builtins.currentSystem; builder = "/bin/sh";
                     nonce = "{n}"; args = [ "-c" "echo hello-from-dep > $out" ]; }};
in builtins.derivation {{ name = "peerix-top"; system = builtins.currentSystem; builder = "/bin/sh";
     PATH = "/usr/bin:/bin"; nonce = "{n}";
     args = [ "-c" "mkdir -p $out/bin; printf '#!/bin/sh\\ncat ${{dep}}\\n' > $out/bin/show; chmod +x $out/bin/show; ln -s ${{dep}} $out/dep" ]; }}
"#
            ),
        )
        .expect("write fixture");
        let top = run(self.nix("nix-build").arg(&expr).arg("--no-out-link"));
        let dep = run(self.nix("nix-store").args(["-q", "--references"]).arg(&top));
        Fixture { top, dep }
    }

    /// An input-addressed closure (top → dep) whose top path also holds `blob` bytes of random data
    /// (written by the builder), for transfers that span many blocks.
    pub fn build_big_fixture(&self, blob: usize) -> Fixture {
        let n = nonce();
        let expr = self.path(&format!("big-{n}.nix"));
        std::fs::write(
            &expr,
            format!(
                r#"let dep = builtins.derivation {{ name = "peerix-big-dep"; system = builtins.currentSystem; builder = "/bin/sh";
                     nonce = "{n}"; args = [ "-c" "echo hello-from-dep > $out" ]; }};
in builtins.derivation {{ name = "peerix-big"; system = builtins.currentSystem; builder = "/bin/sh";
     PATH = "/usr/bin:/bin"; nonce = "{n}";
     args = [ "-c" "mkdir -p $out/bin; head -c {blob} /dev/urandom > $out/blob; printf '#!/bin/sh\ncat ${{dep}}\n' > $out/bin/show; chmod +x $out/bin/show; ln -s ${{dep}} $out/dep" ]; }}
"#
            ),
        )
        .expect("write fixture");
        let top = run(self.nix("nix-build").arg(&expr).arg("--no-out-link"));
        let dep = run(self.nix("nix-store").args(["-q", "--references"]).arg(&top));
        Fixture { top, dep }
    }

    /// A `file://` binary cache of `paths` (uncompressed; signatures as the store has them) in a
    /// directory, ready for [`Upstream::start`]. Its `nix-cache-info` says `Priority: 50`, as a
    /// remote cache's does (cache.nixos.org: 40): without one, nix 2.8 gives it priority 0 and
    /// asks it before every other substituter.
    pub fn binary_cache(&self, name: &str, paths: &[&str]) -> PathBuf {
        let dir = self.path(name);
        run(self
            .nix("nix")
            .args(["copy", "--to"])
            .arg(format!("file://{}?compression=none", dir.display()))
            .args(paths));
        let info = dir.join("nix-cache-info");
        let text = std::fs::read_to_string(&info).expect("nix-cache-info");
        std::fs::write(&info, format!("{text}Priority: 50\n")).expect("nix-cache-info");
        dir
    }

    /// A closure of `n` paths of `size` random bytes each (`wide-dep-I`) under one top path
    /// (`wide-top`), built in the machine's store; returns (top, all).
    pub fn wide_closure(&self, n: usize, size: usize) -> (String, Vec<String>) {
        let tag = nonce();
        let deps: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"d{i} = builtins.derivation {{ name = "wide-dep-{i}"; system = builtins.currentSystem; builder = "/bin/sh";
                      PATH = "/usr/bin:/bin"; nonce = "{tag}"; args = [ "-c" "head -c {size} /dev/urandom > $out" ]; }};"#
                )
            })
            .collect();
        let links: String = (0..n).map(|i| format!("ln -s ${{d{i}}} $out/d{i}; ")).collect();
        let expr = self.path(&format!("wide-{tag}.nix"));
        std::fs::write(
            &expr,
            format!(
                r#"let {} in builtins.derivation {{ name = "wide-top"; system = builtins.currentSystem; builder = "/bin/sh";
                   PATH = "/usr/bin:/bin"; nonce = "{tag}"; args = [ "-c" "mkdir $out; {links}" ]; }}"#,
                deps.join("\n")
            ),
        )
        .unwrap();
        let top = run(self.nix("nix-build").arg(&expr).arg("--no-out-link"));
        let all: Vec<String> = run(self.nix("nix-store").args(["-qR", &top])).lines().map(str::to_owned).collect();
        assert_eq!(all.len(), n + 1);
        (top, all)
    }

    /// `nix store sign` on the machine's store (the signature travels with `nix copy`).
    pub fn sign(&self, path: &str, sk: &Path) {
        run(self.nix("nix").args(["store", "sign", "-r", "--key-file"]).arg(sk).arg(path));
    }

    /// Adds one path per content to the chroot store `store` (`nix-store --add` of a directory
    /// holding `file_name` with those bytes); returns the store paths, in order.
    pub fn add_files(&self, store: &Path, file_name: &str, contents: impl IntoIterator<Item = Vec<u8>>) -> Vec<String> {
        let mut paths = Vec::new();
        for (i, bytes) in contents.into_iter().enumerate() {
            let src = self.path(&format!("src-{file_name}-{i}"));
            std::fs::create_dir_all(&src).unwrap();
            std::fs::write(src.join(file_name), bytes).unwrap();
            paths.push(run(self.nix("nix-store").arg("--store").arg(store).arg("--add").arg(&src)));
        }
        paths
    }

    /// Copies `path`'s closure into a new chroot store under this work dir.
    pub fn chroot_store(&self, name: &str, paths: &[&str]) -> PathBuf {
        let root = self.path(name);
        let mut cmd = self.nix("nix");
        cmd.args(["copy", "--no-check-sigs", "--to"]).arg(&root).args(paths);
        run(&mut cmd);
        root
    }

    /// Substitutes `path` into a new, empty chroot store from `url`, trusting `keys`.
    pub fn substitute(&self, store: &str, path: &str, url: &str, keys: &str) -> Output {
        self.nix("nix-store")
            .arg("--store")
            .arg(self.path(store))
            .args(["--realise", path, "--option", "substituters", url, "--option", "trusted-public-keys", keys])
            .args(["--option", "download-attempts", "1"])
            .output()
            .expect("nix-store --realise")
    }

    /// Every one of `paths` in chroot store `store` dumps (`nix-store --dump`) to the same NAR as
    /// in the machine's store: byte-exact, not only valid.
    pub fn assert_same_nars<'a>(&self, store: &str, paths: impl IntoIterator<Item = &'a String>) {
        for p in paths {
            let got = nix_dump(&self.path(store).join(p.trim_start_matches('/')));
            assert!(got == nix_dump(Path::new(p)), "{p} differs");
        }
    }

    /// `nix store verify -r`: `path`'s closure in chroot store `store` is intact (contents match
    /// the NarHash nix recorded) and signed by `keys`.
    pub fn verify(&self, store: &str, path: &str, keys: &str) {
        run(self.nix("nix").args(["store", "verify", "--store"]).arg(self.path(store)).args([
            "-r",
            path,
            "--trusted-public-keys",
            keys,
        ]));
    }
}

pub struct Fixture {
    pub top: String,
    pub dep: String,
}

/// The machine's store is shared by every run on it: a fixture (up to 200 MB) is deleted from it
/// when the test is done with it (the chroot stores made from it go with the work dir).
impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = nix("nix-store", Path::new("/tmp"))
            .args(["--delete", &self.top, &self.dep])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Drops every signature from a chroot store's Nix DB (a path built locally, signed by nobody).
pub fn strip_sigs(store_root: &Path) {
    let db = rusqlite::Connection::open(store_root.join("nix/var/nix/db/db.sqlite")).expect("nix db");
    db.execute("UPDATE ValidPaths SET sigs = NULL", []).expect("strip sigs");
}

/// The hash part of a store path.
pub fn hash_part(path: &str) -> &str {
    &path["/nix/store/".len().."/nix/store/".len() + 32]
}

/// The NAR URL peerix hands out for `path` in the machine's store: `nar/<NarHash nix32>.nar`.
pub fn nar_url_of(work: &Work, path: &str) -> String {
    let json = run(work.nix("nix").args(["path-info", "--json", path]));
    let v: serde_json::Value = serde_json::from_str(&json).expect("path-info json");
    let sri = v[0]["narHash"].as_str().expect("narHash").to_owned();
    let nix32 = run(work.nix("nix").args(["hash", "to-base32", &sri]));
    format!("nar/{nix32}.nar")
}

/// `nix-store --dump` of a path (or any file tree).
pub fn nix_dump(path: &Path) -> Vec<u8> {
    let out = nix("nix-store", Path::new("/tmp")).arg("--dump").arg(path).output().expect("nix-store --dump");
    assert!(out.status.success(), "nix-store --dump {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Polls `f` (state a test's own actions change: a DB row, a message received) every 20 ms until
/// it yields a value; panics naming `what` after 60 s.
pub async fn poll_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "never happened within 60 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The NAR URL the daemon's narinfo gives.
pub async fn nar_url_of_store(d: &Daemon, path: &str) -> String {
    let narinfo = get(&format!("{}/{}.narinfo", d.url, hash_part(path))).await;
    assert_eq!(narinfo.status, 200, "{}", narinfo.text());
    narinfo.text().lines().find_map(|l| l.strip_prefix("URL: ")).unwrap().to_owned()
}

/// The thread count of process `pid` (what a stalled client would cost if it held a thread).
pub fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("Threads:")).unwrap().trim().parse().unwrap()
}

/// A plain HTTP response.
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client that does not decompress (we check `Content-Encoding` bytes ourselves).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("client")
}

pub async fn request(c: &reqwest::Client, method: &str, url: &str, headers: &[(&str, &str)]) -> Resp {
    let mut rb = c.request(reqwest::Method::from_bytes(method.as_bytes()).expect("method"), url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("body").to_vec();
    Resp { status, headers, body }
}

pub async fn get(url: &str) -> Resp {
    request(&client(), "GET", url, &[]).await
}

/// Runs a `peerix` subcommand (`publish`, `verify`, …) with `--upstream none` unless given.
pub fn peerix_cmd(sub: &str, state_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerix"));
    cmd.arg(sub).arg("--state-dir").arg(state_dir);
    if !args.contains(&"--upstream") {
        cmd.args(["--upstream", "none"]);
    }
    cmd.args(args).env("RUST_LOG", "warn");
    cmd
}

/// A CAR v1 split into its root list and (CID, data) blocks; panics on malformed framing.
pub fn parse_car(bytes: &[u8]) -> (Vec<u8>, Vec<(cid::Cid, Vec<u8>)>) {
    fn varint(b: &[u8]) -> (u64, usize) {
        let mut v = 0u64;
        for (i, &x) in b.iter().enumerate() {
            v |= ((x & 0x7f) as u64) << (7 * i);
            if x & 0x80 == 0 {
                return (v, i + 1);
            }
        }
        panic!("truncated varint");
    }
    let (hlen, n) = varint(bytes);
    let header = bytes[n..n + hlen as usize].to_vec();
    let mut at = n + hlen as usize;
    let mut blocks = Vec::new();
    while at < bytes.len() {
        let (len, n) = varint(&bytes[at..]);
        let frame = &bytes[at + n..at + n + len as usize];
        let mut cursor = std::io::Cursor::new(frame);
        let cid = cid::Cid::read_bytes(&mut cursor).expect("cid in CAR frame");
        let data = frame[cursor.position() as usize..].to_vec();
        blocks.push((cid, data));
        at += n + len as usize;
    }
    (header, blocks)
}

/// True if `data` hashes (sha2-256) to the digest in `cid`, checked without peerix's own code.
pub fn block_matches(cid: &cid::Cid, data: &[u8]) -> bool {
    use sha2::Digest;
    cid.hash().code() == 0x12 && cid.hash().digest() == sha2::Sha256::digest(data).as_slice()
}

/// Every block CID of a published path's DAG in a state DB: its dag-pb nodes and its chunks.
pub fn indexed_blocks(state_dir: &Path, store_path: &str) -> Vec<cid::Cid> {
    let db = rusqlite::Connection::open(state_dir.join("peerix.sqlite")).expect("state db");
    let hash = hash_part(store_path);
    let mut out = Vec::new();
    for sql in ["SELECT cid FROM local_nodes WHERE hash32 = ?1", "SELECT cid FROM local_chunks WHERE hash32 = ?1"] {
        let mut stmt = db.prepare(sql).unwrap();
        let rows = stmt.query_map([hash], |r| r.get::<_, Vec<u8>>(0)).unwrap();
        out.extend(rows.map(|r| cid::Cid::try_from(r.unwrap()).unwrap()));
    }
    out
}

/// The root CID recorded for a path in a state DB (read straight from SQLite).
pub fn indexed_root(state_dir: &Path, store_path: &str) -> Option<String> {
    let db = rusqlite::Connection::open(state_dir.join("peerix.sqlite")).ok()?;
    db.query_row("SELECT root_cid FROM paths WHERE store_path = ?1 AND status = 'published'", [store_path], |r| {
        r.get::<_, Vec<u8>>(0)
    })
    .ok()
    .and_then(|b| cid::Cid::try_from(b).ok())
    .map(|c| c.to_string())
}

/// `len` deterministic, incompressible-looking bytes (xorshift64 from `seed`): test payloads that
/// chunk into many distinct blocks, without a RNG dependency.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A static binary cache made by `nix copy --to file://…`, served by Python's http.server.
pub struct Upstream {
    child: Child,
    pub url: String,
}

impl Upstream {
    pub fn start(dir: &Path) -> Self {
        let mut child = Command::new("python3")
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 http.server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("banner");
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let port = line.split(" port ").nth(1).and_then(|r| r.split_whitespace().next()).expect("port").to_owned();
        Self { child, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every sample of the exposition, as "name{label=value,…}" → value, through the reference parser
/// (which raises on anything that is not OpenMetrics).
pub fn parse_openmetrics(text: &[u8]) -> std::collections::HashMap<String, f64> {
    const PARSER: &str = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;
    // test.sh names a venv's python when the system's could not take the parser (PEP 668).
    let python = std::env::var("PEERIX_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(python)
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not OpenMetrics: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(text)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}
