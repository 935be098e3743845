//! Building the node: the swarm's behaviours and their limits, and [`start`], which listens, dials
//! and spawns the event loop, bitswap, our protocols and the DHT announcer.

use super::config::{Config, Mode};
use super::{
    Node, admission, announce, bitswap, blocks, event_loop, have, heartbeat, lanes, narinfo, node, peers,
    provider_store,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Multiaddr, StreamProtocol, autonat, connection_limits, dcutr, identify, kad, mdns, memory_connection_limits, noise,
    ping, relay, tcp, upnp, yamux,
};
use tokio_util::sync::CancellationToken;

use crate::blocks::Blocks;
use crate::identity::Identity;
use crate::local_cache::LocalCache;
use crate::timeouts::{P2P_CONNECTION_IDLE, P2P_HANDSHAKE, PING_INTERVAL, PING_TIMEOUT};

#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    #[error("cannot set up the transport")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: Multiaddr,
        #[source]
        source: libp2p::TransportError<std::io::Error>,
    },
    #[error("cannot open the provider store")]
    Store(#[from] rusqlite::Error),
    #[error("bitswap protocol registered twice")]
    Protocol,
}

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: Toggle<kad::Behaviour<provider_store::ProviderStore>>,
    /// kubo's LAN DHT (`/ipfs/lan/kad/1.0.0`): kubo puts peers with private addresses only here.
    pub kad_lan: Toggle<kad::Behaviour<provider_store::ProviderStore>>,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub stream: libp2p_stream::Behaviour,
    pub relay_client: relay::client::Behaviour,
    pub dcutr: dcutr::Behaviour,
    pub autonat: Toggle<autonat::Behaviour>,
    pub upnp: Toggle<upnp::tokio::Behaviour>,
    pub limits: connection_limits::Behaviour,
    pub memory: memory_connection_limits::Behaviour,
    pub admission: admission::Behaviour,
}

/// Connections at most, in all and per peer: a node serving a LAN has tens of peers; 512 bounds
/// what a flood of dials can make us hold.
const MAX_CONNECTIONS: u32 = 512;
const MAX_CONNECTIONS_PER_PEER: u32 = 4;
/// Connections inbound ones can never take: room for the peers we dial ourselves (`--peer`
/// peers, providers, the tracker's node), whatever connects to us.
const OUTBOUND_RESERVE: u32 = 64;
/// Inbound connections in their handshake at once, from everyone; one address or network gets a
/// small share of it ([`admission`]).
const MAX_PENDING_INCOMING: u32 = 256;
/// New connections are refused while the process holds more than this: the daemon runs at
/// 25–90 MiB (measured), so 1 GiB means something is wrong, and more peers would make it worse.
const MAX_PROCESS_MEMORY: usize = 1 << 30;
/// go-libp2p accepts 4 MiB; the kad default of 16 KiB rejects real FIND_NODE answers (26–43 KB).
const KAD_MAX_PACKET: usize = 4 << 20;

pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/ipfs/kad/1.0.0");
pub const KAD_LAN_PROTOCOL: StreamProtocol = StreamProtocol::new("/ipfs/lan/kad/1.0.0");

/// Builds the swarm, starts listening and dialing, and spawns the event loop, bitswap, the peerix
/// protocols and the DHT announcer.
pub fn start(
    cfg: Config,
    identity: &Identity,
    blocks: Arc<Blocks>,
    cache: Arc<LocalCache>,
    state_dir: &Path,
    shutdown: CancellationToken,
) -> Result<Node, P2pError> {
    let keypair = identity.keypair();
    let local = keypair.public().to_peer_id();
    let writer = provider_store::ProviderWriter::start(state_dir, local)?;
    let store = provider_store::ProviderStore::open(state_dir, local, "wan", writer.clone())?;
    let lan_store = provider_store::ProviderStore::open(state_dir, local, "lan", writer)?;
    let mode = cfg.mode;
    let use_mdns = cfg.mdns;
    let dht_server = cfg.dht_server;
    let use_autonat = cfg.autonat && mode == Mode::Ipfs;
    let use_upnp = cfg.upnp;
    let boxed = |e: &dyn std::fmt::Display| P2pError::Transport(e.to_string().into());
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| boxed(&e))?
        .with_quic()
        .with_dns()
        .map_err(|e| boxed(&e))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| boxed(&e))?
        .with_behaviour(|key, relay_client| {
            let dht = |protocol: StreamProtocol, store| {
                let mut c = kad::Config::new(protocol);
                c.set_max_packet_size(KAD_MAX_PACKET);
                // We announce at a bounded rate ourselves (EventLoop::provide_due) instead of
                // kad's walk over every provided key at once.
                c.set_provider_publication_interval(None);
                c.set_query_timeout(crate::timeouts::KAD_QUERY);
                c.set_periodic_bootstrap_interval(Some(crate::timeouts::DHT_REFRESH_EVERY));
                let mut kad = kad::Behaviour::with_config(local, store, c);
                if dht_server {
                    kad.set_mode(Some(kad::Mode::Server));
                }
                kad
            };
            let kad = (mode == Mode::Ipfs).then(|| dht(KAD_PROTOCOL, store));
            let kad_lan = (mode == Mode::Ipfs).then(|| dht(KAD_LAN_PROTOCOL, lan_store));
            let mdns = if use_mdns { mdns::tokio::Behaviour::new(mdns::Config::default(), local).ok() } else { None };
            Behaviour {
                identify: identify::Behaviour::new(
                    identify::Config::new("ipfs/0.1.0".into(), key.public())
                        .with_agent_version(format!("peerix/{}", env!("CARGO_PKG_VERSION")))
                        .with_push_listen_addr_updates(true),
                ),
                ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_INTERVAL).with_timeout(PING_TIMEOUT)),
                kad: Toggle::from(kad),
                kad_lan: Toggle::from(kad_lan),
                mdns: Toggle::from(mdns),
                stream: libp2p_stream::Behaviour::new(),
                relay_client,
                dcutr: dcutr::Behaviour::new(local),
                autonat: Toggle::from(use_autonat.then(|| {
                    autonat::Behaviour::new(
                        local,
                        autonat::Config {
                            // Labs and LANs have only private addresses; the servers decide what to dial.
                            only_global_ips: false,
                            boot_delay: Duration::from_secs(5),
                            retry_interval: Duration::from_secs(30),
                            ..Default::default()
                        },
                    )
                })),
                upnp: Toggle::from(use_upnp.then(upnp::tokio::Behaviour::default)),
                limits: connection_limits::Behaviour::new(
                    connection_limits::ConnectionLimits::default()
                        .with_max_established(Some(MAX_CONNECTIONS))
                        .with_max_established_incoming(Some(MAX_CONNECTIONS - OUTBOUND_RESERVE))
                        .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
                        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING)),
                ),
                memory: memory_connection_limits::Behaviour::with_max_bytes(MAX_PROCESS_MEMORY),
                admission: admission::Behaviour::default(),
            }
        })
        .map_err(|e| boxed(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(P2P_CONNECTION_IDLE))
        .with_connection_timeout(P2P_HANDSHAKE)
        .build();
    for addr in &cfg.listen {
        swarm.listen_on(addr.clone()).map_err(|source| P2pError::Listen { addr: addr.clone(), source })?;
    }
    for addr in &cfg.external {
        swarm.add_external_address(addr.clone());
    }
    let mut control = swarm.behaviour().stream.new_control();
    let peers = Arc::new(peers::Peers::default());
    let dht = mode == Mode::Ipfs;
    let provide_rate = cfg.provide_rate;
    let expects_peers = !cfg.peers.is_empty() || !cfg.bootstrap.is_empty() || !cfg.relays.is_empty() || cfg.autonat;
    let (client, event_loop) = event_loop::new(swarm, cfg, peers.clone());
    let bitswap = bitswap::Bitswap::start(control.clone(), blocks.clone(), client.clone(), shutdown.clone())?;
    narinfo::serve(&mut control, cache.clone(), peers.clone(), shutdown.clone())?;
    blocks::serve(&mut control, blocks, peers.clone(), shutdown.clone())?;
    have::receive(&mut control, peers.clone(), client.clone(), shutdown.clone())?;
    heartbeat::serve(&mut control, peers.clone(), client.peer_id(), shutdown.clone())?;
    crate::tasks::spawn(
        module_path!(),
        have::advertise(control.clone(), peers.clone(), cache.clone(), shutdown.clone()),
    );
    if dht {
        crate::tasks::spawn(module_path!(), announce::run(client.clone(), cache, provide_rate, shutdown.clone()));
    }
    crate::tasks::spawn(module_path!(), event_loop.run(shutdown));
    let narinfo_lanes =
        lanes::Lanes::new(control.clone(), narinfo::PROTOCOL, node::NARINFO_LANES, crate::timeouts::NARINFO_RETRIES);
    // Each block of an answer shows the peer answering ([`peers::Peers::answering`]): a transfer
    // waiting for its first bytes behind a crowd at a slow seeder sees its unit on its way.
    let answering = peers.clone();
    let block_lanes =
        lanes::Lanes::new(control.clone(), blocks::PROTOCOL, node::BLOCK_LANES, crate::timeouts::BLOCK_RETRIES)
            .on_frame(move |p| answering.answered(p));
    let dag_lanes = block_lanes.apart(1);
    // A unit nobody waits for any more (a hedge's loser) stops at the peer: it is up to 1 MiB.
    let block_lanes = block_lanes.drain_abandoned(Duration::ZERO);
    Ok(Node { client, bitswap, narinfo_lanes, block_lanes, dag_lanes, peers, dht, expects_peers, control })
}
