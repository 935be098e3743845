//! Built-in defaults and limits of `peerix serve`, each with why it is what it is.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:12304";
pub const DEFAULT_UPSTREAM: &str = "https://cache.nixos.org";
/// Below cache.nixos.org's 40, so nix asks us first.
pub const DEFAULT_PRIORITY: u32 = 30;
/// Matches nix's own negative narinfo TTL: a path upstream lacks is asked about again after an hour.
pub const DEFAULT_NEGATIVE_TTL_SECS: u64 = 3600;

/// Nix caches a miss for an hour and asks about every path of a closure: a quarter second bounds
/// what a peer that does not answer costs each path, while a peer on a LAN answers in ~1 ms.
pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_millis(250);
/// Prefetch buffer: a 400-path closure of mostly small NARs fits in a few tens of MiB.
pub const DEFAULT_PREFETCH_SIZE: u64 = 64 << 20;
/// nix fetches a closure's NARs within seconds of its narinfos.
pub const DEFAULT_PREFETCH_AGE: Duration = Duration::from_secs(30);
/// A config file is a few KiB; anything past 1 MiB is not one.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Indexer jobs at most: each holds a core and a 256 KiB read buffer while it runs (the indexer's
/// semaphore panicked on 2^61 permits).
pub const MAX_INDEX_JOBS: usize = 256;

/// TCP and QUIC on 12306, next to the HTTP port 12304 and the tracker's 12305.
pub const DEFAULT_P2P_LISTEN: &[&str] = &["/ip4/0.0.0.0/tcp/12306", "/ip4/0.0.0.0/udp/12306/quic-v1"];

/// 10 GiB of received blocks.
pub const DEFAULT_CACHE_SIZE: u64 = 10 << 30;

pub(super) fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 12304))
}

/// `/var/lib/peerix` for root (the NixOS module's StateDirectory), else the XDG state dir.
pub fn default_state_dir() -> Option<PathBuf> {
    if rustix::process::geteuid().is_root() {
        return Some(PathBuf::from("/var/lib/peerix"));
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("peerix"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/peerix"))
}
