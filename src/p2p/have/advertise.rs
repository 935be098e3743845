//! The sending side of have-summaries: one task that owns our published set and one small writer
//! task per connected peerix peer (each keeps one stream open and writes the frames it is handed).
//! Frames are encoded once and shared (`Arc`) by every peer's queue; a peer whose queue is full or
//! whose stream broke gets a fresh link and a full summary on the next round.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures_util::AsyncWriteExt;
use libp2p::PeerId;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::bloom::Bloom;
use super::{MAX_DELTA, PROTOCOL, wire};
use crate::local_cache::LocalCache;
use crate::nix::store_path::StoreHash;
use crate::p2p::peers::Peers;
use crate::p2p::peers::random_u64;
use crate::publications::Publication;
use crate::timeouts::SUMMARY_SEND_EVERY;

/// Frames queued per peer: a full summary and a few deltas.
const LINK_QUEUE: usize = 4;

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
    /// Paths the last full summary's filter was sized for: deltas past it would raise its
    /// false-positive rate, so they become a full summary instead.
    capacity: usize,
    /// The delta that made `generation`, for peers at `generation - 1`.
    delta: Option<Frame>,
    last_change_sent: Instant,
    links: HashMap<PeerId, Link>,
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
    info!(paths = set.len(), "advertising published paths to peerix peers");
    let mut a = Advertiser {
        control,
        peers: peers.clone(),
        epoch: random_u64(),
        generation: 1,
        set,
        added: HashSet::new(),
        removed: HashSet::new(),
        full: None,
        capacity: 0,
        delta: None,
        last_change_sent: Instant::now(),
        links: HashMap::new(),
    };
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
            _ = peers.changed().notified() => a.round(false),
            _ = tick.tick() => a.round(true),
            _ = shutdown.cancelled() => break,
        }
    }
}

impl Advertiser {
    fn apply(&mut self, event: Publication) {
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
    /// current generation. Changes go out when `timed` (once per [`SUMMARY_SEND_EVERY`]) or when a new peer
    /// needs a full summary anyway.
    fn round(&mut self, timed: bool) {
        let current: HashSet<PeerId> = self.peers.peerix_peers().into_iter().collect();
        self.links.retain(|p, l| current.contains(p) && !l.tx.is_closed());
        for peer in &current {
            if !self.links.contains_key(peer) {
                let (tx, rx) = mpsc::channel(LINK_QUEUE);
                crate::tasks::spawn(module_path!(), write_link(self.control.clone(), *peer, rx));
                self.links.insert(*peer, Link { tx, holds: None });
            }
        }
        let pending = !self.added.is_empty() || !self.removed.is_empty();
        let newcomer = self.links.values().any(|l| l.holds.is_none());
        if pending && (newcomer || (timed && self.last_change_sent.elapsed() >= SUMMARY_SEND_EVERY)) {
            self.next_generation();
        }
        let peers: Vec<PeerId> = self.links.keys().copied().collect();
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
        self.capacity = bloom.capacity();
        self.full = Some(frame.clone());
        frame
    }

    fn next_generation(&mut self) {
        let changes = self.added.len() + self.removed.len();
        let overfull = self.set.len() > self.capacity;
        self.generation += 1;
        self.delta = if changes > MAX_DELTA || overfull {
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

/// Keeps one stream to `peer` and writes every frame queued for it; ends when the queue closes
/// or the stream breaks — including when the peer drops it unread (its accept queue holds one
/// stream, and a burst of connections overflows it): the receiver never writes, so anything that
/// ends our read side means the summary did not arrive, and the next round opens a new link with
/// a full summary.
async fn write_link(mut control: libp2p_stream::Control, peer: PeerId, mut rx: mpsc::Receiver<Frame>) {
    let stream = match control.open_stream(peer, PROTOCOL).await {
        Ok(s) => s,
        Err(e) => {
            debug!(%peer, cause = %e, "cannot open a summary stream");
            return;
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
            _ = futures_util::AsyncReadExt::read(&mut reader, &mut probe) => {
                debug!(%peer, "summary stream closed by the peer; reopening");
                return;
            }
        };
        if let Err(e) = async {
            writer.write_all(&frame).await?;
            writer.flush().await
        }
        .await
        {
            debug!(%peer, cause = %e, "summary stream broke");
            return;
        }
        debug!(%peer, bytes = frame.len(), "have-summary sent");
    }
    let _ = writer.close().await;
}
