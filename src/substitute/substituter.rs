//! The [`Substituter`]: what the HTTP API asks for a path's narinfo and NAR; the rest of
//! [`super`] is how it answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::local_cache::{CacheError, LocalCache, LocalNar};
use crate::nix::hash::NarHash;
use crate::nix::store_path::StoreHash;
use crate::p2p::Node;

use super::tracker::TrackerClient;
use super::{AcceptedNar, Fallback, PrefetchLimits, accepted, activity, lookup, offered, prefetch, sources};

/// Where a NAR's bytes come from.
#[derive(Debug)]
pub enum NarSource {
    /// A store path on this machine: dumped from disk.
    Local(LocalNar),
    /// A path peers hold: its DAG, fetched and verified while streamed.
    Dag(Arc<AcceptedNar>),
}

pub struct Substituter {
    pub(super) cache: Arc<LocalCache>,
    pub(super) sources: sources::Sources,
    pub(super) lookup_timeout: Duration,
    pub(super) accepted: accepted::Accepted,
    pub(super) inflight: Mutex<HashMap<StoreHash, lookup::Pending>>,
    pub activity: activity::Activity,
    /// `--tracker`: more candidates for a lookup, when the peers we know do not have the path.
    pub(super) tracker: Option<Arc<TrackerClient>>,
    /// NARs fetched as their narinfos are accepted, before nix asks.
    pub(super) prefetch: prefetch::Prefetch,
    /// Narinfos of a closure a peer sent with the answer for its top path.
    pub(super) offered: offered::Offered,
    /// A lookup asking for a closure is under way (see `ask_peers`).
    pub(super) closure_asked: std::sync::atomic::AtomicBool,
}

/// A narinfo, and where it came from.
pub enum Answer {
    Local(Bytes),
    Peer(Bytes),
}

impl Substituter {
    /// `node` is the IPFS node (`None` with `--no-p2p`: then only the local store answers).
    pub fn new(
        cache: Arc<LocalCache>,
        node: Option<Node>,
        lookup_timeout: Duration,
        fallbacks: Vec<Fallback>,
        tracker: Option<Arc<TrackerClient>>,
        prefetch: PrefetchLimits,
    ) -> Result<Arc<Self>, crate::remote::RemoteError> {
        Ok(Arc::new(Self {
            prefetch: prefetch::Prefetch::new(prefetch),
            offered: offered::Offered::default(),
            closure_asked: std::sync::atomic::AtomicBool::new(false),
            tracker,
            accepted: accepted::Accepted::new(cache.state_arc()),
            cache,
            sources: sources::Sources::new(node, fallbacks)?,
            lookup_timeout,
            inflight: Mutex::new(HashMap::new()),
            activity: activity::Activity::default(),
        }))
    }

    pub fn fallbacks(&self) -> &[Fallback] {
        &self.sources.fallbacks
    }

    /// The narinfo nix gets for `hash`: the local path's, else one accepted from peers.
    #[tracing::instrument(name = "narinfo", level = "debug", skip_all, fields(%hash))]
    pub async fn narinfo(self: &Arc<Self>, hash: &StoreHash) -> Result<Option<Answer>, CacheError> {
        if let Some(local) = self.cache.narinfo(hash).await? {
            return Ok(Some(Answer::Local(local)));
        }
        Ok(self.lookup(*hash).await.map(|nar| Answer::Peer(nar.narinfo.clone())))
    }

    /// Where the NAR with this hash comes from: the local store, else a narinfo accepted from peers
    /// (in memory, or remembered in the state DB from an earlier run).
    #[tracing::instrument(name = "nar", level = "debug", skip_all, fields(%nar_hash))]
    pub async fn nar(&self, nar_hash: &NarHash) -> Result<Option<NarSource>, CacheError> {
        if let Some(local) = self.cache.nar(nar_hash).await? {
            return Ok(Some(NarSource::Local(local)));
        }
        if self.sources.node.is_none() {
            return Ok(None);
        }
        Ok(self.accepted.by_nar_hash(nar_hash).await.map(NarSource::Dag))
    }
}
