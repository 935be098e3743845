//! Substitution: the binary-cache answers for every path, local or not (ARCHITECTURE §4).
//!
//! Data flow of `GET /<hash32>.narinfo`: the local store through the publish gate
//! ([`LocalCache::narinfo`]) → narinfos already accepted from peers ([`accepted`]) → the connected
//! peerix peers whose have-summary matches, asked in parallel under one deadline ([`lookup`]); the
//! first answer the trust rules accept ([`crate::trust::Gate::accept_foreign`]) wins; no match is
//! "not found" without a round trip — unless a tracker is set (`--tracker`): then its providers
//! are asked too, when the peers we know do not have the path. `GET /nar/<NarHash>.nar`: a local
//! NAR ([`LocalNar`]) or an accepted one, whose DAG is planned and streamed from every source that
//! has it ([`transfer`], [`sources`]: peerix peers, bitswap peers, `--fallback` gateways), every
//! block checked against its CID and the whole against the NarHash.
//!
//! [`activity`] keeps what this did (per lookup, per transfer, per source) for operators.

pub mod accepted;
pub mod activity;
mod lookup;
mod plan;
pub mod prefetch;
pub mod sources;
pub mod tracker;
mod transfer;

pub use accepted::AcceptedNar;
pub use prefetch::Limits as PrefetchLimits;
pub use sources::Fallback;
pub use transfer::UNIT_BYTES;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::local_cache::{CacheError, LocalCache, LocalNar};
use crate::nix::hash::NarHash;
use crate::nix::store_path::StoreHash;
use crate::p2p::Node;

/// Where a NAR's bytes come from.
#[derive(Debug)]
pub enum NarSource {
    /// A store path on this machine: dumped from disk.
    Local(LocalNar),
    /// A path peers hold: its DAG, fetched and verified while streamed.
    Dag(Arc<AcceptedNar>),
}

pub struct Substituter {
    cache: Arc<LocalCache>,
    sources: sources::Sources,
    lookup_timeout: Duration,
    accepted: accepted::Accepted,
    inflight: Mutex<HashMap<StoreHash, lookup::Pending>>,
    pub activity: activity::Activity,
    /// `--tracker`: more candidates for a lookup, when the peers we know do not have the path.
    tracker: Option<Arc<self::tracker::TrackerClient>>,
    /// NARs fetched as their narinfos are accepted, before nix asks.
    prefetch: prefetch::Prefetch,
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
        tracker: Option<Arc<self::tracker::TrackerClient>>,
        prefetch: PrefetchLimits,
    ) -> Result<Arc<Self>, crate::remote::RemoteError> {
        Ok(Arc::new(Self {
            prefetch: prefetch::Prefetch::new(prefetch),
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
    pub async fn narinfo(self: &Arc<Self>, hash: &StoreHash) -> Result<Option<Answer>, CacheError> {
        if let Some(local) = self.cache.narinfo(hash).await? {
            return Ok(Some(Answer::Local(local)));
        }
        Ok(self.lookup(*hash).await.map(|nar| Answer::Peer(nar.narinfo.clone())))
    }

    /// Where the NAR with this hash comes from: the local store, else a narinfo accepted from peers
    /// (in memory, or remembered in the state DB from an earlier run).
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
