//! What the node is told: its mode and its [`Config`] (listen addresses, bootstrap and kept
//! peers, mDNS, relays), as `peerix serve`'s configuration resolves it.

use libp2p::Multiaddr;

/// Which networks the node takes part in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Kademlia DHT (`/ipfs/kad/1.0.0`) with bootstrap peers, plus mDNS.
    Ipfs,
    /// mDNS only: peers on the local network, nothing else.
    Lan,
}

/// The public IPFS bootstrap peers (kubo's list): the default only when no `--bootstrap` is given.
pub const PUBLIC_BOOTSTRAP: &[&str] = &[
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmbLHAnMoJPWSCR5Zhtx6BHJX9KiKNN6tpvbUcqanj75Nb",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA3gU1ZjYZcYW3dwt",
    "/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
];

/// The node's settings, resolved from flags.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    /// Peers to keep connected (`--peer`), each ending in `/p2p/<id>`.
    pub peers: Vec<Multiaddr>,
    pub mode: Mode,
    pub mdns: bool,
    pub external: Vec<Multiaddr>,
    /// Provider announcements per second at most (each is a DHT walk).
    pub provide_rate: u32,
    /// Serve the DHT and treat listen addresses as reachable (kubo's `dhtserver`).
    pub dht_server: bool,
    /// Relays to hold a reservation on (`--relay`; the tracker's node is added at run time).
    pub relays: Vec<Multiaddr>,
    /// Run the AutoNAT client (with relays or a tracker, in ipfs mode).
    pub autonat: bool,
    /// Map our port on the router by UPnP (`--upnp`).
    pub upnp: bool,
}
