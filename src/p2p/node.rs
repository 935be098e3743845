//! The running node as the rest of the daemon sees it: a handle with methods. The event loop owns
//! the swarm ([`super::event_loop`]); this holds its [`Client`], the bitswap engine, the lanes of
//! our own protocols and what we know of peers, and says what each caller may ask of them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use futures_util::stream::BoxStream;
use libp2p::{Multiaddr, PeerId};

use super::client::{Client, NodeInfo};
use super::{bitswap, blocks, lanes, narinfo, peers};
use crate::nix::store_path::StoreHash;

/// Lanes per peer for narinfo lookups: an answer is a SQLite lookup and ≤ 64 KiB, so one lane
/// pipelines a closure's lookups; a second takes over while the first waits on a slow answer.
pub(super) const NARINFO_LANES: usize = 2;
/// Lanes per peer for blocks: the peer answers a lane's requests one after the other, each read
/// from disk and hashed on one core, so a few lanes keep a seeder's cores and link busy.
pub(super) const BLOCK_LANES: usize = 4;

#[derive(Clone)]
pub struct Node {
    pub(super) client: Client,
    pub(super) bitswap: bitswap::Bitswap,
    /// Lanes ([`lanes`]) of `/peerix/narinfo` and `/peerix/blocks` to each peer.
    pub(super) narinfo_lanes: lanes::Lanes,
    pub(super) block_lanes: lanes::Lanes,
    /// For DAG nodes (a transfer's plan: its first step), apart from bulk blocks: a lane answers in
    /// order, and under a crowd a seeder keeps bulk requests waiting for a slot for seconds.
    pub(super) dag_lanes: lanes::Lanes,
    pub(super) peers: Arc<peers::Peers>,
    /// True in `ipfs` mode (a DHT to ask for providers).
    pub(super) dht: bool,
    /// The configuration names peers to reach (`--peer`, bootstrap peers, a tracker or relay):
    /// having none connected is then a degraded state, not a quiet LAN.
    pub(super) expects_peers: bool,
    /// For streams held outside the lanes (the tracker presence stream).
    pub(super) control: libp2p_stream::Control,
}

impl Node {
    pub fn peer_id(&self) -> PeerId {
        self.client.peer_id()
    }

    /// Addresses, protocols and counts, as `/api/status` and kubo's `/id` show them.
    pub async fn info(&self) -> Option<NodeInfo> {
        self.client.info().await
    }

    pub async fn connected_peers(&self) -> Vec<PeerId> {
        self.client.connected_peers().await
    }

    /// True in `ipfs` mode: the DHT can be asked for providers.
    pub fn has_dht(&self) -> bool {
        self.dht
    }

    /// The configuration names peers to reach: having none connected is then a problem to report.
    pub fn expects_peers(&self) -> bool {
        self.expects_peers
    }

    /// What we know of each peer: summaries, reputation, round trips, counters.
    pub fn peers(&self) -> &peers::Peers {
        &self.peers
    }

    /// `peer` named a root of a narinfo we accepted: what we offer now depends on its being there,
    /// so a heartbeat with it starts at once ([`super::heartbeat`]), and its leaving is noticed
    /// in seconds, not after its pings' minute.
    pub fn watch_namer(&self, peer: PeerId) {
        self.peers.named(peer);
        super::heartbeat::start(&self.control, &self.peers, peer, self.client.peer_id());
    }

    /// Providers of `cid` in the DHT (empty without one).
    pub async fn providers(&self, cid: &Cid) -> Vec<PeerId> {
        self.client.get_providers(libp2p::kad::RecordKey::new(&cid.hash().to_bytes())).await
    }

    /// Connects to `peer` at `addrs` unless connected: `true` once it is. The caller bounds the wait.
    pub async fn connect(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> bool {
        self.client.connect(peer, addrs).await
    }

    /// Uses these nodes (a tracker's) as DHT bootstrap peers and relays, and holds a presence
    /// stream to each ([`super::presence`]), so the tracker sees us leave.
    pub async fn use_relays(&self, addrs: Vec<Multiaddr>) {
        let nodes: std::collections::HashSet<PeerId> = addrs.iter().filter_map(super::peer_of).collect();
        self.client.use_relays(addrs).await;
        for node in nodes {
            crate::tasks::spawn(module_path!(), super::presence::hold(self.control.clone(), self.peers.clone(), node));
        }
    }

    /// Asks `peer` for the narinfo of `hash`, and of its `closure` ([`narinfo::ask`]).
    pub async fn ask_narinfo(
        &self,
        peer: PeerId,
        hash: &StoreHash,
        closure: bool,
    ) -> Result<Option<narinfo::Answer>, narinfo::AskError> {
        narinfo::ask(&self.narinfo_lanes, peer, hash, closure).await
    }

    /// Fetches `cids` from `peer`, each checked against its CID ([`blocks::fetch`]), compressed
    /// on the wire when the peer is far away ([`blocks::COMPRESS_ABOVE_RTT`]); what a busy peer
    /// may answer instead is `if_busy`.
    pub async fn fetch_blocks(
        &self,
        peer: PeerId,
        cids: &[Cid],
        if_busy: blocks::IfBusy,
    ) -> Result<Vec<Bytes>, blocks::FetchError> {
        let far = self.peers.distance(&peer).is_some_and(|rtt| rtt >= blocks::COMPRESS_ABOVE_RTT);
        let lanes = if blocks::metadata(cids) { &self.dag_lanes } else { &self.block_lanes };
        blocks::fetch(lanes, peer, cids, far, if_busy).await
    }

    /// One block from one bitswap peer (an IPFS node that is not peerix), checked against its CID.
    pub async fn want_block(
        &self,
        peer: PeerId,
        cid: Cid,
        timeout: Duration,
    ) -> Result<Bytes, bitswap::client::WantError> {
        self.bitswap.want_from(peer, cid, timeout).await
    }

    /// A UnixFS file's bytes from the IPFS network, by bitswap (kubo's `cat`).
    pub fn fetch_file(&self, root: Cid) -> BoxStream<'static, Result<Bytes, bitswap::client::FetchError>> {
        self.bitswap.fetch_file(root)
    }

    pub fn bitswap_stats(&self) -> &bitswap::Stats {
        self.bitswap.stats()
    }

    /// What the lanes of `/peerix/narinfo` and `/peerix/blocks` did.
    pub fn lane_counters(&self) -> [(&'static str, &lanes::LaneCounters); 2] {
        [("narinfo", &self.narinfo_lanes.counters), ("blocks", &self.block_lanes.counters)]
    }
}
