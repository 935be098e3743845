//! What this node knows of other peers: which are peerix nodes (identify lists
//! `/peerix/narinfo/1.0.0`; only they are asked for narinfos), how each was found, the have-summary
//! it sent, and what it did for us (lookups answered, bytes delivered) or against us (untrusted
//! answers, bad blocks) — the reputation lookups and transfers order peers by.
//!
//! Written by the swarm's event loop (connections, identify), the have receiver (summaries) and the
//! substitution path (counters); read by lookups and `/api/status`. One std `Mutex`, never held
//! across an `.await`; every operation under it is a map access or a Bloom probe (≈ 100 ns).
//! Bounded: connected peers plus the [`MAX_REMEMBERED`] most recently seen others.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use tokio::sync::Notify;

use super::have::{self, Summary};
use crate::nix::store_path::StoreHash;
use crate::timeouts::DISHONEST_PENALTY;

mod hearing;

/// Disconnected peers whose counters are kept (for status and reputation after a reconnect).
const MAX_REMEMBERED: usize = 256;

/// How we came to know a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Discovery {
    /// `--peer`.
    Static,
    Mdns,
    /// A DHT query or bootstrap.
    Dht,
    /// It dialled us.
    #[default]
    Inbound,
    /// We dialled it for another reason (a provider, a fetch).
    Dialed,
    /// The tracker named it as a provider of a path we looked up.
    Tracker,
}

/// Per-peer counters, shown by `/api/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerStats {
    /// Narinfo requests we sent it, and how they ended.
    pub lookups_asked: u64,
    pub lookups_answered: u64,
    pub lookups_not_found: u64,
    pub lookups_failed: u64,
    /// Answers we refused (no trusted signature, wrong StorePath, …).
    pub untrusted_answers: u64,
    /// Blocks (and their bytes) it delivered to us, verified.
    pub blocks_received: u64,
    pub bytes_received: u64,
    /// Blocks that did not match their CID, DAGs that were malformed.
    pub bad_blocks: u64,
    /// Block requests that failed or stalled.
    pub fetch_failures: u64,
    /// What we served it.
    pub narinfos_served: u64,
    pub blocks_sent: u64,
    pub bytes_sent: u64,
    /// Have-summary messages refused (malformed, out of order, too many).
    pub bad_summaries: u64,
}

struct Peer {
    connected: bool,
    /// Times it went from no connection to one: a changed count means the connection we knew
    /// broke and another took its place.
    connects: u64,
    peerix: bool,
    agent: Option<String>,
    found: Discovery,
    addr: Option<Multiaddr>,
    /// The connection we know it by runs through a relay.
    relayed: bool,
    summary: Option<Summary>,
    stats: PeerStats,
    last_seen: Instant,
    dishonest_until: Option<Instant>,
    /// The last ping's round trip: on a busy link it includes the wait behind bulk data.
    rtt: Option<Duration>,
    /// The smallest round trip on this connection: how far away the peer is, without that wait
    /// (two seeders saturating loopback made heartbeats take 5 ms+, and the far-peer rule then
    /// zstd-compressed their blocks: ~12 % of a seeder's CPU for nothing).
    nearest: Option<Duration>,
    /// Narinfo requests to it in flight now.
    asking: u32,
    /// When it last answered one of our requests (a narinfo, a unit of blocks): a peer whose
    /// answers keep coming is busy, not gone, and is waited for longer.
    last_answer: Option<Instant>,
    /// When the peer last showed it is there besides pings: an answer or a request to us, or
    /// blocks it took from us.
    last_heard: Option<Instant>,
    /// A request of ours went past its deadline unanswered since the last answer.
    let_down: bool,
    /// It lists [`super::heartbeat::PROTOCOL`] (identify): a heartbeat with it starts.
    beats: bool,
    /// A heartbeat stream with it is open (ours opened, or its first beat came): from then on
    /// liveness judges it by heartbeats (silent after 5 s), before by libp2p's pings (every
    /// 30 s). Not from identify on: on a starved machine the stream can take seconds to open.
    beat_heard: bool,
    /// Our heartbeat task with it runs ([`Self::start_beating`]).
    beating: bool,
    /// Its heartbeat streams to us that are open: it asks, so we need not (unless its id is
    /// larger and we watch it too: then we ask and it stops).
    asked_by: u8,
    /// It named a root of a narinfo we accepted, lately: its connection decides whether we
    /// offer that path ([`Self::named`]).
    named_until: Option<Instant>,
    /// We send it our summary ([`Self::set_linked`]): it watches us.
    linked: bool,
    /// When its connection came (the first, if it holds several).
    since: Instant,
}

impl Peer {
    fn new(found: Discovery) -> Self {
        Self {
            connected: false,
            connects: 0,
            peerix: false,
            agent: None,
            found,
            addr: None,
            relayed: false,
            summary: None,
            stats: PeerStats::default(),
            last_seen: Instant::now(),
            dishonest_until: None,
            rtt: None,
            nearest: None,
            asking: 0,
            last_answer: None,
            last_heard: None,
            let_down: false,
            beats: false,
            beat_heard: false,
            beating: false,
            asked_by: 0,
            named_until: None,
            linked: false,
            since: Instant::now(),
        }
    }

    /// Which of its connections is up, by the count of its connects; `None` while it has none.
    fn connection(&self) -> Option<u64> {
        self.connected.then_some(self.connects)
    }

    /// A peer we keep connected (`--peer`, mDNS): always linked both ways.
    fn kept(&self) -> bool {
        matches!(self.found, Discovery::Static | Discovery::Mdns)
    }

    /// Whether what we offer depends on this peer being there, so that its leaving must be
    /// noticed in seconds ([`crate::timeouts::SILENT_AFTER`]) and a heartbeat with it runs: we
    /// hold its summary, we keep it, it named a path we accepted lately, or it is no peerix node
    /// but beats (the tracker's node: our presence there). Any other connection (the DHT's walks
    /// open dozens on a fleet) is judged by libp2p's pings every 30 s and idles out.
    fn watched(&self) -> bool {
        let tracker = !self.peerix && self.beats;
        self.summary.is_some() || self.kept() || tracker || self.named_until.is_some_and(|t| t > Instant::now())
    }

    fn dishonest(&self) -> bool {
        self.dishonest_until.is_some_and(|t| t > Instant::now())
    }
}

/// One peer as `/api/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    pub peer_id: String,
    pub connected: bool,
    pub peerix: bool,
    pub agent: Option<String>,
    pub found: Discovery,
    pub addr: Option<String>,
    /// The connection runs through a relay (`/p2p-circuit`), not directly.
    pub relayed: bool,
    /// Paths in its have-summary, and the summary's size on the wire.
    pub summary_paths: Option<u64>,
    pub summary_bytes: Option<usize>,
    pub dishonest: bool,
    /// The last ping's round trip, in milliseconds.
    pub rtt_ms: Option<f64>,
    pub stats: PeerStats,
}

/// A connected peerix peer the have advertiser may link to.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub peer: PeerId,
    /// A `--peer` or mDNS peer: always linked.
    pub kept: bool,
    /// It sends us its summary.
    pub sends_us: bool,
}

#[derive(Default)]
pub struct Peers {
    map: Mutex<HashMap<PeerId, Peer>>,
    /// Fires when a peerix peer connects or leaves (the have advertiser waits on it).
    changed: Notify,
}

impl Peers {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<PeerId, Peer>) -> T) -> T {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut map)
    }

    /// Changes what we know of `peer`, if we know it.
    fn update(&self, peer: &PeerId, f: impl FnOnce(&mut Peer)) {
        self.with(|m| m.get_mut(peer).map(f));
    }

    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    pub fn connected(&self, peer: PeerId, addr: Multiaddr, found: Discovery, relayed: bool) {
        self.with(|m| {
            let p = m.entry(peer).or_insert_with(|| Peer::new(found));
            if !p.connected {
                p.since = Instant::now();
                p.nearest = None;
            }
            p.connected = true;
            p.connects += 1;
            p.addr = Some(addr);
            p.relayed = relayed;
            p.last_seen = Instant::now();
            if p.found == Discovery::Inbound || p.found == Discovery::Dialed {
                p.found = found;
            }
        });
    }

    /// The address the peer is reached at now (a direct connection that replaced a relayed one).
    pub fn set_addr(&self, peer: PeerId, addr: Multiaddr) {
        self.update(&peer, |p| {
            p.addr = Some(addr);
            p.relayed = false;
        });
    }

    pub fn disconnected(&self, peer: PeerId) {
        let was_peerix = self.with(|m| {
            let Some(p) = m.get_mut(&peer) else { return false };
            p.connected = false;
            p.summary = None;
            p.beat_heard = false;
            p.asked_by = 0;
            p.last_seen = Instant::now();
            let was = p.peerix;
            p.peerix = false;
            // Forget the longest-gone peers beyond the cap.
            let gone = m.values().filter(|p| !p.connected).count();
            if gone > MAX_REMEMBERED {
                let mut old: Vec<(PeerId, Instant)> =
                    m.iter().filter(|(_, p)| !p.connected).map(|(id, p)| (*id, p.last_seen)).collect();
                old.sort_by_key(|(_, t)| *t);
                for (id, _) in old.into_iter().take(gone - MAX_REMEMBERED) {
                    m.remove(&id);
                }
            }
            was
        });
        if was_peerix {
            self.changed.notify_one();
        }
    }

    /// Identify told us what the peer runs; `peerix` if it speaks our narinfo protocol.
    pub fn identified(&self, peer: PeerId, agent: String, peerix: bool, beats: bool) {
        let newly = self.with(|m| {
            let p = m.entry(peer).or_insert_with(|| Peer::new(Discovery::Inbound));
            p.agent = Some(agent);
            p.beats = beats;
            // Named before identify came (`named`), but it sends no beats to judge it by.
            p.beat_heard &= beats;
            let newly = peerix && !p.peerix && p.connected;
            p.peerix = peerix && p.connected;
            newly
        });
        if newly {
            self.changed.notify_one();
        }
    }

    /// Connected peerix peers.
    pub fn peerix_peers(&self) -> Vec<PeerId> {
        self.with(|m| m.iter().filter(|(_, p)| p.connected && p.peerix).map(|(id, _)| *id).collect())
    }

    /// Connected peerix peers, as the have advertiser chooses among them.
    pub fn summary_candidates(&self) -> Vec<Candidate> {
        self.with(|m| {
            m.iter()
                .filter(|(_, p)| p.connected && p.peerix)
                .map(|(id, p)| Candidate { peer: *id, kept: p.kept(), sends_us: p.summary.is_some() })
                .collect()
        })
    }

    /// Whether a summary from `peer` is read: always from a peer we keep, from others while fewer
    /// than `max` of them send theirs.
    pub fn admits_summary(&self, peer: &PeerId, max: usize) -> bool {
        self.with(|m| {
            if m.get(peer).is_some_and(|p| p.kept() || p.summary.is_some()) {
                return true;
            }
            m.values().filter(|p| p.connected && p.summary.is_some() && !p.kept()).count() < max
        })
    }

    pub fn is_peerix(&self, peer: &PeerId) -> bool {
        self.with(|m| m.get(peer).is_some_and(|p| p.peerix))
    }

    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.with(|m| m.get(peer).is_some_and(|p| p.connected))
    }

    /// Which connection to `peer` is up, by the count of its connects; `None` while it has none.
    pub fn connection(&self, peer: &PeerId) -> Option<u64> {
        self.with(|m| m.get(peer).and_then(Peer::connection))
    }

    /// Resolves once the connection to `peer` that is up now (or, if none is yet, the first that
    /// comes within a second) is down. A read on a stream whose connection we closed ourselves (a
    /// peer gone silent) is never woken, so a task that waits on one selects on this too (checked
    /// every second).
    pub async fn connection_down(&self, peer: &PeerId) {
        let mut known = self.connection(peer);
        let mut check = tokio::time::interval(std::time::Duration::from_secs(1));
        check.tick().await;
        loop {
            check.tick().await;
            let now = self.connection(peer);
            known = known.or(now);
            if now.is_none() || now != known {
                return;
            }
        }
    }

    /// Applies a have-summary message from `peer`. On a malformed or out-of-order one, the peer's
    /// summary is dropped (it is asked nothing until it sends a good full summary) and the error
    /// returned.
    pub fn apply_summary(&self, peer: PeerId, msg: have::wire::Have) -> Result<(), have::HaveError> {
        self.with(|m| {
            // A stream from the peer proves the connection: its summary can arrive before the event
            // loop has seen the connection (streams do not pass through it). A peer known to have
            // gone is another matter: a frame left over from its closed stream is not applied.
            let p = m.entry(peer).or_insert_with(|| {
                let mut p = Peer::new(Discovery::Inbound);
                p.connected = true;
                p
            });
            if !p.connected {
                return Err(have::HaveError::NotConnected);
            }
            let result = have::apply(&mut p.summary, msg);
            if result.is_err() {
                p.summary = None;
                p.stats.bad_summaries += 1;
            }
            result
        })
    }

    /// Connected peerix peers whose summary says they may have `hash`: honest ones first, in a
    /// random order (so lookups that ask a few spread over all of them).
    pub fn matching(&self, hash: &StoreHash) -> Vec<PeerId> {
        let key = hash.to_bytes();
        let mut found: Vec<(bool, u64, PeerId)> = self.with(|m| {
            m.iter()
                .filter(|(_, p)| p.connected && p.peerix && p.summary.as_ref().is_some_and(|s| s.contains(&key)))
                .map(|(id, p)| (p.dishonest(), random_u64(), *id))
                .collect()
        });
        found.sort_by_key(|(dishonest, r, _)| (*dishonest, *r));
        found.into_iter().map(|(_, _, id)| id).collect()
    }

    /// True if the peer lied to us recently (wrong narinfo, wrong blocks): asked and used last.
    pub fn is_dishonest(&self, peer: &PeerId) -> bool {
        self.with(|m| m.get(peer).is_some_and(Peer::dishonest))
    }

    /// Records a lie: counted, and the peer is deprioritised for [`DISHONEST_PENALTY`].
    pub fn caught_lying(&self, peer: PeerId) {
        self.update(&peer, |p| p.dishonest_until = Some(Instant::now() + DISHONEST_PENALTY));
    }

    /// Updates a peer's counters (a peer we never saw gets an entry, bounded like the rest).
    pub fn count(&self, peer: PeerId, f: impl FnOnce(&mut PeerStats)) {
        self.update(&peer, |p| f(&mut p.stats));
    }

    pub fn view(&self) -> Vec<PeerView> {
        let mut v: Vec<PeerView> = self.with(|m| {
            m.iter()
                .map(|(id, p)| PeerView {
                    peer_id: id.to_string(),
                    connected: p.connected,
                    peerix: p.peerix,
                    agent: p.agent.clone(),
                    found: p.found,
                    addr: p.addr.as_ref().map(|a| a.to_string()),
                    relayed: p.relayed,
                    summary_paths: p.summary.as_ref().map(Summary::count),
                    summary_bytes: p.summary.as_ref().map(Summary::bytes),
                    dishonest: p.dishonest(),
                    rtt_ms: p.rtt.map(|r| r.as_secs_f64() * 1e3),
                    stats: p.stats.clone(),
                })
                .collect()
        });
        v.sort_by(|a, b| b.connected.cmp(&a.connected).then_with(|| a.peer_id.cmp(&b.peer_id)));
        v
    }
}

/// A random number (have-summary epochs and seeds, the order peers are asked in): not a secret.
pub(crate) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::p2p::have::{bloom::Bloom, wire};

    fn summary_of(hash: &StoreHash) -> wire::Have {
        let mut b = Bloom::with_capacity(10, 1);
        b.insert(&hash.to_bytes());
        wire::Have {
            epoch: 1,
            generation: 1,
            full: Some(wire::Full { hashes: b.hashes(), seed: b.seed(), bits: b.bits().to_vec(), count: 1 }),
            delta: None,
        }
    }

    #[test]
    fn a_summary_that_beats_the_connection_event_is_kept_and_a_gone_peer_is_never_asked() {
        let peers = Peers::default();
        let (peer, hash) = (PeerId::random(), StoreHash::parse("qxkmhhvi8i3pc831vvw023h4mhzpfflr").unwrap());
        // The summary stream is read before the event loop reported the connection.
        peers.apply_summary(peer, summary_of(&hash)).unwrap();
        peers.connected(peer, "/ip4/127.0.0.1/tcp/1".parse().unwrap(), Discovery::Static, false);
        assert!(peers.matching(&hash).is_empty(), "not a peerix node until identify says so");
        peers.identified(peer, "peerix/0".into(), true, true);
        assert_eq!(peers.matching(&hash), vec![peer]);
        peers.disconnected(peer);
        assert!(peers.matching(&hash).is_empty());
        assert!(matches!(peers.apply_summary(peer, summary_of(&hash)), Err(have::HaveError::NotConnected)));
        assert!(peers.matching(&hash).is_empty(), "a frame left from a closed stream is not applied");
    }
}
