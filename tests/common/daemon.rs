//! `peerix serve` as a separate process: started on loopback port 0 with hygiene defaults (no
//! upstream, no bootstrap, no mDNS unless the test says so), its stderr kept so a test can wait
//! for the line its own action caused.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use super::{Work, get, peerix_cmd, run};

/// Flags of a daemon whose IPFS node takes part only in the test's loopback LAN.
pub const LOOPBACK_LAN: [&str; 4] = ["--mode", "lan", "--p2p-listen", "/ip4/127.0.0.1/tcp/0"];

/// A seeder: `paths` copied into chroot store `name`, published, and served on the loopback LAN
/// trusting `pk` (`state-NAME` is its state directory).
pub fn seeder(w: &Work, name: &str, paths: &[&str], pk: &str) -> Daemon {
    let store = w.chroot_store(name, paths);
    let state = w.path(&format!("state-{name}"));
    let args = ["--store-root", store.to_str().unwrap(), "--trusted-public-key", pk];
    run(&mut peerix_cmd("publish", &state, &args));
    Daemon::start(&state, &[&args[..], &LOOPBACK_LAN].concat())
}

/// A daemon (state `state-NAME`) for the store `store` on the loopback LAN, trusting `pk`, with
/// the p2p addresses `peers` as `--peer`s and `extra` flags.
pub fn peer_client(w: &Work, name: &str, store: &str, pk: &str, peers: &[&str], extra: &[&str]) -> Daemon {
    let store = w.path(store);
    let mut args = vec!["--store-root", store.to_str().unwrap(), "--trusted-public-key", pk];
    for a in peers {
        args.extend(["--peer", *a]);
    }
    args.extend(LOOPBACK_LAN);
    args.extend(extra);
    Daemon::start(&w.path(&format!("state-{name}")), &args)
}

/// A seeder under a crowd's pressure, on loopback: A serves a signed 3 MB closure, and C, whose
/// only peer is A, holds A's summary (taken before any rogue comes: A sends its summary to a
/// bounded few peers that send none, and rogues would be those).
pub struct SeederAndClient {
    pub a: Daemon,
    pub a_peer: libp2p::PeerId,
    /// Every block of the top path in A's index: its DAG nodes, then its chunks.
    pub blocks: Vec<cid::Cid>,
    pub c: Daemon,
    pub pk: String,
    pub f: super::Fixture,
    /// Last: the daemons stop before their directories go.
    pub w: Work,
}

/// [`SeederAndClient`] with a signing key named `key`; C substitutes into the store `client`.
pub fn seeder_and_client(key: &str) -> SeederAndClient {
    let w = Work::new();
    let (sk, pk) = w.keypair(key);
    let f = w.build_big_fixture(3_000_000);
    w.sign(&f.top, &sk);
    let a = seeder(&w, "a", &[&f.top], &pk);
    let a_peer = a.peer_id().parse().unwrap();
    let blocks = super::indexed_blocks(&w.path("state-a"), &f.top);
    let c = peer_client(&w, "c", "client", &pk, &[&a.p2p_addr()], &[]);
    c.wait_log("have-summary applied");
    SeederAndClient { a, a_peer, blocks, c, pk, f, w }
}

/// A test-harness flag (never passed to peerix): do not add `--bootstrap none`.
pub const KEEP_DEFAULT_BOOTSTRAP: &str = "--keep-default-bootstrap";

/// A `peerix serve` process; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    pub url: String,
    log: Arc<(Mutex<String>, Condvar)>,
    /// Set: the log reader stops at the next line and closes our end of the daemon's stderr.
    deaf: Arc<std::sync::atomic::AtomicBool>,
}

impl Daemon {
    /// Starts `peerix serve` on 127.0.0.1:0 with `--upstream none` unless `args` names one, and waits
    /// for it to report its address.
    pub fn start(state_dir: &Path, args: &[&str]) -> Self {
        Self::try_start(state_dir, args).unwrap_or_else(|log| panic!("peerix did not start:\n{log}"))
    }

    /// As `start`, but returns the daemon's output if it exits instead of listening.
    pub fn try_start(state_dir: &Path, args: &[&str]) -> Result<Self, String> {
        Self::try_start_env(state_dir, args, &[])
    }

    /// As `try_start`, with extra environment variables.
    pub fn try_start_env(state_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Self, String> {
        Self::try_start_in(&[], state_dir, args, env)
    }

    /// Starts the daemon under a command prefix (e.g. `ip netns exec NS`).
    pub fn start_in(prefix: &[&str], state_dir: &Path, args: &[&str]) -> Self {
        Self::try_start_in(prefix, state_dir, args, &[]).unwrap_or_else(|log| panic!("peerix did not start:\n{log}"))
    }

    fn try_start_in(prefix: &[&str], state_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Self, String> {
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(env!("CARGO_BIN_EXE_peerix"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_peerix")),
        };
        cmd.arg("serve").arg("--listen").arg("127.0.0.1:0").arg("--state-dir").arg(state_dir);
        if !args.contains(&"--upstream") {
            cmd.args(["--upstream", "none"]);
        }
        // A test daemon never serves the machine's own store (it holds every test's fixtures)
        // unless the test names it: by default it gets an empty store of its own.
        if !args.contains(&"--store-root") {
            cmd.arg("--store-root").arg(state_dir.join("empty-store"));
        }
        // No test reaches past loopback: a daemon gets an IPFS node only when the test names its
        // listen address (and then never the public bootstrap peers or mDNS unless it says so).
        // (`KEEP_DEFAULT_BOOTSTRAP` leaves the daemon's own default: only for a daemon in a network
        // namespace with nothing but loopback, where a dial cannot leave.)
        if !args.contains(&"--p2p-listen") {
            cmd.arg("--no-p2p");
        } else if !args.contains(&"--bootstrap") && !args.contains(&KEEP_DEFAULT_BOOTSTRAP) {
            cmd.args(["--bootstrap", "none"]);
        }
        if args.contains(&"--p2p-listen") && !args.contains(&"--mdns") {
            cmd.arg("--no-mdns");
        }
        cmd.args(args.iter().filter(|a| **a != "--mdns" && **a != KEEP_DEFAULT_BOOTSTRAP))
            .envs(env.iter().copied())
            .env(
                "RUST_LOG",
                "info,peerix::p2p=debug,peerix::substitute=debug,peerix::http=debug,peerix::httpd=debug,peerix::publish=debug",
            );
        Self::spawn(cmd)
    }

    /// Runs `cmd` (a peerix server: `serve` or `tracker`) and waits for its "listening on http://…"
    /// line; returns its output if it exits first.
    pub fn spawn(mut cmd: Command) -> Result<Self, String> {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn peerix");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        let deaf = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let deaf_reader = deaf.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if deaf_reader.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send(addr);
                }
                if let Ok(mut l) = sink.0.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
                sink.1.notify_all();
            }
        });
        // The channel closes when stderr does, i.e. when the process exits without listening.
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => {
                let addr: SocketAddr = addr.parse().expect("address");
                Ok(Self { child, addr, url: format!("http://{addr}"), log, deaf })
            }
            // It exited (stderr closed) or hangs before listening: either way it is stopped first,
            // so a daemon that never listens fails the test instead of hanging the suite.
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(log.0.lock().map(|l| l.clone()).unwrap_or_default())
            }
        }
    }

    pub fn log(&self) -> String {
        self.log.0.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits (on the daemon's log, not a timer) for a line containing `needle`; panics after 60 s.
    pub fn wait_log(&self, needle: &str) -> String {
        self.wait_log_for(needle, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("no log line with {needle:?} within 60 s:\n{}", self.log()))
    }

    /// Waits for the `n`-th log line containing `needle`; panics after 60 s.
    pub fn wait_log_count(&self, needle: &str, n: usize) {
        let (lock, cvar) = &*self.log;
        let mut log = lock.lock().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while log.lines().filter(|l| l.contains(needle)).count() < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "fewer than {n} log lines with {needle:?} within 60 s:\n{log}");
            log = cvar.wait_timeout(log, left).unwrap().0;
        }
    }

    /// As `wait_log`, giving up (with `None`) after `limit`.
    pub fn wait_log_for(&self, needle: &str, limit: Duration) -> Option<String> {
        self.wait_log_from(0, needle, limit)
    }

    /// `peerix fetch <cid> -o <out>` through this daemon's RPC (`cat` over bitswap), as a user runs it.
    pub fn fetch(&self, cid: &str, out: &Path) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_peerix"))
            .args(["fetch", cid, "--url", &self.url, "-o"])
            .arg(out)
            .output()
            .unwrap()
    }

    /// A mark in the log (the lines so far): [`Self::wait_log_after`] looks only past it, so a line
    /// an earlier event wrote cannot stand in for the one the test's next action causes.
    pub fn mark(&self) -> usize {
        self.log.0.lock().map(|l| l.lines().count()).unwrap_or(0)
    }

    /// As `wait_log`, for a line written after `mark`.
    pub fn wait_log_after(&self, mark: usize, needle: &str) -> String {
        self.wait_log_from(mark, needle, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("no log line with {needle:?} after line {mark} within 60 s:\n{}", self.log()))
    }

    /// Waits for lines containing each of `needles`, in that order, after `mark`; panics after 60 s.
    pub fn wait_log_in_order(&self, mark: usize, needles: &[&str]) {
        let (lock, cvar) = &*self.log;
        let mut log = lock.lock().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut want = needles.iter().peekable();
            for line in log.lines().skip(mark) {
                if want.peek().is_some_and(|n| line.contains(*n)) {
                    want.next();
                }
            }
            if want.peek().is_none() {
                return;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "no lines with {needles:?} in order after line {mark} within 60 s:\n{log}");
            log = cvar.wait_timeout(log, left).unwrap().0;
        }
    }

    fn wait_log_from(&self, mark: usize, needle: &str, limit: Duration) -> Option<String> {
        let (lock, cvar) = &*self.log;
        let mut log = lock.lock().unwrap();
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(line) = log.lines().skip(mark).find(|l| l.contains(needle)) {
                return Some(line.to_owned());
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            log = cvar.wait_timeout(log, left).unwrap().0;
        }
    }

    /// The daemon's p2p address (`/ip4/…/tcp/…/p2p/<id>`), once it listens.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn p2p_addr(&self) -> String {
        let line = self.wait_log("p2p listening on /ip4/");
        line.split("p2p listening on ").nth(1).unwrap().split_whitespace().next().unwrap().to_owned()
    }

    /// `/api/status`.
    pub async fn status(&self) -> serde_json::Value {
        serde_json::from_slice(&get(&format!("{}/api/status", self.url)).await.body).expect("status json")
    }

    /// The daemon's peer id.
    pub fn peer_id(&self) -> String {
        self.p2p_addr().rsplit('/').next().unwrap().to_owned()
    }

    /// Polls `/api/status` (the state this test's requests change) until `ok` holds; panics with
    /// the last status after 60 s.
    pub async fn wait_status(&self, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.status().await;
            if ok(&s) {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "status never showed {what}:\n{s:#}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops reading the daemon's stderr and closes the pipe (at its next log line), as a log
    /// shipper that goes away does: the daemon's later writes to stderr fail with EPIPE.
    pub fn close_stderr(&self) {
        self.deaf.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sends SIGTERM and waits (at most 20 s) for the process to exit: how long it took, and its
    /// exit status (`None` if it had to be killed).
    pub fn terminate(&mut self) -> (Duration, Option<std::process::ExitStatus>) {
        self.stop_with("-TERM")
    }

    /// As [`Self::terminate`], with another signal (`-INT`: Ctrl-C).
    pub fn stop_with(&mut self, signal: &str) -> (Duration, Option<std::process::ExitStatus>) {
        let t = std::time::Instant::now();
        let _ = Command::new("kill").arg(signal).arg(self.child.id().to_string()).status();
        while t.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (t.elapsed(), Some(status));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        (t.elapsed(), None)
    }

    /// Kills the process at once (SIGKILL), as a crash or power loss would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// True if the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.alive() {
            return;
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        for _ in 0..100 {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
