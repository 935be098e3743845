//! The TOML file (`--config`): keys are the long flag names; an unknown key is an error (a typo
//! must not silently fall back to a default), and so is a file past [`MAX_CONFIG_BYTES`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::defaults::MAX_CONFIG_BYTES;
use super::error::ConfigError;

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
