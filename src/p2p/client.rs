//! The handle the rest of peerix uses to talk to the swarm: typed async methods that send a
//! command to the [`super::EventLoop`] and await its oneshot reply.

use libp2p::kad::RecordKey;
use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// What `/api/status` shows of the node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    pub peer_id: String,
    pub mode: super::Mode,
    /// Full multiaddrs, ending in `/p2p/<peer id>`.
    pub listen_addrs: Vec<String>,
    pub external_addrs: Vec<String>,
    pub connected_peers: Vec<String>,
    pub nat: super::nat::NatView,
}

#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
}

impl Client {
    pub(super) fn new(tx: mpsc::Sender<Command>, peer_id: PeerId) -> Self {
        Self { tx, peer_id }
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.ok()?;
        rx.await.ok()
    }

    /// Peers with an open connection.
    pub async fn connected_peers(&self) -> Vec<PeerId> {
        self.ask(|reply| Command::Connected { reply }).await.unwrap_or_default()
    }

    /// Providers of `key` (multihash bytes of a CID, or a store-path key) from the DHT; empty when
    /// there are none, the DHT is off (`lan` mode) or the query timed out.
    pub async fn get_providers(&self, key: RecordKey) -> Vec<PeerId> {
        self.ask(|reply| Command::GetProviders { key, reply }).await.unwrap_or_default()
    }

    /// Connects to `peer` at `addrs` unless connected: `true` once it is, `false` if every address
    /// failed. The caller bounds the wait.
    pub async fn connect(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> bool {
        self.ask(|reply| Command::Connect { peer, addrs, reply }).await.unwrap_or(false)
    }

    /// Uses `addrs` (the tracker's node) as DHT bootstrap peers and relays.
    pub async fn use_relays(&self, addrs: Vec<Multiaddr>) {
        let _ = self.tx.send(Command::UseRelays { addrs }).await;
    }

    pub async fn info(&self) -> Option<NodeInfo> {
        self.ask(|reply| Command::Info { reply }).await
    }

    /// Announces us as a provider of `keys` on every DHT.
    pub async fn provide(&self, keys: Vec<RecordKey>) {
        let _ = self.tx.send(Command::Provide { keys }).await;
    }

    /// Stops announcing `keys`.
    pub async fn stop_providing(&self, keys: Vec<RecordKey>) {
        let _ = self.tx.send(Command::StopProviding { keys }).await;
    }

    /// Drops every connection to a misbehaving peer (never blocks: a full queue drops the request).
    pub fn disconnect(&self, peer: PeerId) {
        let _ = self.tx.try_send(Command::Disconnect { peer });
    }
}

/// What a [`Client`] asks of the [`super::EventLoop`].
pub(crate) enum Command {
    /// Uses these nodes (the tracker's) as DHT bootstrap peers and relays.
    UseRelays {
        addrs: Vec<Multiaddr>,
    },
    /// Connects to `peer` at `addrs` (a provider the tracker named): `true` once connected.
    Connect {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<bool>,
    },
    GetProviders {
        key: RecordKey,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Connected {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Info {
        reply: oneshot::Sender<NodeInfo>,
    },
    Disconnect {
        peer: PeerId,
    },
    /// Announce us as a provider of these keys on every DHT.
    Provide {
        keys: Vec<RecordKey>,
    },
    /// Stop announcing these keys (our records on others expire within 48 h).
    StopProviding {
        keys: Vec<RecordKey>,
    },
}
