//! Flags over environment over file over defaults: the validated [`ServeConfig`] the daemon runs
//! on. Key files are read and parsed here, so an unreadable or malformed key stops the start with
//! a clear message.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use libp2p::multiaddr::Protocol;

use super::defaults::*;
use super::error::ConfigError;
use super::units::{http_url, in_range, parse_duration, parse_size};
use super::{FileConfig, ServeArgs};
use crate::nix::signing::{PublicKey, SecretKey};
use crate::trust::CACHE_NIXOS_ORG_KEY;

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
