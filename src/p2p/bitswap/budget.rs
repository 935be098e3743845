//! Per-peer pacing of the wants bitswap answers: each want costs an index lookup (and a want-block
//! a chunk read), so a peer may have [`WANTS_PER_SECOND`] answered, with a burst of as many; wants
//! beyond that wait, and while they wait the stream they came on is not read further (its messages
//! in flight are bounded), so the flood backs up into the peer's own send buffer.
//!
//! An honest peer stays far below the rate: a 1 GiB NAR is ~16 000 chunks of 64 KiB on average,
//! so a peer fetching at 150 MB/s (the fastest measured here) wants ~2 400 blocks a second, and
//! Helia's want-have round before it doubles that.

use libp2p::PeerId;
use tokio::time::Instant;

use crate::rate::Buckets;

/// Wants answered per second per peer, and the burst a quiet peer may spend at once.
pub const WANTS_PER_SECOND: f64 = 16_384.0;
/// Peers tracked at once; beyond it the peers whose bucket is full (idle) are forgotten.
const MAX_PEERS: usize = 4096;

/// One token bucket per peer ([`crate::rate`]). A bucket outlives the peer's streams (Helia opens
/// one per message), so reopening a stream does not refill it.
pub struct Budgets {
    buckets: Buckets<PeerId>,
}

impl Budgets {
    pub fn new(rate: f64) -> Self {
        Self { buckets: Buckets::new(rate, rate, MAX_PEERS) }
    }

    /// Takes `wants` from `peer`'s bucket, first waiting as long as the bucket needs to hold them.
    /// Returns whether it waited. A request over the whole burst waits for its share, not forever.
    pub async fn spend(&self, peer: PeerId, wants: usize) -> bool {
        let wait = self.buckets.charge(&peer, wants as f64, Instant::now());
        if wait.is_zero() {
            return false;
        }
        tokio::time::sleep(wait).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_free_then_wants_are_paced_at_the_rate() {
        let budgets = Budgets::new(1000.0);
        let (peer, other) = (PeerId::random(), PeerId::random());
        let start = Instant::now();
        assert!(!budgets.spend(peer, 1000).await, "a quiet peer's burst does not wait");
        assert!(budgets.spend(peer, 500).await);
        assert_eq!(start.elapsed(), Duration::from_millis(500), "500 more wants at 1000/s");
        assert!(budgets.spend(peer, 1000).await);
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
        assert!(!budgets.spend(other, 1000).await, "another peer has its own budget");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!budgets.spend(peer, 1000).await, "the bucket refills, up to the burst");
        assert!(budgets.spend(peer, 1).await, "and no further");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_spenders_queue_behind_each_other() {
        let budgets = std::sync::Arc::new(Budgets::new(1000.0));
        let peer = PeerId::random();
        budgets.spend(peer, 1000).await;
        let start = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let b = budgets.clone();
                crate::tasks::spawn(module_path!(), async move { b.spend(peer, 250).await })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap());
        }
        assert_eq!(start.elapsed(), Duration::from_millis(1000), "4 × 250 wants at 1000/s");
    }

    #[test]
    fn idle_peers_are_forgotten_when_the_table_is_full() {
        let budgets = Budgets::new(10.0);
        let now = Instant::now();
        for _ in 0..MAX_PEERS {
            budgets.buckets.charge(&PeerId::random(), 0.0, now);
        }
        let busy = PeerId::random();
        budgets.buckets.charge(&busy, 5.0, now);
        assert_eq!(budgets.buckets.len(), 1, "idle buckets dropped, the busy one kept");
    }
}
