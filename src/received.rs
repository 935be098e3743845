//! Received: blocks a transfer just checked against their CIDs, served to other peers until the
//! path they belong to is indexed.
//!
//! Data flow: a transfer (`substitute::transfer`) keeps every unit it verified here as it arrives;
//! [`crate::blocks::Blocks`] serves from here before it looks at the index. A flash crowd (50
//! machines realising one closure from one seeder at once) is what this is for: a busy seeder
//! sends askers to the peers it already sent the blocks to (`p2p::recipients`), and
//! those peers have them here at once — nix registers the path and the indexer adopts its DAG a
//! second or two later, and only then are the blocks read from /nix/store. The blocks are the
//! same `Bytes` that go to nix (no copy); they leave when the indexer has published their path
//! ([`Received::forget`]), oldest first once [`MAX_BYTES`] are held, and after [`MAX_AGE`] (a
//! path nix never registered), swept by a timer so that a node at rest holds none.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use tokio::time::Instant;

use crate::bounded::Lru;

/// Block bytes held at most: a 20 MB closure three times over, or the last ~64 MiB of a big NAR.
pub const MAX_BYTES: usize = 64 << 20;
/// How long a block stays: nix registers a path and the indexer adopts it (1-s poll) well within
/// this, after which the store serves it; a seeder names recipients for half as long
/// (`p2p::recipients::RECIPIENT_TTL`).
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Bookkeeping per block (map slot, CID, `Bytes` header).
const ENTRY_OVERHEAD: usize = 128;

type Held = Lru<Cid, (Bytes, Instant)>;

fn cost(entry: &(Bytes, Instant)) -> usize {
    entry.0.len() + ENTRY_OVERHEAD
}

/// What the store did: shown on `/metrics`.
#[derive(Default)]
pub struct ReceivedCounters {
    /// Blocks served to others from here.
    pub served: AtomicU64,
    pub served_bytes: AtomicU64,
}

pub struct Received {
    held: Arc<Mutex<Held>>,
    max_age: Duration,
    sweeping: Arc<AtomicBool>,
    pub counters: ReceivedCounters,
}

impl Default for Received {
    fn default() -> Self {
        Self::new(MAX_BYTES, MAX_AGE)
    }
}

fn lock(held: &Mutex<Held>) -> std::sync::MutexGuard<'_, Held> {
    held.lock().unwrap_or_else(|e| e.into_inner())
}

impl Received {
    pub fn new(max_bytes: usize, max_age: Duration) -> Self {
        Self {
            held: Arc::new(Mutex::new(Lru::weighted(usize::MAX, max_bytes, cost))),
            max_age,
            sweeping: Arc::default(),
            counters: ReceivedCounters::default(),
        }
    }

    /// Keeps verified blocks (each checked against its CID by the caller).
    pub fn keep(&self, blocks: impl IntoIterator<Item = (Cid, Bytes)>) {
        let now = Instant::now();
        {
            let mut held = lock(&self.held);
            for (cid, data) in blocks {
                held.insert(cid, (data, now));
            }
        }
        self.sweep_later();
    }

    /// The block, if it arrived within [`MAX_AGE`].
    pub fn get(&self, cid: &Cid) -> Option<Bytes> {
        let held = lock(&self.held);
        let (data, at) = held.peek(cid)?;
        (at.elapsed() < self.max_age).then(|| {
            self.counters.served.fetch_add(1, Ordering::Relaxed);
            self.counters.served_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            data.clone()
        })
    }

    pub fn size_of(&self, cid: &Cid) -> Option<u64> {
        let held = lock(&self.held);
        held.peek(cid).filter(|(_, at)| at.elapsed() < self.max_age).map(|(d, _)| d.len() as u64)
    }

    /// Those of `cids` held here (none, cheaply, when nothing is).
    pub fn held_of(&self, cids: impl Iterator<Item = Cid>) -> Vec<Cid> {
        let held = lock(&self.held);
        if held.is_empty() {
            return Vec::new();
        }
        cids.filter(|c| held.peek(c).is_some()).collect()
    }

    /// Drops `cids`: their path is indexed, and the store serves them now.
    pub fn forget(&self, cids: &[Cid]) {
        if cids.is_empty() {
            return;
        }
        let mut held = lock(&self.held);
        for cid in cids {
            held.remove(cid);
        }
    }

    /// Blocks held, and their bytes.
    pub fn held(&self) -> (usize, usize) {
        let held = lock(&self.held);
        (held.len(), held.weight())
    }

    /// Drops what is older than `max_age` (entries are never touched by reads: oldest first).
    fn sweep(held: &Mutex<Held>, max_age: Duration) -> bool {
        let mut held = lock(held);
        held.evict_while(|(_, at)| at.elapsed() >= max_age);
        held.is_empty()
    }

    /// One timer task while anything is held: it sweeps every `max_age / 4` and ends when empty.
    fn sweep_later(&self) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.sweeping.store(false, Ordering::Release);
            return;
        };
        let (held, sweeping, max_age) = (self.held.clone(), self.sweeping.clone(), self.max_age);
        rt.spawn(async move {
            loop {
                tokio::time::sleep(max_age / 4).await;
                if Self::sweep(&held, max_age) {
                    sweeping.store(false, Ordering::Release);
                    // A block kept between the sweep and the store above would have no timer.
                    if lock(&held).is_empty() || sweeping.swap(true, Ordering::AcqRel) {
                        return;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::raw_cid;

    fn block(i: u32, len: usize) -> (Cid, Bytes) {
        let data = Bytes::from(vec![i as u8; len]);
        (raw_cid(&[&i.to_le_bytes()[..], &data[..]].concat()), data)
    }

    #[test]
    fn blocks_are_served_until_the_byte_cap_pushes_the_oldest_out() {
        let r = Received::new(10 * (1000 + ENTRY_OVERHEAD), MAX_AGE);
        let blocks: Vec<_> = (0..15).map(|i| block(i, 1000)).collect();
        r.keep(blocks.iter().cloned());
        assert_eq!(r.held().0, 10);
        assert!(blocks[..5].iter().all(|(c, _)| r.get(c).is_none()), "the five oldest went");
        assert!(blocks[5..].iter().all(|(c, d)| r.get(c).as_ref() == Some(d)));
        assert_eq!(r.size_of(&blocks[7].0), Some(1000));
        assert_eq!(r.counters.served.load(Ordering::Relaxed), 10);
        r.forget(&[blocks[7].0]);
        assert!(r.get(&blocks[7].0).is_none(), "its path was indexed: the store serves it");
        assert_eq!(r.held().0, 9);
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_at_rest_holds_nothing_after_the_age_bound() {
        let r = Received::new(MAX_BYTES, Duration::from_secs(8));
        let (cid, _) = block(1, 10);
        r.keep([block(1, 10), block(2, 10)]);
        assert!(r.get(&cid).is_some());
        tokio::time::sleep(Duration::from_secs(5)).await;
        r.keep([block(3, 10)]);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(r.get(&cid).is_none(), "8 s old: not served");
        // The timer swept the two old blocks, then the third, and stopped.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(r.held(), (0, 0));
        assert!(!r.sweeping.load(Ordering::Acquire));
        r.keep([block(4, 10)]);
        assert!(r.sweeping.load(Ordering::Acquire), "a new block starts a new timer");
    }
}
