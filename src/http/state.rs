//! What every handler shares: the daemon's parts, built once by `peerix serve`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::{cache_info, metrics, status};
use crate::blocks::Blocks;
use crate::identity::Identity;
use crate::local_cache::LocalCache;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState(pub(super) Arc<Inner>);

pub struct Inner {
    pub cache: Arc<LocalCache>,
    /// Answers for every path, local or from peers.
    pub substituter: Arc<crate::substitute::Substituter>,
    pub blocks: Arc<Blocks>,
    pub identity: Identity,
    /// The IPFS node, unless `--no-p2p`.
    pub p2p: Option<crate::p2p::Node>,
    pub cache_info: Bytes,
    pub started: Instant,
    pub listen: SocketAddr,
    pub upstream: Option<String>,
    pub serve_private: bool,
    pub signing_key: Option<String>,
    pub metrics: metrics::Metrics,
    pub status_memo: status::Memo,
    /// The indexer's pause switch and scan nudge (the dashboard's controls).
    pub index: crate::index_control::IndexControl,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

pub fn render_cache_info(priority: u32) -> Bytes {
    Bytes::from(cache_info::render(priority))
}
