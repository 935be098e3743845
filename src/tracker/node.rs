//! The tracker's libp2p node: what peers behind NAT need from a machine they can all reach — a
//! Kademlia server to bootstrap from (`/ipfs/kad/1.0.0`), a relay v2 server with limits sized for
//! NARs (libp2p's defaults, 2 min and 128 KiB a circuit, cannot carry one), and AutoNAT servers
//! (v1 and v2) that tell a peer whether it is reachable. Its addresses are in `/v1/status`, so a
//! daemon needs only the tracker's URL. It stores nothing and routes no content of its own. It
//! holds the presence stream each daemon keeps open to it and answers its heartbeat, so a daemon
//! that leaves is seen to leave ([`super::presence`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use libp2p::kad::store::MemoryStore;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{ConnectionError, ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, StreamProtocol, autonat, connection_limits, identify, kad, noise, ping, relay, tcp, yamux};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::presence::Presence;
use crate::p2p::liveness::Liveness;
use crate::p2p::peers::{Discovery, Peers};
use crate::timeouts::{PING_INTERVAL, PING_TIMEOUT};

pub struct NodeConfig {
    pub listen: Vec<Multiaddr>,
    /// Addresses peers reach us at (a public IP, a port forward): confirmed at once, so the relay
    /// hands them out in reservations.
    pub external: Vec<Multiaddr>,
    pub max_circuit_duration: Duration,
    pub max_circuit_bytes: u64,
    /// Let AutoNAT test peers seen at private addresses (labs, private networks).
    pub autonat_private: bool,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
    relay: relay::Behaviour,
    autonat: autonat::Behaviour,
    autonat_v2: autonat::v2::server::Behaviour,
    limits: connection_limits::Behaviour,
    /// One address or network gets a small share of the pending slots (the daemon's rule).
    admission: crate::p2p::admission::Behaviour,
    /// Presence streams daemons hold to us ([`super::presence`]).
    stream: libp2p_stream::Behaviour,
}

/// Connections the node holds at most.
const MAX_CONNECTIONS: u32 = 4096;

/// The node's addresses (`…/p2p/<id>`) as `/v1/status` lists them.
pub type Addrs = Arc<Mutex<Vec<String>>>;

/// Starts the node; it runs until `shutdown`.
/// Why the tracker's node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot set up the transport")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot listen")]
    Listen(#[from] libp2p::TransportError<std::io::Error>),
}

pub fn start(
    cfg: NodeConfig,
    key: libp2p::identity::Keypair,
    presence: Arc<Presence>,
    shutdown: CancellationToken,
) -> Result<Addrs, NodeError> {
    let local = key.public().to_peer_id();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| NodeError::Transport(e.into()))?
        .with_quic()
        .with_behaviour(|key| {
            let mut kad = kad::Behaviour::with_config(
                local,
                MemoryStore::new(local),
                kad::Config::new(StreamProtocol::new("/ipfs/kad/1.0.0")),
            );
            kad.set_mode(Some(kad::Mode::Server));
            Behaviour {
                identify: identify::Behaviour::new(
                    identify::Config::new("ipfs/0.1.0".into(), key.public())
                        .with_agent_version(format!("peerix-tracker/{}", env!("CARGO_PKG_VERSION"))),
                ),
                // Daemons beat us every 2 s (`heartbeat::answer_only`) and are judged by that: one
                // that vanished leaves our answers within seconds ([`super::presence`]). Pings, as
                // seldom as a daemon's, judge only daemons older than the heartbeat (after 61 s).
                ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_INTERVAL).with_timeout(PING_TIMEOUT)),
                kad,
                relay: relay::Behaviour::new(
                    local,
                    relay::Config {
                        max_reservations: 1024,
                        max_reservations_per_peer: 4,
                        max_circuits: 256,
                        max_circuits_per_peer: 8,
                        max_circuit_duration: cfg.max_circuit_duration,
                        max_circuit_bytes: cfg.max_circuit_bytes,
                        ..Default::default()
                    },
                ),
                autonat: autonat::Behaviour::new(
                    local,
                    autonat::Config { only_global_ips: !cfg.autonat_private, ..Default::default() },
                ),
                autonat_v2: autonat::v2::server::Behaviour::default(),
                limits: connection_limits::Behaviour::new(
                    connection_limits::ConnectionLimits::default()
                        .with_max_established(Some(MAX_CONNECTIONS))
                        .with_max_established_per_peer(Some(4))
                        .with_max_pending_incoming(Some(1024)),
                ),
                admission: crate::p2p::admission::Behaviour::default(),
                stream: libp2p_stream::Behaviour::new(),
            }
        })
        .map_err(|e| NodeError::Transport(e.into()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(crate::timeouts::TRACKER_NODE_IDLE))
        .with_connection_timeout(crate::timeouts::P2P_HANDSHAKE)
        .build();
    for addr in &cfg.listen {
        swarm.listen_on(addr.clone())?;
    }
    for addr in &cfg.external {
        swarm.add_external_address(addr.clone());
    }
    // The daemons connected, and when each last beat.
    let peers = Arc::new(Peers::default());
    let mut control = swarm.behaviour().stream.new_control();
    if crate::p2p::heartbeat::answer_only(&mut control, peers.clone(), shutdown.clone()).is_err() {
        debug!("heartbeat protocol already taken");
    }
    if let Ok(incoming) = swarm.behaviour().stream.new_control().accept(crate::tracker_wire::PRESENCE_PROTOCOL) {
        crate::tasks::spawn(module_path!(), hold_presence_streams(incoming, shutdown.clone()));
    }
    let addrs: Addrs = Arc::default();
    let shown = addrs.clone();
    let mut liveness = Liveness::default();
    // Connections we closed for silence: their peer has left, not idled out.
    let mut silent: HashSet<ConnectionId> = HashSet::new();
    let mut check = tokio::time::interval(Duration::from_secs(1));
    crate::tasks::spawn(module_path!(), async move {
        loop {
            let event = tokio::select! {
                e = swarm.select_next_some() => e,
                due = check.tick() => {
                    for (connection, peer, quiet) in liveness.silent_at(due, |p| peers.heard(p)) {
                        debug!(%peer, quiet_ms = quiet.as_millis() as u64, "peer silent; closing its connection");
                        silent.insert(connection);
                        swarm.close_connection(connection);
                    }
                    continue;
                }
                _ = shutdown.cancelled() => return,
            };
            match event {
                SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                    peers.connected(peer_id, endpoint.get_remote_address().clone(), Discovery::Inbound, false);
                    presence.back(&peer_id.to_string())
                }
                SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established, cause, .. } => {
                    liveness.closed(&connection_id);
                    if num_established == 0 {
                        peers.disconnected(peer_id);
                    }
                    let was_silent = silent.remove(&connection_id);
                    if num_established == 0 && (was_silent || matches!(cause, Some(ConnectionError::IO(_)))) {
                        debug!(peer = %peer_id, ?cause, "peer left");
                        presence.left(&peer_id.to_string());
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, connection, result: Ok(_) })) => {
                    liveness.answered(connection, peer, Instant::now())
                }
                SwarmEvent::NewListenAddr { address, .. } => info!(%address, "tracker node listening"),
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                    peer_id, info, ..
                })) => {
                    for addr in info.listen_addrs {
                        swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Relay(e)) => match e {
                    relay::Event::ReservationReqAccepted { src_peer_id, .. } => {
                        debug!(peer = %src_peer_id, "relay reservation granted")
                    }
                    relay::Event::CircuitReqAccepted { src_peer_id, dst_peer_id } => {
                        info!(src = %src_peer_id, dst = %dst_peer_id, "relaying a circuit")
                    }
                    relay::Event::CircuitClosed { src_peer_id, dst_peer_id, error } => {
                        debug!(src = %src_peer_id, dst = %dst_peer_id, ?error, "circuit closed")
                    }
                    other => debug!(event = ?other, "relay"),
                },
                SwarmEvent::ListenerError { error, .. } => warn!(cause = %error, "tracker node listener failed"),
                _ => {}
            }
            let with_id = |a: &Multiaddr| a.clone().with(Protocol::P2p(local)).to_string();
            let mut now: Vec<String> = swarm.external_addresses().map(with_id).collect();
            if now.is_empty() {
                now = swarm.listeners().filter(|a| !is_unspecified(a)).map(with_id).collect();
            }
            if let Ok(mut a) = shown.lock()
                && *a != now
            {
                *a = now;
            }
        }
    });
    Ok(addrs)
}

/// Presence streams held at once: one per connected daemon.
const MAX_PRESENCE_STREAMS: usize = MAX_CONNECTIONS as usize;

/// Holds every daemon's presence stream open until it ends: one per peer, [`MAX_PRESENCE_STREAMS`]
/// in all. Nothing is ever written on one; a peer that writes is cut off.
async fn hold_presence_streams(mut incoming: libp2p_stream::IncomingStreams, shutdown: CancellationToken) {
    // A peer's newest stream replaces the one held before: when we closed its connection for
    // silence, the read on the old stream is never woken, and refusing the new one as a duplicate
    // left a daemon that came back without a stream to keep its connection.
    let held: Arc<Mutex<HashMap<libp2p::PeerId, (u64, tokio::task::AbortHandle)>>> = Arc::default();
    let mut count = 0u64;
    loop {
        let (peer, mut stream) = tokio::select! {
            next = incoming.next() => match next { Some(s) => s, None => return },
            _ = shutdown.cancelled() => return,
        };
        let mut h = held.lock().unwrap_or_else(|e| e.into_inner());
        if h.len() >= MAX_PRESENCE_STREAMS && !h.contains_key(&peer) {
            continue;
        }
        count += 1;
        let (id, map) = (count, held.clone());
        debug!(%peer, "holding a presence stream");
        let task = crate::tasks::spawn(module_path!(), async move {
            let _ = futures_util::AsyncReadExt::read(&mut stream, &mut [0u8; 1]).await;
            let mut h = map.lock().unwrap_or_else(|e| e.into_inner());
            if h.get(&peer).is_some_and(|(held, _)| *held == id) {
                h.remove(&peer);
            }
        });
        if let Some((_, old)) = h.insert(peer, (id, task.abort_handle())) {
            old.abort();
        }
    }
}

fn is_unspecified(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}
