//! Planning a NAR transfer: which peers may have the NAR, and which candidate root CID leads to a
//! DAG that is this NAR (ARCHITECTURE §4). A root is the one field of a peer's answer no signature
//! covers, so each candidate is walked ([`crate::ipld::walk`], bounded, `blocksizes` adding up to
//! the signed NarSize) with its interior nodes fetched from any source; a root whose DAG is wrong
//! is marked failed and the peers that named it are caught lying; with no root left, the peers are
//! asked once more ([`Substituter::more_roots`]).

use bytes::Bytes;
use cid::Cid;
use tracing::{debug, warn};

use super::Substituter;
use super::accepted::{AcceptedNar, Root};
use super::sources::{Source, SourceError};
use crate::ipld::ChunkedNar;
use crate::ipld::walk::{Limits, Piece, Walk};
use crate::p2p::blocks::{IfBusy, MAX_CIDS};
use crate::timeouts::PLAN_ATTEMPT;

/// A NAR's DAG, planned: its root, its pieces in order, and the interior nodes fetched on the way.
pub(super) struct Plan {
    pub root: Cid,
    pub pieces: Vec<Piece>,
    pub nodes: Vec<(Cid, Bytes)>,
}

impl Plan {
    /// The plan as the index stores a published path, when every piece is a raw block.
    pub fn as_index(&self) -> Option<ChunkedNar> {
        let chunks = self
            .pieces
            .iter()
            .map(|p| match p {
                Piece::Block { cid, offset, len } => u32::try_from(*len).ok().map(|l| (*offset, l, *cid)),
                Piece::Data { .. } => None,
            })
            .collect::<Option<Vec<_>>>()?;
        let nodes = self.nodes.iter().map(|(c, b)| (*c, b.to_vec())).collect();
        Some(ChunkedNar { root: self.root, chunks, nodes, fingerprint: None })
    }
}

impl Substituter {
    /// Peerix peers that may have the NAR: those that named `root`, then every connected peer whose
    /// summary matches the path; honest ones first.
    pub(super) fn peer_sources(&self, nar: &AcceptedNar, root: Option<Cid>) -> Vec<Source> {
        let Some(node) = &self.sources.node else { return Vec::new() };
        let named = nar.roots().into_iter().filter(|r| Some(r.cid) == root).flat_map(|r| r.peers);
        let mut peers: Vec<_> = named.filter(|p| node.peers().is_connected(p)).collect();
        for p in node.peers().matching(&nar.hash) {
            if !peers.contains(&p) {
                peers.push(p);
            }
        }
        // A peer caught lying is used only when no honest one is left.
        let (liars, honest): (Vec<_>, Vec<_>) = peers.into_iter().partition(|p| node.peers().is_dishonest(p));
        let peers = if honest.is_empty() { liars } else { honest };
        peers.into_iter().map(Source::Peer).collect()
    }

    /// True while some source could deliver the NAR: a connected peer that named one of its roots
    /// or whose summary lists the path, or a `--fallback`. Without one, its narinfo is not served
    /// (a fresh lookup decides) and a NAR request is a 404 at once, so nix moves on to its next
    /// substituter instead of waiting on a peer that left.
    pub(super) fn deliverable(&self, nar: &AcceptedNar) -> bool {
        self.vouched(nar) || self.sources.node.as_ref().is_some_and(|n| !n.peers().matching(&nar.hash).is_empty())
    }

    /// True while a connected peer that named one of the NAR's roots (it answered for the path:
    /// a holder, or one that has its blocks) or a `--fallback` could deliver it. A summary is a
    /// Bloom filter: a match alone may be a false positive (~1 in 2 000 per summary), and a narinfo
    /// served from memory on that alone stayed 200 for minutes after its only holder left (a
    /// fleet of 100: one node of 99, in one of three trials); without a voucher the path is looked
    /// up again, which asks the matching peers (a round trip) and answers what they say.
    pub(super) fn vouched(&self, nar: &AcceptedNar) -> bool {
        let Some(node) = &self.sources.node else { return false };
        !self.sources.fallbacks.is_empty()
            || nar.roots().iter().flat_map(|r| &r.peers).any(|p| node.peers().is_connected(p))
    }

    /// The first candidate root whose DAG is a file of exactly NarSize bytes, and its pieces. When
    /// every root known proved wrong (or undeliverable), the peers are asked once more.
    pub(super) async fn plan(&self, nar: &AcceptedNar) -> Option<Plan> {
        if let Some(found) = self.plan_known(nar).await {
            return Some(found);
        }
        self.more_roots(nar).await;
        let found = self.plan_known(nar).await;
        if found.is_none() {
            warn!(path = %nar.store_path, "no root CID of this NAR leads to blocks any source can deliver");
        }
        found
    }

    async fn plan_known(&self, nar: &AcceptedNar) -> Option<Plan> {
        for Root { cid, .. } in nar.roots() {
            let mut sources = self.peer_sources(nar, Some(cid));
            sources.extend((0..self.sources.fallbacks.len()).map(Source::Fallback));
            let mut walk = match Walk::new(cid, Some(nar.nar_size), Limits::for_size(nar.nar_size)) {
                Ok(w) => w,
                Err(e) => {
                    self.root_failed(nar, &cid, &e);
                    continue;
                }
            };
            let mut nodes = Vec::new();
            let planned = loop {
                if walk.is_done() {
                    break Some(walk.pieces());
                }
                let wanted = walk.wanted();
                // The root's node came with the narinfo (checked against its CID): no round trip.
                let sent = (wanted == [cid]).then(|| nar.take_root_node(&cid)).flatten();
                let Some(blocks) = (match sent {
                    Some(node) => Some(vec![node]),
                    None => self.fetch_any(&sources, &wanted).await,
                }) else {
                    debug!(path = %nar.store_path, root = %cid, "no source delivered the DAG's nodes");
                    break None;
                };
                if let Err(e) = walk.feed(&blocks) {
                    self.root_failed(nar, &cid, &e);
                    break None;
                }
                nodes.extend(wanted.into_iter().zip(blocks));
            };
            if let Some(pieces) = planned {
                return Some(Plan { root: cid, pieces, nodes });
            }
        }
        None
    }

    pub(super) fn root_failed(&self, nar: &AcceptedNar, root: &Cid, why: &dyn std::fmt::Display) {
        warn!(path = %nar.store_path, %root, cause = %why, "refused a NAR root that does not describe the NAR");
        let liars = nar.fail_root(root);
        if let Some(node) = &self.sources.node {
            for p in liars {
                node.peers().caught_lying(p);
                node.peers().count(p, |s| s.bad_blocks += 1);
            }
        }
    }

    /// `cids` (a few DAG nodes) from the first source that delivers them all.
    async fn fetch_any(&self, sources: &[Source], cids: &[Cid]) -> Option<Vec<Bytes>> {
        let mut out = Vec::with_capacity(cids.len());
        for batch in cids.chunks(MAX_CIDS) {
            let mut got = None;
            for source in sources {
                match tokio::time::timeout(PLAN_ATTEMPT, self.sources.fetch(source, batch, IfBusy::default())).await {
                    Ok(Ok(blocks)) => {
                        got = Some(blocks);
                        break;
                    }
                    Ok(Err(SourceError::BadBlock(c))) => self.caught(source, &c),
                    Ok(Err(e)) => debug!(source = ?source, cause = %e, "DAG nodes not delivered"),
                    Err(_) => debug!(source = ?source, "DAG nodes not delivered in time"),
                }
            }
            out.extend(got?);
        }
        Some(out)
    }

    pub(super) fn caught(&self, source: &Source, cid: &Cid) {
        warn!(source = ?source, %cid, "a source sent bytes that are not the block asked for");
        if let (Some(node), Some(p)) = (&self.sources.node, source.peer()) {
            node.peers().caught_lying(p);
            node.peers().count(p, |s| s.bad_blocks += 1);
        }
    }
}
