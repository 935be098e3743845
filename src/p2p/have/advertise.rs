//! The sending side of have-summaries: one task that owns our published set and one small writer
//! task per connected peerix peer (each keeps one stream open and writes the frames it is handed).
//! Frames are encoded once and shared (`Arc`) by every peer's queue; a peer whose queue is full or
//! whose stream broke gets a fresh link and a full summary on the next round.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::AsyncWriteExt;
use libp2p::PeerId;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::bloom::Bloom;
use super::{MAX_DELTA, PROTOCOL, wire};
use crate::local_cache::LocalCache;
use crate::nix::store_path::StoreHash;
use crate::p2p::peers::random_u64;
use crate::p2p::peers::{Candidate, Peers};
use crate::publications::Publication;
use crate::timeouts::SUMMARY_SEND_EVERY;

/// Frames queued per peer: a full summary and a few deltas.
const LINK_QUEUE: usize = 4;
/// Peers we send our summary to, besides the peers we keep (`--peer`, mDNS: always). Each link
/// holds a connection open, so linking every peer met made a fleet of 100 a full mesh; the others
/// find our paths through the tracker, and their connections idle out. 8 links out and
/// [`super::MAX_SOURCES`] in bound the connections summaries hold open at 32 plus the kept peers
/// (the DHT's walks open others for a while: 25–50 on a fleet of 50, `benches/fleet.sh`).
pub const MAX_LINKS: usize = 8;
/// A peer that refused our summary (its senders at their bound) is not asked again for this long.
const REFUSED_FOR: Duration = Duration::from_secs(300);
/// Refusals queued from the link tasks to the advertiser.
const REFUSALS_QUEUE: usize = 64;

type Frame = Arc<Vec<u8>>;

struct Link {
    tx: mpsc::Sender<Frame>,
    /// The generation the peer holds (what we last queued for it).
    holds: Option<u64>,
}

struct Advertiser {
    control: libp2p_stream::Control,
    peers: Arc<Peers>,
    epoch: u64,
    generation: u64,
    set: HashSet<[u8; 20]>,
    /// Changes since `generation` was sent.
    added: HashSet<[u8; 20]>,
    removed: HashSet<[u8; 20]>,
    /// The full summary of `generation`, once built.
    full: Option<Frame>,
    /// Paths the smallest filter a linked peer may hold was sized for (every full summary built
    /// since deltas last stopped; `None`: none). Deltas past it would raise that filter's
    /// false-positive rate, so they become a full summary instead. The smallest, not the last: a
    /// newcomer gets a filter sized for the set as it is now, while peers linked before still
    /// hold the one sized when they came (a node that linked its peers while its store was still
    /// being indexed sent them filters for 64 paths, then 2 200 as deltas: saturated filters that
    /// "held" every path, so a holder that left was still taken for a live source).
    capacity: Option<usize>,
    /// The delta that made `generation`, for peers at `generation - 1`.
    delta: Option<Frame>,
    last_change_sent: Instant,
    links: HashMap<PeerId, Link>,
    /// Peers that refused a link, until when.
    refused: HashMap<PeerId, Instant>,
    refusals: mpsc::Sender<PeerId>,
    /// Orders the peers we are not linked to (random per process, so nodes that meet the same
    /// peers first — their bootstrap nodes — still choose different ones).
    salt: u64,
}

fn encode(msg: &wire::Have) -> Frame {
    let mut frame = Vec::new();
    crate::p2p::frame::encode_message(&mut frame, msg);
    Arc::new(frame)
}

/// Hashes of every published path, from the state DB (on a blocking thread).
async fn load(cache: &Arc<LocalCache>) -> HashSet<[u8; 20]> {
    let cache = cache.clone();
    let rows = crate::tasks::spawn_blocking(module_path!(), move || cache.state().published_paths()).await;
    match rows {
        Ok(Ok(rows)) => rows.iter().filter_map(|h| StoreHash::parse(h).ok()).map(|h| h.to_bytes()).collect(),
        Ok(Err(e)) => {
            warn!(cause = %e, "cannot read the published paths; advertising none until the next change");
            HashSet::new()
        }
        Err(_) => HashSet::new(),
    }
}

/// Sends our have-summary to every connected peerix peer until `shutdown`.
pub async fn advertise(
    control: libp2p_stream::Control,
    peers: Arc<Peers>,
    cache: Arc<LocalCache>,
    shutdown: CancellationToken,
) {
    // Subscribe before loading, so nothing published in between is missed (applying an event
    // twice is harmless: it is a set).
    let mut events = cache.publications().subscribe();
    let set = load(&cache).await;
    let (refusals_tx, mut refusals) = mpsc::channel(REFUSALS_QUEUE);
    info!(paths = set.len(), "advertising published paths to peerix peers");
    let mut a = Advertiser::new(control, peers.clone(), set, refusals_tx);
    let mut tick = tokio::time::interval(SUMMARY_SEND_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(e) => a.apply(e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(missed = n, "publication events lagged; reloading the published set");
                    let fresh = load(&cache).await;
                    a.replace(fresh);
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            Some(peer) = refusals.recv() => {
                a.refused.insert(peer, Instant::now() + REFUSED_FOR);
                a.links.remove(&peer);
                a.round(false);
            }
            _ = peers.changed().notified() => a.round(false),
            _ = tick.tick() => a.round(true),
            _ = shutdown.cancelled() => break,
        }
    }
}

impl Advertiser {
    fn new(
        control: libp2p_stream::Control,
        peers: Arc<Peers>,
        set: HashSet<[u8; 20]>,
        refusals: mpsc::Sender<PeerId>,
    ) -> Self {
        Self {
            control,
            peers,
            epoch: random_u64(),
            generation: 1,
            set,
            added: HashSet::new(),
            removed: HashSet::new(),
            full: None,
            capacity: None,
            delta: None,
            last_change_sent: Instant::now(),
            links: HashMap::new(),
            refused: HashMap::new(),
            refusals,
            salt: random_u64(),
        }
    }

    fn apply(&mut self, event: Publication) {
        // A full summary is always of the set as it is now (a newcomer must not wait a second for
        // a path it is about to be asked for); the delta that follows repeats these changes, which
        // is harmless on top of it.
        self.full = None;
        match event {
            Publication::Published { hash, .. } => {
                let k = hash.to_bytes();
                if self.set.insert(k) && !self.removed.remove(&k) {
                    self.added.insert(k);
                }
            }
            Publication::Withdrawn { hash, .. } => {
                let k = hash.to_bytes();
                if self.set.remove(&k) && !self.added.remove(&k) {
                    self.removed.insert(k);
                }
            }
        }
    }

    /// After a lag: the new set goes out as a full summary.
    fn replace(&mut self, set: HashSet<[u8; 20]>) {
        self.set = set;
        self.added.clear();
        self.removed.clear();
        self.generation += 1;
        self.full = None;
        self.delta = None;
    }

    /// Opens links to new peerix peers, closes those of departed ones, and brings every peer to the
    /// current generation. Changes go out when `timed`, once per [`SUMMARY_SEND_EVERY`].
    fn round(&mut self, timed: bool) {
        for peer in self.choose() {
            let (tx, rx) = mpsc::channel(LINK_QUEUE);
            let (control, refusals) = (self.control.clone(), self.refusals.clone());
            crate::tasks::spawn(module_path!(), async move {
                if write_link(control, peer, rx).await == LinkEnd::Refused {
                    let _ = refusals.try_send(peer);
                }
            });
            self.links.insert(peer, Link { tx, holds: None });
        }
        // At most one generation a second, whoever connects: a receiver reads one message a second
        // (after a burst of 8). Making one per newcomer, while a store was being indexed and a
        // fleet's DHT connected peers several times a second, sent deltas many times a second (and,
        // while receivers dropped senders beyond their rate, got honest nodes banned). A newcomer gets
        // the current set in full, under the current generation; the pending changes follow as the
        // next delta.
        let pending = !self.added.is_empty() || !self.removed.is_empty();
        if pending && timed && self.last_change_sent.elapsed() >= SUMMARY_SEND_EVERY {
            self.next_generation();
        }
        let peers: Vec<PeerId> = self.links.keys().copied().collect();
        self.peers.set_linked(&peers.iter().copied().collect());
        for peer in peers {
            let holds = match self.links.get(&peer) {
                Some(l) if l.holds != Some(self.generation) => l.holds,
                _ => continue,
            };
            let frame = match (&self.delta, holds) {
                (Some(d), Some(g)) if g + 1 == self.generation => d.clone(),
                _ => self.full_frame(),
            };
            let Some(link) = self.links.get_mut(&peer) else { continue };
            match link.tx.try_send(frame) {
                Ok(()) => link.holds = Some(self.generation),
                // A slow or broken link: dropped; the next round opens a new one with a full summary.
                Err(_) => {
                    debug!(%peer, "summary link full or closed; reopening");
                    self.links.remove(&peer);
                }
            }
        }
    }

    /// Drops the links of departed peers and broken streams; returns the peers to open a link to
    /// ([`pick`]).
    fn choose(&mut self) -> Vec<PeerId> {
        let now = Instant::now();
        self.refused.retain(|_, until| *until > now);
        let candidates = self.peers.summary_candidates();
        let current: HashSet<PeerId> = candidates.iter().map(|c| c.peer).collect();
        self.links.retain(|p, l| current.contains(p) && !l.tx.is_closed());
        pick(&candidates, |p| self.links.contains_key(p), |p| self.refused.contains_key(p), self.salt)
    }

    /// The full summary of the current generation, built on first use.
    fn full_frame(&mut self) -> Frame {
        if let Some(f) = &self.full {
            return f.clone();
        }
        let capacity = self.set.len() + self.set.len() / 4 + 64;
        let mut bloom = Bloom::with_capacity(capacity, random_u64());
        for k in &self.set {
            bloom.insert(k);
        }
        let frame = encode(&wire::Have {
            epoch: self.epoch,
            generation: self.generation,
            full: Some(wire::Full {
                hashes: bloom.hashes(),
                seed: bloom.seed(),
                bits: bloom.bits().to_vec(),
                count: self.set.len() as u64,
            }),
            delta: None,
        });
        self.capacity = Some(self.capacity.map_or(bloom.capacity(), |c| c.min(bloom.capacity())));
        self.full = Some(frame.clone());
        frame
    }

    fn next_generation(&mut self) {
        let changes = self.added.len() + self.removed.len();
        let overfull = self.capacity.is_none_or(|c| self.set.len() > c);
        self.generation += 1;
        self.delta = if changes > MAX_DELTA || overfull {
            // Every peer gets a full summary next: the filters they hold are all replaced.
            self.capacity = None;
            None
        } else {
            Some(encode(&wire::Have {
                epoch: self.epoch,
                generation: self.generation,
                full: None,
                delta: Some(wire::Delta {
                    base: self.generation - 1,
                    added: self.added.iter().map(|k| k.to_vec()).collect(),
                    removed: self.removed.iter().map(|k| k.to_vec()).collect(),
                    count: self.set.len() as u64,
                }),
            }))
        };
        self.full = None;
        self.added.clear();
        self.removed.clear();
        self.last_change_sent = Instant::now();
    }
}

/// The peers to open a summary link to, of the connected peerix peers: every kept peer, then
/// others up to [`MAX_LINKS`] links — those that send us theirs first (a pair linked both ways
/// holds one connection for two summaries), then in a random order. Open links stay: a link is
/// never moved, so a summary a peer holds is never dropped for another; a peer that refused us
/// is left alone.
fn pick(
    candidates: &[Candidate],
    linked: impl Fn(&PeerId) -> bool,
    refused: impl Fn(&PeerId) -> bool,
    salt: u64,
) -> Vec<PeerId> {
    let linked_others = candidates.iter().filter(|c| !c.kept && linked(&c.peer)).count();
    let mut new: Vec<&Candidate> = candidates.iter().filter(|c| !linked(&c.peer) && !refused(&c.peer)).collect();
    new.sort_by_key(|c| (!c.kept, !c.sends_us, order(salt, &c.peer)));
    let kept = new.iter().filter(|c| c.kept).count();
    new.truncate(kept + MAX_LINKS.saturating_sub(linked_others));
    new.into_iter().map(|c| c.peer).collect()
}

/// A stable random order of peers (a hash of the peer id under a per-process salt).
fn order(salt: u64, peer: &PeerId) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (salt, peer).hash(&mut h);
    h.finish()
}

#[derive(Debug, PartialEq, Eq)]
enum LinkEnd {
    /// Our queue closed (the peer left) or the stream broke: the next round may link again.
    Ended,
    /// The peer reads no more senders ([`super::REFUSED`]).
    Refused,
}

/// Keeps one stream to `peer` and writes every frame queued for it; ends when the queue closes
/// or the stream breaks — including when the peer drops it unread (its accept queue full, or an
/// older peerix whose queue held one stream): the receiver writes nothing but a refusal,
/// so anything else that ends our read side means the summary did not arrive, and the next round
/// opens a new link with a full summary.
async fn write_link(mut control: libp2p_stream::Control, peer: PeerId, mut rx: mpsc::Receiver<Frame>) -> LinkEnd {
    let stream = match control.open_stream(peer, PROTOCOL).await {
        Ok(s) => s,
        Err(e) => {
            debug!(%peer, cause = %e, "cannot open a summary stream");
            return LinkEnd::Ended;
        }
    };
    let (mut reader, mut writer) = futures_util::AsyncReadExt::split(stream);
    let mut probe = [0u8; 1];
    loop {
        let frame = tokio::select! {
            frame = rx.recv() => match frame {
                Some(f) => f,
                None => break,
            },
            read = futures_util::AsyncReadExt::read(&mut reader, &mut probe) => {
                if matches!(read, Ok(1)) && probe[0] == super::REFUSED {
                    debug!(%peer, "peer reads no more summaries; linking to another");
                    return LinkEnd::Refused;
                }
                debug!(%peer, "summary stream closed by the peer; reopening");
                return LinkEnd::Ended;
            }
        };
        if let Err(e) = async {
            writer.write_all(&frame).await?;
            writer.flush().await
        }
        .await
        {
            debug!(%peer, cause = %e, "summary stream broke");
            return LinkEnd::Ended;
        }
        debug!(%peer, bytes = frame.len(), "have-summary sent");
    }
    let _ = writer.close().await;
    LinkEnd::Ended
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(n: usize, kept: usize, sending: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate { peer: PeerId::random(), kept: i < kept, sends_us: i >= kept && i < kept + sending })
            .collect()
    }

    #[test]
    fn links_go_to_every_kept_peer_and_a_bounded_few_others() {
        // 100 peers met, 3 kept (`--peer`, mDNS), 2 of the others send us their summary.
        let c = candidates(100, 3, 2);
        let chosen = pick(&c, |_| false, |_| false, 7);
        assert_eq!(chosen.len(), 3 + MAX_LINKS, "every kept peer plus MAX_LINKS others");
        for k in &c[..5] {
            assert!(chosen.contains(&k.peer), "kept peers and those that send us theirs come first");
        }
        // Another node (another salt) meeting the same peers chooses other ones.
        let other = pick(&c, |_| false, |_| false, 8);
        assert_ne!(chosen[5..].iter().collect::<HashSet<_>>(), other[5..].iter().collect::<HashSet<_>>());

        // With the links open, nothing more is opened, however many peers connect.
        let open: HashSet<PeerId> = chosen.iter().copied().collect();
        let more = candidates(50, 0, 0);
        let all: Vec<Candidate> = c.iter().chain(&more).cloned().collect();
        assert!(pick(&all, |p| open.contains(p), |_| false, 7).is_empty());
        // A link that ended is replaced by one link, never to a peer that refused us.
        let refused = chosen[6];
        let fewer: HashSet<PeerId> = chosen.iter().copied().filter(|p| *p != chosen[5] && *p != refused).collect();
        let again = pick(&all, |p| fewer.contains(p), |p| *p == refused, 7);
        assert_eq!(again.len(), 2);
        assert!(!again.contains(&refused));
    }

    #[tokio::test]
    async fn peers_connecting_do_not_make_generations_faster_than_one_a_second() {
        let peers = Arc::new(Peers::default());
        let (refusals, _rx) = mpsc::channel(1);
        let mut a =
            Advertiser::new(libp2p_stream::Behaviour::new().new_control(), peers.clone(), HashSet::new(), refusals);
        // A store being indexed (a change pending all the time) while peers keep connecting.
        for i in 0..20u8 {
            a.apply(Publication::Published { hash: StoreHash::from_bytes(&[i; 20]), root: crate::ipld::raw_cid(&[i]) });
            let p = PeerId::random();
            peers.connected(p, "/ip4/127.0.0.1/tcp/1".parse().unwrap(), crate::p2p::peers::Discovery::Dht, false);
            peers.identified(p, "peerix".into(), true, true);
            a.round(false);
        }
        assert_eq!(a.generation, 1, "a newcomer gets the current generation, not a new one for everybody");
        // … in full, as the set is now: what it is asked for next is in it.
        let frame = a.full_frame();
        let msg = <wire::Have as prost::Message>::decode_length_delimited(&frame[..]).expect("a frame");
        assert_eq!(msg.full.expect("full").count, 20);
        assert_eq!(a.links.len(), MAX_LINKS);
        a.round(true);
        assert_eq!(a.generation, 1, "not a second since the last change went out");
        a.last_change_sent -= SUMMARY_SEND_EVERY;
        a.round(true);
        assert_eq!(a.generation, 2, "the pending changes go out as one delta");
    }

    fn publish(a: &mut Advertiser, range: std::ops::Range<u32>) {
        for i in range {
            let k: [u8; 20] = std::array::from_fn(|b| (i >> (8 * (b % 4))) as u8 ^ b as u8);
            a.apply(Publication::Published { hash: StoreHash::from_bytes(&k), root: crate::ipld::raw_cid(&k) });
        }
    }

    #[tokio::test]
    async fn a_filter_a_peer_holds_never_gets_more_paths_than_it_was_sized_for() {
        let (refusals, _rx) = mpsc::channel(1);
        let control = libp2p_stream::Behaviour::new().new_control();
        let mut a = Advertiser::new(control, Arc::new(Peers::default()), HashSet::new(), refusals);
        // A peer linked while the store is still empty holds a filter sized for the minimum.
        let small = a.full_frame();
        let small = <wire::Have as prost::Message>::decode_length_delimited(&small[..]).unwrap().full.unwrap();
        let small_capacity = Bloom::from_parts(small.bits, small.hashes, small.seed).unwrap().capacity();
        // The index publishes more than that; a newcomer meanwhile gets a filter sized for it all.
        publish(&mut a, 0..small_capacity as u32 + 10);
        let _newcomer = a.full_frame();
        a.next_generation();
        assert!(a.delta.is_none(), "the first peer's filter would be overfull: a full summary for everyone");
        // Deltas resume once every peer holds a filter sized for the set, and stop again past it.
        let frame = a.full_frame();
        let msg = <wire::Have as prost::Message>::decode_length_delimited(&frame[..]).unwrap().full.unwrap();
        let capacity = Bloom::from_parts(msg.bits, msg.hashes, msg.seed).unwrap().capacity();
        let n = a.set.len() as u32;
        publish(&mut a, n..n + 1);
        a.next_generation();
        assert!(a.delta.is_some(), "one more path fits");
        publish(&mut a, n + 1..capacity as u32 + 1);
        a.next_generation();
        assert!(a.delta.is_none(), "past the filter's capacity");
    }
}
