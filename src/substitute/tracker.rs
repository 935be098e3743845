//! The daemon's side of the tracker (`peerix serve --tracker URL`): an announcer that tells the
//! tracker our addresses and published paths — a full list at start (and whenever the tracker
//! lost track), deltas from the publication events, heartbeats in between — and the providers
//! lookup the narinfo path uses under its deadline.
//!
//! A tracker that is down, slow or answers garbage costs a lookup at most its deadline and never
//! stops the daemon: every request has a timeout, failures back off, and nothing waits on them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::broadcast::error::TryRecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::local_cache::LocalCache;
use crate::nix::store_path::StoreHash;
use crate::publications::Publication;
use crate::remote::{RemoteError, read_capped};
use crate::timeouts::{MAX_BACKOFF, TRACKER_HEARTBEAT, TRACKER_REQUEST, TRACKER_TICK};
use crate::tracker_wire::{Accepted, Announcement, Provider, Providers, Signed};

/// A providers answer at most (20 providers × 16 addresses fit easily).
const MAX_ANSWER: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The tracker holds another generation (or no record): send a full announcement.
    #[error("tracker wants a full announcement")]
    Resync,
    #[error("tracker refused the announcement: {0}")]
    Refused(String),
    #[error("tracker unreachable: {0}")]
    Unreachable(String),
}

pub struct TrackerClient {
    base: String,
    http: reqwest::Client,
    key: Keypair,
    peer_id: PeerId,
    /// A lookup's question went past its deadline unanswered since the last answer (see
    /// `lookup::ask_peers`: a tracker that has not let us down gets the benefit of the doubt).
    pub(super) let_down: std::sync::atomic::AtomicBool,
}

impl TrackerClient {
    pub fn new(url: &str, key: Keypair) -> Result<Self, crate::remote::RemoteError> {
        let http = crate::remote::client(TRACKER_REQUEST)?;
        let peer_id = key.public().to_peer_id();
        Ok(Self { base: url.trim_end_matches('/').to_owned(), http, key, peer_id, let_down: Default::default() })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// Peers (not us) the tracker says share `hash`, each with its addresses as full multiaddrs
    /// (`…/p2p/<id>`). Empty when it knows none, or on any failure: the caller bounds the wait.
    pub async fn providers(&self, hash: &StoreHash) -> Vec<(PeerId, Vec<Multiaddr>)> {
        match self.fetch_providers(hash).await {
            Ok(found) => found
                .into_iter()
                .filter_map(|p| {
                    let peer: PeerId = p.peer_id.parse().ok()?;
                    let addrs = p.addrs.iter().filter_map(|a| full_addr(a, peer)).collect();
                    (peer != self.peer_id).then_some((peer, addrs))
                })
                .collect(),
            Err(e) => {
                debug!(%hash, cause = %e, "tracker lookup failed");
                Vec::new()
            }
        }
    }

    async fn fetch_providers(&self, hash: &StoreHash) -> Result<Vec<Provider>, RemoteError> {
        let url = format!("{}/v1/providers/{}", self.base, hash.as_str());
        let resp = self.http.get(url).send().await?;
        if !resp.status().is_success() {
            return Err(RemoteError::Status(resp.status()));
        }
        let body = read_capped(resp, MAX_ANSWER).await?;
        Ok(serde_json::from_slice::<Providers>(&body)?.providers)
    }

    /// The tracker's libp2p node (`/v1/status` multiaddrs): our DHT bootstrap peer and relay.
    async fn node_addrs(&self) -> Result<Vec<Multiaddr>, RemoteError> {
        let resp = self.http.get(format!("{}/v1/status", self.base)).send().await?;
        if !resp.status().is_success() {
            return Err(RemoteError::Status(resp.status()));
        }
        let body = read_capped(resp, MAX_ANSWER).await?;
        let status: serde_json::Value = serde_json::from_slice(&body)?;
        Ok(status["multiaddrs"]
            .as_array()
            .map(|a| a.iter().filter_map(|m| m.as_str()?.parse().ok()).take(8).collect())
            .unwrap_or_default())
    }

    async fn send(&self, a: &Announcement) -> Result<Accepted, SendError> {
        let signed = Signed::sign(a, &self.key).map_err(|e| SendError::Refused(e.to_string()))?;
        let resp = self
            .http
            .post(format!("{}/v1/announce", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&signed).map_err(|e| SendError::Refused(e.to_string()))?)
            .send()
            .await
            .map_err(|e| SendError::Unreachable(crate::errors::chain(&e)))?;
        let status = resp.status();
        let text = match read_capped(resp, MAX_ANSWER).await {
            Ok(body) => String::from_utf8_lossy(&body).into_owned(),
            Err(e) => return Err(SendError::Unreachable(format!("HTTP {status}: {e}"))),
        };
        match status.as_u16() {
            200 => serde_json::from_str(&text).map_err(|e| SendError::Refused(format!("malformed answer: {e}"))),
            409 if text.contains("full announcement") => Err(SendError::Resync),
            429 | 500..=599 => Err(SendError::Unreachable(format!("HTTP {status}: {}", text.trim()))),
            _ => Err(SendError::Refused(format!("HTTP {status}: {}", text.trim()))),
        }
    }

    fn announcement(&self, addrs: &[String], generation: u64) -> Announcement {
        let mut nonce = [0u8; 16];
        let _ = getrandom::fill(&mut nonce);
        Announcement {
            peer_id: self.peer_id.to_string(),
            addrs: addrs.to_vec(),
            timestamp: crate::store::now_secs(),
            nonce: data_encoding::HEXLOWER.encode(&nonce),
            generation,
            full: None,
            base: None,
            add: Vec::new(),
            remove: Vec::new(),
        }
    }
}

/// `addr` with `/p2p/<peer>` at its end (the tracker stores addresses without it).
fn full_addr(addr: &str, peer: PeerId) -> Option<Multiaddr> {
    let addr: Multiaddr = addr.parse().ok()?;
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(p)) if p == peer => Some(addr),
        Some(libp2p::multiaddr::Protocol::P2p(_)) => None,
        _ => Some(addr.with(libp2p::multiaddr::Protocol::P2p(peer))),
    }
}

/// Our addresses for the tracker: the node's external and listen addresses (a relay's
/// `/p2p-circuit` among them), without our own trailing `/p2p/<id>`.
async fn our_addrs(node: &crate::p2p::Node) -> Vec<String> {
    let Some(info) = node.info().await else { return Vec::new() };
    let mut addrs: Vec<String> = Vec::new();
    for a in info.external_addrs.iter().chain(&info.listen_addrs).filter_map(|a| a.parse::<Multiaddr>().ok()) {
        let mut a = a;
        if matches!(a.iter().last(), Some(libp2p::multiaddr::Protocol::P2p(_))) {
            a.pop();
        }
        let a = a.to_string();
        if !addrs.contains(&a) {
            addrs.push(a);
        }
    }
    addrs.truncate(16);
    addrs
}

/// Keeps the tracker's record of us current until `shutdown`.
pub async fn announce_forever(
    client: Arc<TrackerClient>,
    cache: Arc<LocalCache>,
    node: crate::p2p::Node,
    shutdown: CancellationToken,
) {
    let mut events = cache.publications().subscribe();
    // What the tracker holds: its generation, or `None` when it needs the full list.
    let mut held: Option<u64> = None;
    let (mut add, mut remove) = (BTreeSet::<String>::new(), BTreeSet::<String>::new());
    let mut heartbeat = TRACKER_HEARTBEAT;
    let mut last_sent = tokio::time::Instant::now();
    let mut last_addrs: Vec<String> = Vec::new();
    let (mut backoff, mut retry_at, mut failing) = (TRACKER_TICK, tokio::time::Instant::now(), false);
    // The tracker's node, once known: asked for at start and every minute until it answers.
    let (mut relays_known, mut ask_node_at) = (false, tokio::time::Instant::now());
    let mut started = false;
    loop {
        // The first round runs at once (the relay and the first announcement are what make us
        // reachable); then one a tick.
        let wait = if started { TRACKER_TICK } else { Duration::ZERO };
        started = true;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        if !relays_known && tokio::time::Instant::now() >= ask_node_at {
            match client.node_addrs().await {
                Ok(addrs) => {
                    relays_known = true;
                    if !addrs.is_empty() {
                        info!(addrs = addrs.len(), "using the tracker's node as DHT bootstrap peer and relay");
                        node.use_relays(addrs).await;
                    }
                }
                Err(e) => {
                    debug!(cause = %e, "cannot get the tracker's node addresses");
                    ask_node_at = tokio::time::Instant::now() + MAX_BACKOFF;
                }
            }
        }
        loop {
            match events.try_recv() {
                Ok(Publication::Published { hash, .. }) => {
                    remove.remove(hash.as_str());
                    add.insert(hash.as_str().to_owned());
                }
                Ok(Publication::Withdrawn { hash, .. }) => {
                    add.remove(hash.as_str());
                    remove.insert(hash.as_str().to_owned());
                }
                // Events were lost: only a full list is right again.
                Err(TryRecvError::Lagged(_)) => held = None,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return,
            }
        }
        let now = tokio::time::Instant::now();
        // A new address (a relay reservation, a confirmed external one) goes out at once: it may be
        // the only one other peers can reach.
        let addrs = our_addrs(&node).await;
        let moved = addrs != last_addrs;
        let due = held.is_none() || moved || !add.is_empty() || !remove.is_empty() || now >= last_sent + heartbeat;
        if !due || now < retry_at || addrs.is_empty() {
            continue; // (No address: not listening yet.)
        }
        let (a, sent) = match held {
            None => {
                let state = cache.state_arc();
                let Ok(Ok(paths)) = crate::tasks::spawn_blocking(module_path!(), move || state.published_paths()).await
                else {
                    continue;
                };
                let mut a = client.announcement(&addrs, 1);
                if paths.len() > crate::tracker_wire::MAX_PATHS {
                    warn!(
                        paths = paths.len(),
                        announced = crate::tracker_wire::MAX_PATHS,
                        "more published paths than a tracker record holds; announcing the first ones only"
                    );
                }
                a.full = Some(paths.into_iter().take(crate::tracker_wire::MAX_PATHS).collect());
                (a, (BTreeSet::new(), BTreeSet::new()))
            }
            Some(g) => {
                let changed = !add.is_empty() || !remove.is_empty();
                let mut a = client.announcement(&addrs, if changed { g + 1 } else { g });
                a.base = Some(g);
                a.add = add.iter().cloned().collect();
                a.remove = remove.iter().cloned().collect();
                (a, (std::mem::take(&mut add), std::mem::take(&mut remove)))
            }
        };
        match client.send(&a).await {
            Ok(accepted) => {
                if held.is_none() || failing {
                    info!(tracker = client.url(), paths = a.full.as_ref().map(Vec::len), "announced to the tracker");
                } else {
                    debug!(added = a.add.len(), removed = a.remove.len(), "tracker record updated");
                }
                held = Some(accepted.generation);
                last_addrs = a.addrs.clone();
                heartbeat =
                    Duration::from_secs(accepted.ttl_secs / 3).clamp(Duration::from_secs(5), Duration::from_secs(120));
                last_sent = tokio::time::Instant::now();
                (backoff, failing) = (TRACKER_TICK, false);
            }
            Err(e) => {
                // The changes go out again (the full list includes them anyway).
                add.extend(sent.0);
                remove.extend(sent.1);
                if matches!(e, SendError::Resync) {
                    held = None;
                    continue;
                }
                if !failing {
                    warn!(tracker = client.url(), cause = %e, "cannot announce to the tracker; retrying with backoff");
                }
                failing = true;
                retry_at = tokio::time::Instant::now() + backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
