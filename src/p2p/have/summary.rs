//! A peer's summary of what it shares ([`Summary`]: a Bloom filter and its deltas), how a
//! message applies to it, and the receiving side of `/peerix/have`: one stream per peer, read
//! under a message budget.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::{PeerId, StreamProtocol};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::bloom::{Bloom, BloomError};
use super::wire;
use crate::p2p::{Client, frame, peers::Peers};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/peerix/have/1.0.0");

/// Hashes added plus removed in one delta at most; more make a full summary.
pub const MAX_DELTA: usize = 16_384;
/// Withdrawn hashes a receiver remembers on top of a full summary (a Bloom filter cannot forget);
/// a sender sends a full summary long before (every [`MAX_DELTA`] changes at most).
const MAX_REMOVED: usize = 4 * MAX_DELTA;
/// Largest frame: a full 4 MiB filter plus its fields.
pub const MAX_FRAME: usize = super::bloom::MAX_BYTES + 1024;
/// Messages a peer may send at once, then one per second.
const MESSAGE_BURST: f64 = 8.0;
/// Inbound summary streams read at once (one per connected peerix peer is the norm).
const MAX_STREAMS: usize = 256;
/// Peers we read summaries from, besides the peers we keep (`--peer`, mDNS: always read). Each
/// sender holds a connection to us open, with a heartbeat every 2 s: without a bound every node of
/// a fleet ends up connected to every other (a full mesh of 100 measured, each connection ~165 B/s
/// of pings then). Senders link to [`super::advertise::MAX_LINKS`] peers each, so the average node
/// reads that many; this leaves room for peers many nodes meet first (bootstrap nodes) without
/// letting them gather the fleet. A sender over the bound is told [`REFUSED`] and links to another
/// peer.
pub const MAX_SOURCES: usize = 24;
/// The one byte a receiver ever writes on a summary stream: "I read no more senders; link to
/// someone else" (then it closes the stream).
pub const REFUSED: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum HaveError {
    #[error("summary from a peer that is not connected")]
    NotConnected,
    #[error("message carries neither or both of a full summary and a delta")]
    Shape,
    #[error("bad filter")]
    Filter(#[from] BloomError),
    #[error("delta for generation {base} does not follow the summary held ({held:?})")]
    OutOfOrder { base: u64, held: Option<u64> },
    #[error("delta has {0} entries (at most 16384) or an entry that is not a 20-byte hash")]
    Delta(usize),
    #[error("more than 65536 withdrawn paths on top of one full summary")]
    TooManyRemoved,
    /// Its false positives would make the sender look like a source of paths it lacks; our sender
    /// never does this (it sends a full summary instead), and refusing closes the stream, so the
    /// sender links again with a full one.
    #[error("delta brings the filter to {count} paths, past the {capacity} it was sized for")]
    Overfull { count: u64, capacity: usize },
}

/// What one peer says it can serve.
#[derive(Debug, Clone)]
pub struct Summary {
    epoch: u64,
    generation: u64,
    bloom: Bloom,
    /// Withdrawn since the last full summary: a Bloom filter cannot forget.
    removed: HashSet<[u8; 20]>,
    count: u64,
}

impl Summary {
    pub fn contains(&self, key: &[u8; 20]) -> bool {
        !self.removed.contains(key) && self.bloom.contains(key)
    }

    /// Paths the sender says it holds.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Size of the filter.
    pub fn bytes(&self) -> usize {
        self.bloom.bits().len()
    }
}

fn hash20(b: &[u8]) -> Option<[u8; 20]> {
    b.try_into().ok()
}

/// Applies `msg` to what we hold of a peer's summary; on error `slot` is left as it was.
pub fn apply(slot: &mut Option<Summary>, msg: wire::Have) -> Result<(), HaveError> {
    match (msg.full, msg.delta) {
        (Some(full), None) => {
            if let Some(s) = slot.as_ref()
                && s.epoch == msg.epoch
                && s.generation >= msg.generation
            {
                return Ok(()); // Older than what we hold (a reopened stream raced the old one).
            }
            let bloom = Bloom::from_parts(full.bits, full.hashes, full.seed)?;
            *slot = Some(Summary {
                epoch: msg.epoch,
                generation: msg.generation,
                bloom,
                removed: HashSet::new(),
                count: full.count,
            });
            Ok(())
        }
        (None, Some(delta)) => {
            let held = slot.as_ref().filter(|s| s.epoch == msg.epoch).map(|s| s.generation);
            if held != Some(delta.base) || msg.generation <= delta.base {
                return Err(HaveError::OutOfOrder { base: delta.base, held });
            }
            let entries = delta.added.len() + delta.removed.len();
            if entries > MAX_DELTA {
                return Err(HaveError::Delta(entries));
            }
            let added = delta.added.iter().map(|b| hash20(b)).collect::<Option<Vec<_>>>();
            let removed = delta.removed.iter().map(|b| hash20(b)).collect::<Option<Vec<_>>>();
            let (Some(added), Some(removed)) = (added, removed) else {
                return Err(HaveError::Delta(entries));
            };
            let Some(s) = slot.as_mut() else { return Err(HaveError::OutOfOrder { base: delta.base, held }) };
            if delta.count > s.bloom.capacity() as u64 {
                return Err(HaveError::Overfull { count: delta.count, capacity: s.bloom.capacity() });
            }
            if s.removed.len() + removed.len() > MAX_REMOVED {
                return Err(HaveError::TooManyRemoved);
            }
            for h in &added {
                s.bloom.insert(h);
                s.removed.remove(h);
            }
            s.removed.extend(removed);
            s.generation = msg.generation;
            s.count = delta.count;
            Ok(())
        }
        _ => Err(HaveError::Shape),
    }
}

/// A token bucket: [`MESSAGE_BURST`] messages, refilled at one per second.
struct Budget {
    tokens: f64,
    at: Instant,
}

impl Budget {
    /// Takes a message's token: `None`, or how long to wait first (the token is then spent).
    fn take(&mut self) -> Option<Duration> {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64()).min(MESSAGE_BURST);
        self.at = now;
        self.tokens -= 1.0;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens))
    }
}

/// Accepts inbound summary streams and applies what they carry to [`Peers`].
pub fn receive(
    control: &mut libp2p_stream::Control,
    peers: Arc<Peers>,
    node: Client,
    shutdown: CancellationToken,
) -> Result<(), crate::p2p::P2pError> {
    let slots = Arc::new(Semaphore::new(MAX_STREAMS));
    crate::p2p::inbound::accept(
        control,
        PROTOCOL,
        slots,
        crate::p2p::inbound::PER_PEER,
        shutdown,
        move |peer, stream| {
            let (peers, node) = (peers.clone(), node.clone());
            // Bounded by the connection too: when we closed it (the peer went silent) the read
            // is never woken, and the task would hold its slot for good.
            async move {
                tokio::select! {
                    _ = read_summaries(peer, stream, &peers, &node) => {}
                    _ = peers.connection_down(&peer) => debug!(%peer, "summary stream's connection is down"),
                }
            }
        },
    )
}

async fn read_summaries(peer: PeerId, mut stream: libp2p::Stream, peers: &Peers, node: &Client) {
    if !peers.admits_summary(&peer, MAX_SOURCES) {
        debug!(%peer, "summary senders at their bound; refusing one");
        use futures_util::AsyncWriteExt;
        let _ = tokio::time::timeout(crate::timeouts::PEER_REQUEST_WAIT, async {
            stream.write_all(&[REFUSED]).await?;
            stream.close().await
        })
        .await;
        return;
    }
    let mut budget = Budget { tokens: MESSAGE_BURST, at: Instant::now() };
    loop {
        // Throttled, not dropped: a receiver that was not scheduled for a while (a fleet of daemons
        // on two cores) reads an honest sender's frames in a bunch, and dropping peers for that
        // banned honest nodes from each other. A sender that floods is read once a second.
        if let Some(wait) = budget.take() {
            tokio::time::sleep(wait).await;
        }
        let frame = match frame::read(&mut stream, MAX_FRAME).await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(frame::FrameError::Io(e)) => {
                debug!(%peer, cause = %e, "summary stream ended");
                return;
            }
            Err(e) => {
                warn!(%peer, cause = %e, "malformed summary frame; dropping the peer");
                node.disconnect(peer);
                return;
            }
        };
        let msg = match <wire::Have as prost::Message>::decode(frame) {
            Ok(m) => m,
            Err(e) => {
                warn!(%peer, cause = %e, "malformed summary; dropping the peer");
                peers.count(peer, |s| s.bad_summaries += 1);
                node.disconnect(peer);
                return;
            }
        };
        let full = msg.full.is_some();
        match peers.apply_summary(peer, msg) {
            Ok(()) => debug!(%peer, full, "have-summary applied"),
            Err(HaveError::NotConnected) => return,
            Err(e) => {
                // The next full summary (sent on a new stream) repairs this; no need to drop the peer.
                warn!(%peer, cause = %e, "have-summary refused");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(epoch: u64, generation: u64, keys: &[[u8; 20]]) -> wire::Have {
        let mut b = Bloom::with_capacity(keys.len() + 10, 9);
        for k in keys {
            b.insert(k);
        }
        wire::Have {
            epoch,
            generation,
            full: Some(wire::Full {
                hashes: b.hashes(),
                seed: b.seed(),
                bits: b.bits().to_vec(),
                count: keys.len() as u64,
            }),
            delta: None,
        }
    }

    fn delta(epoch: u64, base: u64, added: &[[u8; 20]], removed: &[[u8; 20]]) -> wire::Have {
        wire::Have {
            epoch,
            generation: base + 1,
            full: None,
            delta: Some(wire::Delta {
                base,
                added: added.iter().map(|k| k.to_vec()).collect(),
                removed: removed.iter().map(|k| k.to_vec()).collect(),
                count: 0,
            }),
        }
    }

    #[test]
    fn deltas_apply_in_order_and_withdrawals_are_forgotten() {
        let (a, b, c) = ([1u8; 20], [2u8; 20], [3u8; 20]);
        let mut s = None;
        apply(&mut s, full(7, 1, &[a, b])).unwrap();
        assert!(s.as_ref().unwrap().contains(&a) && !s.as_ref().unwrap().contains(&c));
        apply(&mut s, delta(7, 1, &[c], &[a])).unwrap();
        let held = s.as_ref().unwrap();
        assert!(!held.contains(&a), "withdrawn");
        assert!(held.contains(&b) && held.contains(&c));
        // Re-adding a withdrawn path brings it back.
        apply(&mut s, delta(7, 2, &[a], &[])).unwrap();
        assert!(s.as_ref().unwrap().contains(&a));

        // A delta that skips a generation, or from another epoch, changes nothing.
        let before = s.as_ref().unwrap().generation;
        assert!(matches!(apply(&mut s, delta(7, 9, &[], &[b]),), Err(HaveError::OutOfOrder { .. })));
        assert!(matches!(apply(&mut s, delta(8, 3, &[], &[b])), Err(HaveError::OutOfOrder { .. })));
        assert!(s.as_ref().unwrap().contains(&b));
        assert_eq!(s.as_ref().unwrap().generation, before);
        // An older full summary of the same epoch is ignored; a new epoch replaces everything.
        apply(&mut s, full(7, 1, &[])).unwrap();
        assert!(s.as_ref().unwrap().contains(&b));
        apply(&mut s, full(8, 1, &[c])).unwrap();
        assert!(!s.as_ref().unwrap().contains(&b) && s.as_ref().unwrap().contains(&c));
    }

    #[test]
    fn a_delta_past_the_filters_capacity_is_refused() {
        let mut s = None;
        apply(&mut s, full(3, 1, &[[1u8; 20]])).unwrap();
        let capacity = s.as_ref().unwrap().bloom.capacity() as u64;
        let mut fits = delta(3, 1, &[[2u8; 20]], &[]);
        fits.delta.as_mut().unwrap().count = capacity;
        apply(&mut s, fits).unwrap();
        let mut over = delta(3, 2, &[[3u8; 20]], &[]);
        over.delta.as_mut().unwrap().count = capacity + 1;
        assert!(matches!(apply(&mut s, over), Err(HaveError::Overfull { .. })));
        let held = s.as_ref().unwrap();
        assert!(held.generation == 2 && !held.contains(&[3u8; 20]), "left as it was");
    }

    #[test]
    fn a_burst_passes_and_then_one_message_a_second() {
        let mut b = Budget { tokens: MESSAGE_BURST, at: Instant::now() };
        for _ in 0..MESSAGE_BURST as usize {
            assert_eq!(b.take(), None);
        }
        let wait = b.take().expect("the ninth message waits");
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1), "{wait:?}");
        let second = b.take().expect("and the tenth longer");
        assert!(second > Duration::from_millis(1900), "{second:?}");
    }

    #[test]
    fn malformed_messages_are_refused() {
        let mut s = None;
        assert!(matches!(apply(&mut s, wire::Have::default()), Err(HaveError::Shape)));
        let mut both = full(1, 1, &[]);
        both.delta = delta(1, 0, &[], &[]).delta;
        assert!(matches!(apply(&mut s, both), Err(HaveError::Shape)));
        let mut bad = full(1, 1, &[]);
        bad.full.as_mut().unwrap().hashes = 99;
        assert!(matches!(apply(&mut s, bad), Err(HaveError::Filter(_))));
        apply(&mut s, full(1, 1, &[])).unwrap();
        let mut short = delta(1, 1, &[], &[]);
        short.delta.as_mut().unwrap().added.push(vec![0; 19]);
        assert!(matches!(apply(&mut s, short), Err(HaveError::Delta(_))));
        let many: Vec<[u8; 20]> = (0..MAX_DELTA as u32 + 1)
            .map(|i| {
                let mut k = [0u8; 20];
                k[..4].copy_from_slice(&i.to_le_bytes());
                k
            })
            .collect();
        assert!(matches!(apply(&mut s, delta(1, 1, &many, &[])), Err(HaveError::Delta(_))));
    }
}
