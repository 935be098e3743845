//! A `peerix tracker` process on 127.0.0.1 (port 0), and announcements signed as a daemon signs them.

use std::path::Path;
use std::process::Command;

use libp2p::identity::Keypair;
use peerix::tracker_wire::{Announcement, Signed};

use super::Daemon;

/// Starts `peerix tracker` with its state in `state_dir` and `args` (e.g. `--ttl 2`).
pub fn start_tracker(state_dir: &Path, args: &[&str]) -> Daemon {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerix"));
    cmd.arg("tracker").arg("--listen").arg("127.0.0.1:0").arg("--state-dir").arg(state_dir);
    // The libp2p node on loopback, on a free port (unless the test places it, e.g. in a namespace).
    if !args.iter().any(|a| *a == "--p2p-listen" || *a == "--no-p2p") {
        cmd.args(["--p2p-listen", "/ip4/127.0.0.1/tcp/0"]);
    }
    cmd.args(args);
    cmd.env("RUST_LOG", "info,peerix::tracker=debug");
    Daemon::spawn(cmd).unwrap_or_else(|log| panic!("the tracker did not start:\n{log}"))
}

/// A peer as the tracker sees it: a key and the announcements it signs.
pub struct Announcer {
    pub key: Keypair,
    pub peer_id: String,
    nonce: std::sync::atomic::AtomicU64,
}

impl Announcer {
    pub fn new() -> Self {
        let key = Keypair::generate_ed25519();
        let peer_id = key.public().to_peer_id().to_string();
        Self { key, peer_id, nonce: Default::default() }
    }

    /// An announcement of ours, now, with a fresh nonce: full when `base` is `None`.
    pub fn announcement(&self, generation: u64, base: Option<u64>, paths: &[String]) -> Announcement {
        let n = self.nonce.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Announcement {
            peer_id: self.peer_id.clone(),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            timestamp: peerix::store::now_secs(),
            nonce: format!("{:016x}{:016x}", std::process::id(), n),
            generation,
            full: base.is_none().then(|| paths.to_vec()),
            base,
            add: if base.is_some() { paths.to_vec() } else { Vec::new() },
            remove: Vec::new(),
        }
    }

    pub fn sign(&self, a: &Announcement) -> String {
        serde_json::to_string(&Signed::sign(a, &self.key).unwrap()).unwrap()
    }
}

/// `n` distinct valid store path hashes.
pub fn hashes(n: usize, seed: u64) -> Vec<String> {
    const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    (0..n)
        .map(|i| {
            let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            (0..32)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    NIX32[(x >> 59) as usize] as char
                })
                .collect()
        })
        .collect()
}
