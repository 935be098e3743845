//! Arrivals: the DAGs of NARs just streamed to nix from peers, waiting for the indexer.
//!
//! Data flow: a transfer ([`crate::substitute`]) that delivered a whole NAR — every block checked
//! against its CID and the whole against the NarHash — offers its DAG here; when nix has written
//! and registered the path, the indexer ([`crate::publish`]) takes it instead of reading, chunking
//! and hashing the path again. The client machine then writes and hashes each byte once, and
//! re-shares a closure at ~0 CPU.
//!
//! nix asks every narinfo of a closure, then fetches up to 25 NARs at once and registers each path
//! as it lands, while the indexer works behind it: for a 400-path closure the hand-off must hold
//! hundreds of DAGs at once (the old 64-entry map, cleared whole when full, kept 17 of 401).
//! So it is bounded by the bytes of metadata it holds ([`MAX_BYTES`]), oldest out first — a DAG
//! costs ~48 bytes per chunk plus its interior nodes: 64 MiB covers ~80 GiB of NARs in 64 KiB chunks.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::bounded::Lru;
use crate::ipld::ChunkedNar;
use crate::nix::hash::NarHash;

/// Metadata bytes the hand-off holds at most.
pub const MAX_BYTES: usize = 64 << 20;
/// Bookkeeping per entry (map slots, the order queue, the `Vec` headers).
const ENTRY_OVERHEAD: usize = 160;

/// What happened to the DAGs offered: shown on `/metrics` and `/api/status`.
#[derive(Default)]
pub struct ArrivalCounters {
    /// Offered by a finished transfer.
    pub offered: AtomicU64,
    /// Taken by the indexer (the path was published without reading it).
    pub adopted: AtomicU64,
    /// Pushed out, oldest first, before the indexer came for them.
    pub evicted: AtomicU64,
    /// Paths the indexer read, chunked and hashed from disk instead (no DAG waiting), and their bytes.
    pub read_paths: AtomicU64,
    pub read_bytes: AtomicU64,
}

/// The hand-off between transfers and the indexer.
pub struct Arrivals {
    /// By NarHash; offered and taken, never looked at in between: first in, first out.
    inner: Mutex<Lru<NarHash, ChunkedNar>>,
    max_bytes: usize,
    pub counters: ArrivalCounters,
}

impl Default for Arrivals {
    fn default() -> Self {
        Self::with_capacity(MAX_BYTES)
    }
}

/// The memory a DAG holds while it waits.
fn cost(dag: &ChunkedNar) -> usize {
    ENTRY_OVERHEAD
        + dag.chunks.len() * std::mem::size_of::<(u64, u32, cid::Cid)>()
        + dag.nodes.iter().map(|(_, b)| b.len() + std::mem::size_of::<(cid::Cid, Vec<u8>)>()).sum::<usize>()
}

impl Arrivals {
    pub fn with_capacity(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Lru::weighted(usize::MAX, max_bytes, cost)),
            max_bytes,
            counters: ArrivalCounters::default(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Lru<NarHash, ChunkedNar>) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Keeps the DAG a NAR was just streamed in, evicting the oldest ones beyond the byte cap. A DAG
    /// larger than the whole cap is not kept (its path is indexed from disk, as without a hand-off).
    pub fn offer(&self, nar_hash: NarHash, dag: ChunkedNar) {
        let size = cost(&dag);
        self.counters.offered.fetch_add(1, Ordering::Relaxed);
        if size > self.max_bytes {
            self.counters.evicted.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let evicted = self.with(|i| i.insert(nar_hash, dag)) as u64;
        self.counters.evicted.fetch_add(evicted, Ordering::Relaxed);
    }

    /// The DAG offered for this NarHash, if any (taken: used once).
    pub fn take(&self, nar_hash: &NarHash) -> Option<ChunkedNar> {
        let dag = self.with(|i| i.remove(nar_hash))?;
        self.counters.adopted.fetch_add(1, Ordering::Relaxed);
        Some(dag)
    }

    /// DAGs waiting, and the bytes they hold.
    pub fn held(&self) -> (usize, usize) {
        self.with(|i| (i.len(), i.weight()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::raw_cid;

    fn dag(n: u32) -> ChunkedNar {
        let chunks = (0..n).map(|i| (u64::from(i) * 10, 10, raw_cid(&i.to_le_bytes()))).collect();
        ChunkedNar {
            root: raw_cid(&n.to_be_bytes()),
            chunks,
            nodes: vec![(raw_cid(b"node"), vec![0; 100])],
            fingerprint: None,
        }
    }

    fn hash(i: u8) -> NarHash {
        NarHash([i; 32])
    }

    #[test]
    fn a_closure_larger_than_the_old_64_entries_is_held_whole() {
        let a = Arrivals::default();
        for i in 0..=255u8 {
            a.offer(hash(i), dag(8));
        }
        assert_eq!(a.held().0, 256);
        assert!((0..=255u8).all(|i| a.take(&hash(i)).is_some()));
        assert_eq!(a.held(), (0, 0));
        assert_eq!(a.counters.adopted.load(Ordering::Relaxed), 256);
        assert_eq!(a.counters.evicted.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_byte_cap_evicts_the_oldest_first_not_everything() {
        let one = cost(&dag(100));
        let a = Arrivals::with_capacity(one * 10);
        for i in 0..15u8 {
            a.offer(hash(i), dag(100));
        }
        let (n, bytes) = a.held();
        assert_eq!(n, 10);
        assert!(bytes <= one * 10);
        assert!((0..5u8).all(|i| a.take(&hash(i)).is_none()), "the five oldest went");
        assert!((5..15u8).all(|i| a.take(&hash(i)).is_some()), "the ten newest stayed");
        assert_eq!(a.counters.evicted.load(Ordering::Relaxed), 5);
        // A DAG bigger than the whole cap is refused, and evicts nothing.
        a.offer(hash(99), dag(100));
        a.offer(hash(100), dag(100_000));
        assert!(a.take(&hash(100)).is_none());
        assert!(a.take(&hash(99)).is_some());
    }

    #[test]
    fn a_re_offered_nar_counts_once_and_churn_keeps_the_queue_bounded() {
        let a = Arrivals::with_capacity(cost(&dag(4)) * 3);
        for _ in 0..10_000 {
            a.offer(hash(1), dag(4));
        }
        assert_eq!(a.held(), (1, cost(&dag(4))));
        for round in 0..10_000u32 {
            a.offer(hash((round % 7) as u8), dag(4));
            a.take(&hash((round % 7) as u8));
        }
        assert_eq!(a.held(), (0, 0), "every offer was taken");
    }
}
