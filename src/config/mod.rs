//! Configuration of `peerix serve`: command-line flags, `PEERIX_*` environment variables and a TOML
//! file (`--config`), in that order of precedence, over built-in defaults.
//!
//! [`ServeArgs`] is what clap parses (every field optional, so we can tell "not given" from a
//! default); [`FileConfig`] is the TOML file (unknown keys are an error: a typo must not silently
//! fall back to a default); [`ServeConfig`] is the validated result the daemon runs on. Key files
//! are read and parsed here, so an unreadable or malformed key stops the start with a clear message.

mod effective;
mod units;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use libp2p::multiaddr::Protocol;
use serde::Deserialize;

pub use self::units::{http_url, in_range, parse_duration, parse_size};
use crate::nix::signing::{PublicKey, SecretKey};
use crate::trust::CACHE_NIXOS_ORG_KEY;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:12304";
pub const DEFAULT_UPSTREAM: &str = "https://cache.nixos.org";
/// Below cache.nixos.org's 40, so nix asks us first.
pub const DEFAULT_PRIORITY: u32 = 30;
/// Matches nix's own negative narinfo TTL: a path upstream lacks is asked about again after an hour.
pub const DEFAULT_NEGATIVE_TTL_SECS: u64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Parse { path: PathBuf, line: usize, message: String },
    #[error("trusted public key {key:?} is invalid")]
    TrustedKey {
        key: String,
        #[source]
        source: crate::nix::signing::KeyError,
    },
    #[error("private key file {path} is unusable")]
    PrivateKey {
        path: PathBuf,
        #[source]
        source: crate::nix::signing::KeyError,
    },
    #[error("{key} = {value} is out of range: allowed {allowed}")]
    Range { key: &'static str, value: String, allowed: &'static str },
    #[error("config file {path} is larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("upstream {0:?} must be an http:// or https:// URL, or \"none\"")]
    Upstream(String),
    #[error("no state directory: set --state-dir, $XDG_STATE_HOME or $HOME")]
    NoStateDir,
    #[error("{key} {value:?} is not a number of bytes with an optional K, M, G or T suffix")]
    Size { key: &'static str, value: String },
    #[error("{0:?} is not a multiaddr")]
    Multiaddr(String),
    #[error("peer {0:?} must be a multiaddr ending in /p2p/<peer id>")]
    Peer(String),
    #[error("fallback {0:?} must be an http(s):// gateway URL or a kubo+http(s):// RPC URL")]
    Fallback(String),
    #[error("{key} {value:?} is not a duration: milliseconds, or a number with ms or s, up to an hour")]
    Duration { key: &'static str, value: String },
    #[error("tracker {0:?} must be an http:// or https:// URL")]
    Tracker(String),
    #[error("{key} {value:?} is not usable: {why}")]
    Url { key: &'static str, value: String, why: &'static str },
}

/// Flags of `peerix serve`. Every one can also be set by its `PEERIX_*` variable or the config file.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML config file; keys are the long flag names (`listen`, `trusted-public-keys`, …).
    #[arg(long, env = "PEERIX_CONFIG", value_name = "FILE", help_heading = "Basics")]
    pub config: Option<PathBuf>,

    /// Address of the binary-cache HTTP server [default: 127.0.0.1:12304]. Port 0 picks a free port
    /// (the chosen address is logged as "listening on http://…").
    #[arg(long, env = "PEERIX_LISTEN", value_name = "ADDR", help_heading = "Basics")]
    pub listen: Option<SocketAddr>,

    /// Directory for peerix's SQLite state [default: /var/lib/peerix as root, else
    /// $XDG_STATE_HOME/peerix or ~/.local/state/peerix].
    #[arg(long, env = "PEERIX_STATE_DIR", value_name = "DIR", help_heading = "Basics")]
    pub state_dir: Option<PathBuf>,

    /// Root of the Nix store to serve [default: /]: files under DIR/nix/store, Nix's database at
    /// DIR/nix/var/nix/db/db.sqlite (the layout of `nix --store DIR`). Paths are still named /nix/store/….
    #[arg(long, env = "PEERIX_STORE_ROOT", value_name = "DIR", help_heading = "Basics")]
    pub store_root: Option<PathBuf>,

    /// `Priority` in nix-cache-info; lower is preferred, cache.nixos.org is 40 [default: 30].
    #[arg(long, env = "PEERIX_PRIORITY", help_heading = "Basics", hide_short_help = true)]
    pub priority: Option<u32>,

    /// A key (name:base64) whose signatures make a local path shareable; repeatable
    /// [default: cache.nixos.org-1's key]. Giving any replaces the default.
    #[arg(
        long = "trusted-public-key",
        env = "PEERIX_TRUSTED_PUBLIC_KEYS",
        value_delimiter = ' ',
        value_name = "KEY",
        help_heading = "What is shared"
    )]
    pub trusted_public_keys: Vec<String>,

    /// Binary cache asked whether it has a local path with the same NarHash (then it is shareable),
    /// or "none" [default: https://cache.nixos.org].
    #[arg(long, env = "PEERIX_UPSTREAM", value_name = "URL", help_heading = "What is shared")]
    pub upstream: Option<String>,

    /// Seconds before asking upstream again about a path it did not have [default: 3600].
    #[arg(
        long,
        env = "PEERIX_UPSTREAM_NEGATIVE_TTL",
        value_name = "SECS",
        help_heading = "What is shared",
        hide_short_help = true
    )]
    pub upstream_negative_ttl: Option<u64>,

    /// Serve every valid local path, signed or not. Exposes private builds: use only on a trusted network.
    #[arg(long, env = "PEERIX_SERVE_PRIVATE", help_heading = "What is shared")]
    pub serve_private: bool,

    /// Secret key (Nix's name:base64 format, e.g. from `peerix keygen`) to add our signature to every
    /// narinfo, next to the signatures Nix's DB holds.
    #[arg(long, env = "PEERIX_PRIVATE_KEY_FILE", value_name = "FILE", help_heading = "What is shared")]
    pub private_key_file: Option<PathBuf>,

    /// Store paths chunked at once by the background indexer; each uses one core while it runs
    /// [default: 1, so a first scan of a big store leaves the machine usable].
    #[arg(
        long,
        env = "PEERIX_INDEX_JOBS",
        value_name = "N",
        help_heading = "Indexing and memory",
        hide_short_help = true
    )]
    pub index_jobs: Option<usize>,

    /// Read rate cap of the indexer in bytes per second, e.g. 100M, or 0 for none [default for
    /// `serve`: 256M, so background indexing leaves the disk to the user; for `publish`: none].
    #[arg(
        long,
        env = "PEERIX_INDEX_RATE",
        value_name = "BYTES",
        help_heading = "Indexing and memory",
        hide_short_help = true
    )]
    pub index_rate: Option<String>,

    /// Cap on blocks kept from peers and fallbacks, e.g. 10G [default: 10G]. Local paths are never
    /// copied and do not count.
    #[arg(
        long,
        env = "PEERIX_CACHE_SIZE",
        value_name = "BYTES",
        help_heading = "Indexing and memory",
        hide_short_help = true
    )]
    pub cache_size: Option<String>,

    /// Address for the IPFS node to listen on; repeatable [default: /ip4/0.0.0.0/tcp/12306 and
    /// /ip4/0.0.0.0/udp/12306/quic-v1].
    #[arg(
        long = "p2p-listen",
        env = "PEERIX_P2P_LISTEN",
        value_delimiter = ' ',
        value_name = "MULTIADDR",
        help_heading = "Peers",
        hide_short_help = true
    )]
    pub p2p_listen: Vec<String>,

    /// Peer to join the DHT through (/…/p2p/<id>); repeatable. The public IPFS bootstrap peers are
    /// used only when none is given; `none` means no bootstrap at all.
    #[arg(long, env = "PEERIX_BOOTSTRAP", value_delimiter = ' ', value_name = "MULTIADDR", help_heading = "Peers")]
    pub bootstrap: Vec<String>,

    /// `ipfs`: Kademlia DHT + mDNS; `lan`: mDNS only, nothing leaves the local network [default: ipfs].
    #[arg(long, env = "PEERIX_MODE", value_enum, help_heading = "Peers")]
    pub mode: Option<crate::p2p::Mode>,

    /// Do not look for peers with mDNS (multicast on every interface).
    #[arg(long, env = "PEERIX_NO_MDNS", help_heading = "Peers", hide_short_help = true)]
    pub no_mdns: bool,

    /// An address other peers can reach us at (announced in provider records); repeatable.
    #[arg(
        long = "external-address",
        env = "PEERIX_EXTERNAL_ADDRESSES",
        value_delimiter = ' ',
        value_name = "MULTIADDR",
        help_heading = "Networking (advanced)",
        hide_short_help = true
    )]
    pub external_addresses: Vec<String>,

    /// Act as a DHT server from the start and announce our listen addresses as reachable, as kubo's
    /// `dhtserver` routing does. For LANs and labs where no peer can confirm our address (AutoNAT).
    #[arg(long, env = "PEERIX_DHT_SERVER", help_heading = "Networking (advanced)", hide_short_help = true)]
    pub dht_server: bool,

    /// Published paths announced to the DHT per second at most (each is a DHT walk) [default: 10].
    #[arg(
        long,
        env = "PEERIX_PROVIDE_RATE",
        value_name = "N",
        help_heading = "Networking (advanced)",
        hide_short_help = true
    )]
    pub provide_rate: Option<u32>,

    /// Run no IPFS node: serve the local store over HTTP only.
    #[arg(long, env = "PEERIX_NO_P2P", help_heading = "Peers")]
    pub no_p2p: bool,

    /// A peerix node to stay connected to (/…/p2p/<id>), dialled at start and again with backoff
    /// whenever the connection drops; repeatable. For machines that know each other (a desktop and
    /// a laptop, CI runners); works in both modes.
    #[arg(
        long = "peer",
        env = "PEERIX_PEERS",
        value_delimiter = ' ',
        value_name = "MULTIADDR",
        help_heading = "Peers"
    )]
    pub peers: Vec<String>,

    /// How long a narinfo lookup may ask peers before answering "not found", e.g. 250ms or 1s
    /// [default: 250ms]. Nix caches that answer for an hour and asks about every path of a closure,
    /// so this bounds what a miss costs every build.
    #[arg(
        long,
        env = "PEERIX_LOOKUP_TIMEOUT",
        value_name = "DURATION",
        help_heading = "Peers",
        hide_short_help = true
    )]
    pub lookup_timeout: Option<String>,

    /// Memory for NARs fetched from peers before nix asks for them, e.g. 64M, or 0 to turn
    /// prefetch off [default: 64M]. nix asks a closure's narinfos before its NARs: each accepted
    /// narinfo's NAR (up to a quarter of this, at most 8M) is fetched and verified at once.
    #[arg(
        long,
        env = "PEERIX_PREFETCH_SIZE",
        value_name = "BYTES",
        help_heading = "Indexing and memory",
        hide_short_help = true
    )]
    pub prefetch_size: Option<String>,

    /// A prefetched NAR nix has not asked for within this is dropped, e.g. 30s [default: 30s].
    #[arg(
        long,
        env = "PEERIX_PREFETCH_AGE",
        value_name = "DURATION",
        help_heading = "Indexing and memory",
        hide_short_help = true
    )]
    pub prefetch_age: Option<String>,

    /// Where to get blocks no peer delivers in time: a trustless gateway (http(s)://host:port, asked
    /// `/ipfs/<cid>?format=raw`) or a kubo RPC API (kubo+http://host:5001); repeatable, tried in
    /// order. Every block is checked against its CID.
    #[arg(
        long = "fallback",
        env = "PEERIX_FALLBACKS",
        value_delimiter = ' ',
        value_name = "URL",
        help_heading = "Peers",
        hide_short_help = true
    )]
    pub fallbacks: Vec<String>,

    /// A `peerix tracker` (http(s)://host:12305) to announce our published paths to and to ask for
    /// peers that have a path (under `--lookup-timeout`). Ignored in lan mode.
    #[arg(long, env = "PEERIX_TRACKER", value_name = "URL", help_heading = "Peers")]
    pub tracker: Option<String>,

    /// A libp2p relay (v2) to hold a reservation on (/…/p2p/<id>), so peers can reach us through it
    /// when we are behind NAT; repeatable. The tracker's node is used as one without this flag.
    #[arg(
        long = "relay",
        env = "PEERIX_RELAYS",
        value_delimiter = ' ',
        value_name = "MULTIADDR",
        help_heading = "Networking (advanced)",
        hide_short_help = true
    )]
    pub relays: Vec<String>,

    /// Map our p2p port on the router by UPnP (IGD), so peers can dial us directly.
    #[arg(long, env = "PEERIX_UPNP", help_heading = "Networking (advanced)", hide_short_help = true)]
    pub upnp: bool,
}

/// The config file. Keys use the long flag names.
#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub state_dir: Option<PathBuf>,
    pub store_root: Option<PathBuf>,
    pub priority: Option<u32>,
    pub trusted_public_keys: Option<Vec<String>>,
    pub upstream: Option<String>,
    pub upstream_negative_ttl: Option<u64>,
    pub serve_private: Option<bool>,
    pub private_key_file: Option<PathBuf>,
    pub index_jobs: Option<usize>,
    pub index_rate: Option<String>,
    pub cache_size: Option<String>,
    pub p2p_listen: Option<Vec<String>>,
    pub bootstrap: Option<Vec<String>>,
    pub mode: Option<crate::p2p::Mode>,
    pub mdns: Option<bool>,
    pub external_addresses: Option<Vec<String>>,
    pub provide_rate: Option<u32>,
    pub dht_server: Option<bool>,
    pub p2p: Option<bool>,
    pub peers: Option<Vec<String>>,
    pub lookup_timeout: Option<String>,
    pub prefetch_size: Option<String>,
    pub prefetch_age: Option<String>,
    pub fallbacks: Option<Vec<String>>,
    pub tracker: Option<String>,
    pub relays: Option<Vec<String>>,
    pub upnp: Option<bool>,
}

/// What the daemon runs with.
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub store_root: PathBuf,
    pub priority: u32,
    pub trusted_keys: Vec<PublicKey>,
    pub upstream: Option<String>,
    pub upstream_negative_ttl: Duration,
    pub serve_private: bool,
    pub signer: Option<SecretKey>,
    /// Where `signer` was read from.
    pub private_key_file: Option<PathBuf>,
    pub index_jobs: usize,
    /// Bytes per second the indexer may read; `None` when not configured (each command picks its
    /// default), `Some(0)` for no cap.
    pub index_rate: Option<u64>,
    pub cache_size: u64,
    /// The IPFS node's settings; `None` with `--no-p2p`.
    pub p2p: Option<crate::p2p::Config>,
    /// Deadline of a narinfo lookup among peers.
    pub lookup_timeout: Duration,
    pub prefetch: crate::substitute::PrefetchLimits,
    /// Block sources of last resort.
    pub fallbacks: Vec<crate::substitute::Fallback>,
    /// `--tracker`; `None` in lan mode and without an IPFS node.
    pub tracker: Option<String>,
}

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

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        // Capped: `--config /dev/zero` (or a log file named by mistake) must not be read forever.
        use std::io::Read;
        let read = |source| ConfigError::Read { path: path.to_owned(), source };
        let mut text = String::new();
        std::fs::File::open(path).map_err(read)?.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text).map_err(read)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge { path: path.to_owned() });
        }
        Self::parse(&text, path)
    }

    /// The config in `text`; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            // "FILE:LINE: message", as compilers say it, so an editor jumps to the line.
            let line = e.span().map_or(0, |s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().trim().to_owned();
            ConfigError::Parse { path: path.to_owned(), line, message }
        })
    }
}

impl ServeConfig {
    pub fn resolve(args: ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        Self::merge(args, file)
    }

    /// Flags (and their variables) over the file's values over the defaults.
    pub fn merge(args: ServeArgs, file: FileConfig) -> Result<Self, ConfigError> {
        let pick = |flag: Vec<String>, file: Option<Vec<String>>| if flag.is_empty() { file } else { Some(flag) };
        let listen = args.listen.or(file.listen).unwrap_or_else(default_listen);
        let state_dir = match args.state_dir.or(file.state_dir) {
            Some(d) => d,
            None => default_state_dir().ok_or(ConfigError::NoStateDir)?,
        };
        let store_root = args.store_root.or(file.store_root).unwrap_or_else(|| PathBuf::from("/"));
        let key_texts = if !args.trusted_public_keys.is_empty() {
            args.trusted_public_keys
        } else {
            file.trusted_public_keys.unwrap_or_else(|| vec![CACHE_NIXOS_ORG_KEY.to_owned()])
        };
        let trusted_keys = key_texts
            .iter()
            .filter(|k| !k.trim().is_empty())
            .map(|k| PublicKey::parse(k).map_err(|source| ConfigError::TrustedKey { key: k.clone(), source }))
            .collect::<Result<Vec<_>, _>>()?;
        let upstream = match args.upstream.or(file.upstream).unwrap_or_else(|| DEFAULT_UPSTREAM.to_owned()) {
            u if u == "none" || u.is_empty() => None,
            u if u.starts_with("http://") || u.starts_with("https://") => Some(http_url("upstream", &u)?),
            u => return Err(ConfigError::Upstream(u)),
        };
        let private_key_file = args.private_key_file.or(file.private_key_file);
        let signer = match &private_key_file {
            Some(p) => {
                Some(SecretKey::from_file(p).map_err(|source| ConfigError::PrivateKey { path: p.clone(), source })?)
            }
            None => None,
        };
        let tracker = match args.tracker.or(file.tracker).filter(|t| !t.is_empty()) {
            Some(t) if !(t.starts_with("http://") || t.starts_with("https://")) => {
                return Err(ConfigError::Tracker(t));
            }
            Some(t) => Some(http_url("tracker", &t)?),
            None => None,
        };
        let tracker = match tracker {
            Some(_) if args.no_p2p || file.p2p == Some(false) => None,
            Some(_) if args.mode.or(file.mode) == Some(crate::p2p::Mode::Lan) => {
                tracing::warn!("--tracker is ignored in lan mode (nothing leaves the local network)");
                None
            }
            t => t,
        };
        let has_tracker = tracker.is_some();
        Ok(Self {
            tracker,
            listen,
            state_dir,
            store_root,
            priority: args.priority.or(file.priority).unwrap_or(DEFAULT_PRIORITY),
            trusted_keys,
            upstream,
            upstream_negative_ttl: Duration::from_secs(in_range(
                "upstream-negative-ttl",
                args.upstream_negative_ttl.or(file.upstream_negative_ttl).unwrap_or(DEFAULT_NEGATIVE_TTL_SECS),
                0..=365 * 86_400,
                "0 to 31536000 seconds (a year)",
            )?),
            serve_private: args.serve_private || file.serve_private.unwrap_or(false),
            signer,
            private_key_file,
            index_jobs: in_range(
                "index-jobs",
                args.index_jobs.or(file.index_jobs).unwrap_or(1),
                1..=MAX_INDEX_JOBS,
                "1 to 256",
            )?,
            index_rate: args.index_rate.or(file.index_rate).map(|s| parse_size("index-rate", &s)).transpose()?,
            cache_size: match args.cache_size.or(file.cache_size) {
                // Below 16 MiB (16 transfer units) a transfer evicts its own blocks.
                Some(s) => in_range("cache-size", parse_size("cache-size", &s)?, 16 << 20..=u64::MAX, "16M or more")?,
                None => DEFAULT_CACHE_SIZE,
            },
            lookup_timeout: match args.lookup_timeout.or(file.lookup_timeout) {
                Some(t) => parse_duration("lookup-timeout", &t)?,
                None => DEFAULT_LOOKUP_TIMEOUT,
            },
            prefetch: crate::substitute::PrefetchLimits::new(
                match args.prefetch_size.or(file.prefetch_size) {
                    Some(s) => parse_size("prefetch-size", &s)?,
                    None => DEFAULT_PREFETCH_SIZE,
                },
                match args.prefetch_age.or(file.prefetch_age) {
                    Some(t) => parse_duration("prefetch-age", &t)?,
                    None => DEFAULT_PREFETCH_AGE,
                },
            ),
            fallbacks: pick(args.fallbacks, file.fallbacks)
                .unwrap_or_default()
                .iter()
                .map(|u| {
                    let f = crate::substitute::Fallback::parse(u).ok_or_else(|| ConfigError::Fallback(u.clone()))?;
                    http_url("fallback", f.url())?;
                    Ok(f)
                })
                .collect::<Result<_, _>>()?,
            p2p: if args.no_p2p || file.p2p == Some(false) {
                None
            } else {
                let listen = pick(args.p2p_listen, file.p2p_listen)
                    .unwrap_or_else(|| DEFAULT_P2P_LISTEN.iter().map(|s| s.to_string()).collect());
                let mode = args.mode.or(file.mode).unwrap_or(crate::p2p::Mode::Ipfs);
                let bootstrap = match pick(args.bootstrap, file.bootstrap) {
                    // `lan` runs no DHT: nothing to bootstrap, and nothing may leave the LAN.
                    Some(b) if mode == crate::p2p::Mode::Lan => {
                        if b.iter().any(|x| x != "none") {
                            tracing::warn!("--bootstrap is ignored in lan mode (no DHT); use --peer for known peers");
                        }
                        Vec::new()
                    }
                    None if mode == crate::p2p::Mode::Lan => Vec::new(),
                    None => crate::p2p::PUBLIC_BOOTSTRAP.iter().map(|s| s.to_string()).collect(),
                    Some(b) if b.iter().any(|x| x == "none") => Vec::new(),
                    Some(b) => b,
                };
                let peers = peer_addrs(&pick(args.peers, file.peers).unwrap_or_default())?;
                let relays = peer_addrs(&pick(args.relays, file.relays).unwrap_or_default())?;
                Some(crate::p2p::Config {
                    listen: multiaddrs(&listen)?,
                    bootstrap: multiaddrs(&bootstrap)?,
                    peers,
                    mode,
                    mdns: !args.no_mdns && file.mdns.unwrap_or(true),
                    external: multiaddrs(&pick(args.external_addresses, file.external_addresses).unwrap_or_default())?,
                    provide_rate: args.provide_rate.or(file.provide_rate).unwrap_or(10).max(1),
                    dht_server: args.dht_server || file.dht_server.unwrap_or(false),
                    autonat: has_tracker || !relays.is_empty(),
                    relays,
                    upnp: args.upnp || file.upnp.unwrap_or(false),
                })
            },
        })
    }
}

/// TCP and QUIC on 12306, next to the HTTP port 12304 and the tracker's 12305.
pub const DEFAULT_P2P_LISTEN: &[&str] = &["/ip4/0.0.0.0/tcp/12306", "/ip4/0.0.0.0/udp/12306/quic-v1"];

fn multiaddrs(list: &[String]) -> Result<Vec<libp2p::Multiaddr>, ConfigError> {
    list.iter().map(|s| s.parse().map_err(|_| ConfigError::Multiaddr(s.clone()))).collect()
}

/// Multiaddrs that must name their peer (`--peer`, `--relay`): each ends in `/p2p/<id>`.
fn peer_addrs(list: &[String]) -> Result<Vec<libp2p::Multiaddr>, ConfigError> {
    let addrs = multiaddrs(list)?;
    match addrs.iter().find(|a| !matches!(a.iter().last(), Some(Protocol::P2p(_)))) {
        Some(bad) => Err(ConfigError::Peer(bad.to_string())),
        None => Ok(addrs),
    }
}

/// 10 GiB of received blocks.
pub const DEFAULT_CACHE_SIZE: u64 = 10 << 30;

fn default_listen() -> SocketAddr {
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

#[cfg(test)]
mod tests;
