//! NAT traversal for the daemon's node (ARCHITECTURE §5): relay v2 reservations on the tracker's
//! node (or `--relay`), so a peer behind NAT can be dialled through `/p2p-circuit`; DCUtR hole
//! punching, after which the relayed connection is closed and bulk transfers run on the direct one
//! (relays limit what a circuit carries); AutoNAT (v1 client) for our reachability, which alone
//! decides the DHT mode: a relay reservation confirms a `/p2p-circuit` address, which would flip
//! Kademlia's automatic mode to server behind NAT, so the node stays a client until AutoNAT says
//! public. Owned by the [`super::event_loop::EventLoop`]; this module only holds the state.

use std::collections::{HashMap, HashSet};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, Swarm, autonat, dcutr, kad, relay};
use serde::Serialize;
use tracing::{debug, info, warn};

use super::Behaviour;
use crate::timeouts::RELAY_GRACE;

/// True for an address through a relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// True for a connection through a relay. (An inbound relayed connection's remote address is just
/// `/p2p/<peer>`; it is our listen address that names the circuit.)
pub fn relayed_endpoint(e: &libp2p::core::ConnectedPoint) -> bool {
    match e {
        libp2p::core::ConnectedPoint::Dialer { address, .. } => is_relayed(address),
        libp2p::core::ConnectedPoint::Listener { local_addr, send_back_addr } => {
            is_relayed(local_addr) || is_relayed(send_back_addr)
        }
    }
}

/// What `/api/status` shows of NAT traversal.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NatView {
    /// AutoNAT's verdict: `public`, `private` or `unknown` (`off` in lan mode).
    pub status: String,
    /// Relays holding a reservation for us.
    pub reservations: Vec<String>,
    pub hole_punches: u64,
    pub hole_punch_failures: u64,
}

pub(super) struct Nat {
    status: autonat::NatStatus,
    autonat: bool,
    /// Relays we asked for a reservation, and those that granted one.
    relays: HashSet<PeerId>,
    /// Relays we are connecting to, to listen through once connected.
    pending: HashMap<PeerId, Multiaddr>,
    reservations: HashSet<PeerId>,
    /// Relayed connections per peer (closed once a direct one exists).
    relayed: HashMap<PeerId, Vec<ConnectionId>>,
    hole_punches: u64,
    hole_punch_failures: u64,
    /// Relayed connections to close once their grace period is over.
    closing: Vec<(std::time::Instant, PeerId, ConnectionId)>,
}

impl Nat {
    pub(super) fn new(autonat: bool) -> Self {
        Self {
            status: autonat::NatStatus::Unknown,
            autonat,
            relays: HashSet::new(),
            pending: HashMap::new(),
            reservations: HashSet::new(),
            relayed: HashMap::new(),
            hole_punches: 0,
            hole_punch_failures: 0,
            closing: Vec::new(),
        }
    }

    /// Uses `addr` (`…/p2p/<relay>`) as a relay: once connected to it, listens on its
    /// `/p2p-circuit`, which asks for a reservation; it also becomes an AutoNAT server for us.
    /// (Listening before a connection exists races other dials to the relay: the relay client's
    /// own dial is then refused, and its reservation request never sent.)
    pub(super) fn use_relay(&mut self, swarm: &mut Swarm<Behaviour>, addr: Multiaddr) {
        let Some(relay) = super::peer_of(&addr) else { return };
        if relay == *swarm.local_peer_id() || !self.relays.insert(relay) {
            return;
        }
        self.pending.insert(relay, addr.clone());
        if swarm.is_connected(&relay) {
            self.reserve(swarm, relay);
        } else if let Err(e) = swarm.dial(addr.clone()) {
            warn!(%addr, cause = %e, "cannot dial the relay");
        }
    }

    /// Listens through `relay`, now that we are connected to it.
    fn reserve(&mut self, swarm: &mut Swarm<Behaviour>, relay: PeerId) {
        let Some(addr) = self.pending.remove(&relay) else { return };
        if let Some(a) = swarm.behaviour_mut().autonat.as_mut() {
            a.add_server(relay, Some(addr.clone()));
        }
        // The reservation will confirm a `/p2p-circuit` address: not a reason to serve the DHT.
        if !self.status.is_public() {
            set_kad_mode(swarm, kad::Mode::Client);
        }
        let circuit = addr.clone().with(Protocol::P2pCircuit);
        match swarm.listen_on(circuit.clone()) {
            Ok(_) => info!(%circuit, "asking a relay for a reservation"),
            Err(e) => warn!(%circuit, cause = %e, "cannot listen through the relay"),
        }
    }

    pub(super) fn connection(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId, id: ConnectionId, relayed: bool) {
        if relayed {
            self.relayed.entry(peer).or_default().push(id);
        } else if self.pending.contains_key(&peer) {
            self.reserve(swarm, peer);
        }
    }

    pub(super) fn closed(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(ids) = self.relayed.get_mut(&peer) {
            ids.retain(|c| *c != id);
            if ids.is_empty() {
                self.relayed.remove(&peer);
            }
        }
    }

    pub(super) fn on_relay(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted { relay_peer_id, renewal, .. } => {
                if self.reservations.insert(relay_peer_id) || !renewal {
                    info!(relay = %relay_peer_id, "relay reservation accepted");
                }
            }
            relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                debug!(relay = %relay_peer_id, "connected to a peer through a relay")
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                debug!(peer = %src_peer_id, "a peer connected to us through a relay")
            }
        }
    }

    /// A hole punched: the direct connection takes over, and the relayed ones are closed after
    /// [`RELAY_GRACE`] (requests already on them finish; new ones pick either connection).
    pub(super) fn on_dcutr(&mut self, event: dcutr::Event) {
        match event.result {
            Ok(direct) => {
                self.hole_punches += 1;
                info!(peer = %event.remote_peer_id, "hole punched: direct connection");
                let at = std::time::Instant::now() + RELAY_GRACE;
                for id in self.relayed.remove(&event.remote_peer_id).unwrap_or_default() {
                    if id != direct {
                        self.closing.push((at, event.remote_peer_id, id));
                    }
                }
            }
            Err(e) => {
                self.hole_punch_failures += 1;
                info!(peer = %event.remote_peer_id, cause = %e, "hole punching failed; staying on the relay");
            }
        }
    }

    /// Closes the relayed connections whose grace period is over (called every second).
    pub(super) fn close_due(&mut self, swarm: &mut Swarm<Behaviour>) {
        let now = std::time::Instant::now();
        self.closing.retain(|(at, peer, id)| {
            if *at > now {
                return true;
            }
            if swarm.close_connection(*id) {
                info!(%peer, "closed the relayed connection: the direct one carries on");
            }
            false
        });
    }

    pub(super) fn on_autonat(&mut self, swarm: &mut Swarm<Behaviour>, event: autonat::Event, dht_server: bool) {
        if let autonat::Event::StatusChanged { new, .. } = event {
            info!(status = ?new, "reachability");
            let public = new.is_public();
            self.status = new;
            if !dht_server && !self.relays.is_empty() {
                set_kad_mode(swarm, if public { kad::Mode::Server } else { kad::Mode::Client });
            }
        }
    }

    pub(super) fn view(&self) -> NatView {
        NatView {
            status: match (&self.status, self.autonat) {
                (_, false) => "off".into(),
                (autonat::NatStatus::Public(_), _) => "public".into(),
                (autonat::NatStatus::Private, _) => "private".into(),
                (autonat::NatStatus::Unknown, _) => "unknown".into(),
            },
            reservations: self.reservations.iter().map(ToString::to_string).collect(),
            hole_punches: self.hole_punches,
            hole_punch_failures: self.hole_punch_failures,
        }
    }
}

fn set_kad_mode(swarm: &mut Swarm<Behaviour>, mode: kad::Mode) {
    let b = swarm.behaviour_mut();
    for kad in [b.kad.as_mut(), b.kad_lan.as_mut()].into_iter().flatten() {
        kad.set_mode(Some(mode));
    }
}
