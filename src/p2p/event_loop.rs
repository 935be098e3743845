//! The task that owns the `Swarm`: applies [`Command`]s from [`Client`]s, reacts to swarm events
//! (identify → Kademlia addresses and which peers are peerix nodes, mDNS → kept peers, query results
//! → replies), and keeps `--peer` and mDNS peers connected ([`super::kept`]). Every dial it starts
//! is logged with its address (`dialing …`), so a test can check that a mode dials nothing it
//! should not. No SQLite write happens here: provider records are announced by
//! [`super::announce`] through commands.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use libp2p::kad::{self, GetProvidersOk, QueryId, QueryResult, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, mdns};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::client::Command;
use super::kept::Kept;
use super::liveness::Liveness;
use super::peers::{Discovery, Peers};
use super::swarm::BehaviourEvent;
use super::{Behaviour, Client, Config, Mode, NodeInfo};
use crate::timeouts::KAD_QUERY;

/// Commands waiting for the loop; a full queue makes callers wait, never the loop.
const COMMAND_QUEUE: usize = 256;

/// Which of kubo's two DHTs a query runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Dht {
    Wan,
    Lan,
}

/// A provider lookup, run on every DHT at once: answered by the first DHT that finds providers,
/// or when all have finished without, or at the deadline.
struct PendingProviders {
    reply: Option<oneshot::Sender<Vec<PeerId>>>,
    found: HashSet<PeerId>,
    started: Instant,
    /// Queries of this lookup still running.
    running: usize,
}

pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    cfg: Config,
    peers: Arc<Peers>,
    connected: HashMap<PeerId, u32>,
    listen_addrs: Vec<Multiaddr>,
    pending_providers: HashMap<u64, PendingProviders>,
    /// Query (per DHT: query ids are per-behaviour counters) → lookup.
    provider_queries: HashMap<(Dht, QueryId), u64>,
    next_lookup: u64,
    /// Who waits for a connection to a peer being dialled ([`Command::Connect`]).
    connecting: HashMap<PeerId, Vec<oneshot::Sender<bool>>>,
    nat: super::nat::Nat,
    /// `--peer` and mDNS peers, kept connected: in `lan` mode they are the only way to a block, and
    /// mDNS re-queries only every 5 min.
    kept: Kept,
    /// When each connection last answered a ping: silent ones are closed.
    liveness: Liveness,
    /// Opens the heartbeat streams ([`super::heartbeat`]), on tasks of their own.
    control: libp2p_stream::Control,
}

pub(super) fn new(swarm: Swarm<Behaviour>, cfg: Config, peers: Arc<Peers>) -> (Client, EventLoop) {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let client = Client::new(tx, *swarm.local_peer_id());
    let mut kept = Kept::default();
    for addr in &cfg.peers {
        kept.add_static(addr.clone());
    }
    let control = swarm.behaviour().stream.new_control();
    let event_loop = EventLoop {
        control,
        nat: super::nat::Nat::new(cfg.autonat && cfg.mode == Mode::Ipfs),
        swarm,
        commands: rx,
        cfg,
        peers,
        connected: HashMap::new(),
        listen_addrs: Vec::new(),
        pending_providers: HashMap::new(),
        provider_queries: HashMap::new(),
        next_lookup: 0,
        connecting: HashMap::new(),
        kept,
        liveness: Liveness::default(),
    };
    (client, event_loop)
}

/// The DHT key under which a store path's providers are announced.
pub fn store_path_key(hash32: &str) -> RecordKey {
    use multihash_codetable::{Code, MultihashDigest};
    RecordKey::new(&Code::Sha2_256.digest(format!("/peerix/store/{hash32}").as_bytes()).to_bytes())
}

/// `addr` ending in `/p2p/<local>` (a `/p2p-circuit` listen address already ends in our id).
fn with_peer_id(addr: &Multiaddr, local: PeerId) -> String {
    match addr.iter().last() {
        Some(Protocol::P2p(_)) => addr.to_string(),
        _ => format!("{addr}/p2p/{local}"),
    }
}

/// The DHTs this node runs (none in `lan` mode), borrowed from the behaviour.
fn dhts(b: &mut Behaviour) -> impl Iterator<Item = (Dht, &mut kad::Behaviour<super::provider_store::ProviderStore>)> {
    [(Dht::Wan, b.kad.as_mut()), (Dht::Lan, b.kad_lan.as_mut())].into_iter().filter_map(|(d, k)| k.map(|k| (d, k)))
}

impl EventLoop {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let dialed = self.bootstrap();
        if self.cfg.mode == Mode::Ipfs {
            for relay in self.cfg.relays.clone() {
                self.nat.use_relay(&mut self.swarm, relay);
            }
        }
        self.keep_peers();
        info!(mode = ?self.cfg.mode, bootstrap_peers = dialed, kept_peers = self.cfg.peers.len(), "p2p node started");
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut checks = 0;
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                due = tick.tick() => {
                    let peers = &self.peers;
                    for (connection, peer, quiet) in self.liveness.silent_at(due, |p| peers.heard(p)) {
                        self.close_silent(connection, peer, format_args!("silent for {} ms", quiet.as_millis()));
                    }
                    self.sweep();
                    checks = (checks + 1) % super::trim::CHECK_EVERY;
                    if checks == 0 {
                        self.trim();
                    }
                    self.nat.close_due(&mut self.swarm);
                    self.keep_peers();
                }
                _ = shutdown.cancelled() => break,
            }
        }
        debug!("p2p event loop stopped");
    }

    /// Dials the bootstrap peers and starts the DHT's bootstrap; returns how many were dialled.
    fn bootstrap(&mut self) -> usize {
        // Bootstrap peers are for the DHT: `lan` mode has none (config leaves the list empty too).
        if self.cfg.mode == Mode::Lan {
            return 0;
        }
        for addr in self.cfg.bootstrap.clone() {
            if let Some(peer) = super::peer_of(&addr) {
                for (_, kad) in dhts(self.swarm.behaviour_mut()) {
                    kad.add_address(&peer, addr.clone());
                }
            }
            debug!(%addr, "dialing bootstrap peer");
            if let Err(e) = self.swarm.dial(addr.clone()) {
                warn!(%addr, cause = %e, "cannot dial bootstrap peer");
            }
        }
        if !self.cfg.bootstrap.is_empty() {
            for (_, kad) in dhts(self.swarm.behaviour_mut()) {
                let _ = kad.bootstrap();
            }
        }
        self.cfg.bootstrap.len()
    }

    /// A connection whose peer stopped answering pings — found silent by [`super::liveness`], or
    /// two pings in a row failed — is closed at once: its requests fail over now, not after the
    /// minutes a TCP timeout takes.
    fn close_silent(&mut self, connection: ConnectionId, peer: PeerId, why: impl std::fmt::Display) {
        info!(%peer, %why, "peer stopped answering pings; closing its connection");
        self.swarm.close_connection(connection);
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Connect { peer, addrs, reply } => {
                use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
                if self.connected.contains_key(&peer) {
                    let _ = reply.send(true);
                    return;
                }
                let opts = DialOpts::peer_id(peer).addresses(addrs).condition(PeerCondition::DisconnectedAndNotDialing);
                match self.swarm.dial(opts.build()) {
                    // Already dialing: this waits for that dial.
                    Ok(()) | Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {
                        self.connecting.entry(peer).or_default().push(reply);
                    }
                    Err(e) => {
                        debug!(%peer, cause = %e, "cannot dial a provider");
                        let _ = reply.send(false);
                    }
                }
            }
            Command::GetProviders { key, reply } => {
                let lookup = self.next_lookup;
                self.next_lookup += 1;
                let mut running = 0;
                for (dht, kad) in dhts(self.swarm.behaviour_mut()) {
                    self.provider_queries.insert((dht, kad.get_providers(key.clone())), lookup);
                    running += 1;
                }
                if running == 0 {
                    let _ = reply.send(Vec::new());
                } else {
                    self.pending_providers.insert(
                        lookup,
                        PendingProviders {
                            reply: Some(reply),
                            found: HashSet::new(),
                            started: Instant::now(),
                            running,
                        },
                    );
                }
            }
            Command::Connected { reply } => {
                let _ = reply.send(self.connected.keys().copied().collect());
            }
            Command::Info { reply } => {
                let local = *self.swarm.local_peer_id();
                let with_id = |a: &Multiaddr| with_peer_id(a, local);
                let _ = reply.send(NodeInfo {
                    peer_id: local.to_string(),
                    mode: self.cfg.mode,
                    listen_addrs: self.listen_addrs.iter().map(with_id).collect(),
                    external_addrs: self.swarm.external_addresses().map(with_id).collect(),
                    connected_peers: self.connected.keys().map(|p| p.to_string()).collect(),
                    nat: self.nat.view(),
                });
            }
            Command::UseRelays { addrs } => {
                for addr in addrs {
                    if let Some(peer) = super::peer_of(&addr) {
                        for (_, kad) in dhts(self.swarm.behaviour_mut()) {
                            kad.add_address(&peer, addr.clone());
                        }
                    }
                    self.nat.use_relay(&mut self.swarm, addr);
                }
            }
            Command::Disconnect { peer } => {
                warn!(%peer, "disconnecting misbehaving peer");
                self.swarm.behaviour_mut().admission.ban(peer);
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Provide { keys } => {
                for (_, kad) in dhts(self.swarm.behaviour_mut()) {
                    for key in &keys {
                        if let Err(e) = kad.start_providing(key.clone()) {
                            warn!(cause = %e, "cannot store provider record");
                        }
                    }
                }
            }
            Command::StopProviding { keys } => {
                for (_, kad) in dhts(self.swarm.behaviour_mut()) {
                    for key in &keys {
                        kad.stop_providing(key);
                    }
                }
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!("p2p listening on {}", with_peer_id(&address, *self.swarm.local_peer_id()));
                if self.cfg.dht_server {
                    self.swarm.add_external_address(address.clone());
                }
                self.listen_addrs.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => self.listen_addrs.retain(|a| *a != address),
            SwarmEvent::ListenerClosed { addresses, reason: Err(e), .. } => {
                warn!(?addresses, cause = %e, "listener closed");
            }
            SwarmEvent::ListenerError { error, .. } => warn!(cause = %error, "listener failed"),
            SwarmEvent::Dialing { peer_id, .. } => debug!(?peer_id, "dial started"),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(?peer_id, cause = %error, "dial failed");
                for waiting in peer_id.and_then(|p| self.connecting.remove(&p)).into_iter().flatten() {
                    let _ = waiting.send(false);
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, connection_id, .. } => {
                let relayed = super::nat::relayed_endpoint(&endpoint);
                self.nat.connection(&mut self.swarm, peer_id, connection_id, relayed);
                let n = self.connected.entry(peer_id).or_default();
                *n += 1;
                if *n > 1 && !relayed {
                    self.peers.set_addr(peer_id, endpoint.get_remote_address().clone());
                }
                if *n == 1 {
                    let addr = endpoint.get_remote_address().clone();
                    info!(%peer_id, %addr, "peer connected");
                    let tracked = self.connecting.contains_key(&peer_id);
                    let found = match (self.kept.found(&peer_id), endpoint.is_dialer()) {
                        (Some(f), _) => f,
                        (None, true) if tracked => Discovery::Tracker,
                        (None, true) if self.cfg.mode == Mode::Ipfs => Discovery::Dht,
                        (None, true) => Discovery::Dialed,
                        (None, false) => Discovery::Inbound,
                    };
                    self.kept.connected(&peer_id);
                    self.peers.connected(peer_id, addr, found, relayed);
                }
                for waiting in self.connecting.remove(&peer_id).into_iter().flatten() {
                    let _ = waiting.send(true);
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established, connection_id, .. } => {
                self.nat.closed(peer_id, connection_id);
                self.liveness.closed(&connection_id);
                match num_established {
                    // A kept peer is dialed again by `keep_peers` after its backoff.
                    0 => {
                        self.connected.remove(&peer_id);
                        self.kept.disconnected(&peer_id);
                        self.peers.disconnected(peer_id);
                        info!(%peer_id, "peer disconnected");
                    }
                    n => {
                        self.connected.insert(peer_id, n);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                for (_, kad) in dhts(self.swarm.behaviour_mut()) {
                    for addr in &info.listen_addrs {
                        kad.add_address(&peer_id, addr.clone());
                    }
                }
                let peerix = info.protocols.contains(&super::narinfo::PROTOCOL);
                if peerix {
                    debug!(%peer_id, agent = %info.agent_version, "peer is a peerix node");
                }
                let beats = info.protocols.contains(&super::heartbeat::PROTOCOL);
                self.peers.identified(peer_id, info.agent_version, peerix, beats);
                // A peer watched from the start (kept, the tracker's node) is asked at once; one
                // watched later (its summary came, it named a path) by the heartbeat's keeper.
                super::heartbeat::start(&self.control, &self.peers, peer_id, *self.swarm.local_peer_id());
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(libp2p::ping::Event { peer, connection, result: Ok(rtt) })) => {
                self.liveness.answered(connection, peer, Instant::now());
                self.peers.pinged(peer, rtt);
            }
            // Two pings in a row unanswered (libp2p lets the first pass): closed at once, as a
            // connection [`super::liveness`] finds silent.
            SwarmEvent::Behaviour(BehaviourEvent::Ping(libp2p::ping::Event {
                peer,
                connection,
                result: Err(e @ (libp2p::ping::Failure::Timeout | libp2p::ping::Failure::Other { .. })),
            })) => self.close_silent(connection, peer, e),
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(e)) => self.nat.on_relay(e),
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(e)) => self.nat.on_dcutr(e),
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(e)) => {
                self.nat.on_autonat(&mut self.swarm, e, self.cfg.dht_server)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Upnp(e)) => info!(event = ?e, "UPnP"),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Expired(gone))) => {
                for (peer, addr) in gone {
                    self.kept.expire_mdns(&peer, &addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if !self.kept.add_mdns(peer, addr.clone()) {
                        debug!(%peer, "too many mDNS peers; ignoring one");
                        continue;
                    }
                    for (_, kad) in dhts(self.swarm.behaviour_mut()) {
                        kad.add_address(&peer, addr.clone());
                    }
                    if !self.connected.contains_key(&peer) {
                        info!(%peer, %addr, "mDNS found a peer");
                    }
                }
                self.keep_peers();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed { id, result, .. })) => {
                self.on_query(Dht::Wan, id, result)
            }
            SwarmEvent::Behaviour(BehaviourEvent::KadLan(kad::Event::OutboundQueryProgressed {
                id, result, ..
            })) => self.on_query(Dht::Lan, id, result),
            _ => {}
        }
    }

    fn on_query(&mut self, dht: Dht, id: QueryId, result: QueryResult) {
        let finished = match result {
            QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders { providers, .. })) => {
                if let Some(p) = self.provider_queries.get(&(dht, id)).and_then(|l| self.pending_providers.get_mut(l)) {
                    p.found.extend(providers);
                    // The first answer is enough to start fetching; the queries may go on.
                    if !p.found.is_empty()
                        && let Some(reply) = p.reply.take()
                    {
                        debug!(?dht, providers = p.found.len(), "providers found");
                        let _ = reply.send(p.found.iter().copied().collect());
                    }
                }
                false
            }
            QueryResult::GetProviders(other) => {
                if let Err(e) = other {
                    debug!(?dht, cause = %e, "provider query ended");
                }
                true
            }
            QueryResult::StartProviding(Err(e)) => {
                debug!(?dht, cause = %e, "announcement failed");
                false
            }
            _ => false,
        };
        if finished && let Some(lookup) = self.provider_queries.remove(&(dht, id)) {
            let done = self.pending_providers.get_mut(&lookup).is_some_and(|p| {
                p.running -= 1;
                p.running == 0
            });
            if done
                && let Some(mut p) = self.pending_providers.remove(&lookup)
                && let Some(reply) = p.reply.take()
            {
                let _ = reply.send(p.found.into_iter().collect());
            }
        }
    }

    /// Dials every kept peer (`--peer`, mDNS) that has no connection and whose backoff is over.
    fn keep_peers(&mut self) {
        let connected = &self.connected;
        for (peer, addrs) in self.kept.due(|p| connected.contains_key(p)) {
            for addr in &addrs {
                debug!(%peer, %addr, "dialing kept peer");
            }
            let opts = DialOpts::peer_id(peer)
                .condition(libp2p::swarm::dial_opts::PeerCondition::DisconnectedAndNotDialing)
                .addresses(addrs)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(%peer, cause = %e, "dial not started");
            }
        }
    }

    /// Above [`super::trim::HIGH`] connected peers, closes idle connections nothing depends on.
    fn trim(&mut self) {
        let n = self.connected.len();
        let closing = super::trim::choose(n, self.peers.trimmable(super::trim::GRACE));
        if !closing.is_empty() {
            debug!(connected = n, closing = closing.len(), "trimming idle connections");
        }
        for peer in closing {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Answers provider lookups that outlived their deadline.
    fn sweep(&mut self) {
        let expired: Vec<u64> =
            self.pending_providers.iter().filter(|(_, p)| p.started.elapsed() > KAD_QUERY).map(|(l, _)| *l).collect();
        for lookup in expired {
            if let Some(mut p) = self.pending_providers.remove(&lookup)
                && let Some(reply) = p.reply.take()
            {
                let _ = reply.send(p.found.into_iter().collect());
            }
            self.provider_queries.retain(|_, l| *l != lookup);
        }
    }
}
