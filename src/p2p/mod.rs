//! The embedded IPFS node: a rust-libp2p swarm (TCP + QUIC, noise, yamux, identify, ping,
//! Kademlia, mDNS) with bitswap 1.2.0 on `libp2p-stream`, so peerix exchanges NAR blocks with
//! other peerix nodes, Helia and kubo without an external IPFS daemon.
//!
//! Concurrency model: one [`EventLoop`] task owns the `Swarm` and is the only code that touches it;
//! everyone else holds a cloneable [`Client`] that sends [`event_loop::Command`]s over a bounded
//! channel and awaits a oneshot reply. The loop never awaits a consumer: replies are oneshots, and
//! pending queries carry deadlines. Bitswap streams never enter the loop at all: `libp2p-stream`
//! hands each inbound stream to [`bitswap`], which gives it its own task at once (kubo opens a new
//! stream per message; a slow accept drops streams). The loop stops when the shutdown token fires.
//!
//! Modes: `ipfs` (kubo's dual DHT — Kademlia on `/ipfs/kad/1.0.0` and `/ipfs/lan/kad/1.0.0` — plus
//! mDNS) and `lan` (mDNS and `--peer` only: no DHT, never a bootstrap peer, nothing leaves the LAN).
//! The identity is the node's persistent ed25519 key ([`crate::identity`]).
//!
//! Between peerix nodes (told apart by identify: they list [`narinfo::PROTOCOL`]) four protocols
//! of our own run on `libp2p-stream` like bitswap, never entering the event loop:
//! [`narinfo`] (ask a peer for a narinfo and its NAR's root CID), [`have`] (each node's summary of
//! what it can serve, so lookups ask only peers that may have a path) and [`blocks`] (a NAR's
//! chunks in bulk), each request on a long-lived stream per peer ([`lanes`]), and [`heartbeat`]
//! (how connected nodes keep hearing each other, for [`liveness`]). [`peers`] is what we
//! know of each peer; [`announce`] keeps the DHT's provider records in step with the publication
//! events.

pub mod admission;
mod announce;
pub mod bitswap;
pub mod blocks;
mod client;
mod config;
mod event_loop;
pub mod frame;
pub mod have;
pub mod heartbeat;
mod inbound;
mod kept;
pub mod lanes;
pub(crate) mod liveness;
pub mod narinfo;
pub mod nat;
pub mod node;
pub mod peers;
mod presence;
mod provider_store;
pub mod recipients;
mod swarm;
mod trim;

pub(crate) use client::Client;
pub use client::NodeInfo;
pub use config::{Config, Mode, PUBLIC_BOOTSTRAP};
pub use event_loop::{EventLoop, store_path_key};
pub use node::Node;
pub use swarm::{Behaviour, KAD_LAN_PROTOCOL, KAD_PROTOCOL, P2pError, start};

/// The peer an address names (its last component, `/p2p/<id>`), if any.
pub fn peer_of(addr: &libp2p::Multiaddr) -> Option<libp2p::PeerId> {
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}
