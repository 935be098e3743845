//! What is wrong with a configuration, in one line each (naming the flag or key, the file and
//! line where there is one).

use std::path::PathBuf;

use super::defaults::MAX_CONFIG_BYTES;

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
