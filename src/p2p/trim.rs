//! The connection manager: a bound on connections nothing depends on.
//!
//! What a node offers depends on a bounded set of peers (summaries: 8 out, 24 in; kept peers; peers
//! that named a path lately; the tracker's node: [`super::peers`]' watched peers). The DHT's walks
//! open others (each node refreshes two routing tables every 10 min, and other nodes' walks dial
//! it), and those stay until idle for 60 s: on a fleet of 100 the busiest node held 92. Like kubo's
//! connection manager (low water 32, high water 96, 20 s grace), the event loop checks every
//! [`CHECK_EVERY`]: above [`HIGH`] connected peers, it closes connections to peers it neither
//! watches nor sends its summary to, that have not asked or answered anything for [`GRACE`], the
//! oldest first, down to [`LOW`]. The DHT redials what it needs; a walk in progress is inside its
//! grace.

use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Above this many connected peers, idle connections nothing depends on are closed...
pub const HIGH: usize = 64;
/// ...down to this many (or until none is left to close).
pub const LOW: usize = 48;
/// A connection younger than this, or to a peer heard from within it, is left alone: a DHT query
/// gives up after 30 s ([`crate::timeouts::KAD_QUERY`]).
pub const GRACE: Duration = Duration::from_secs(30);
/// How often the count is checked.
pub const CHECK_EVERY: u32 = 10;

/// Which of `idle` (peers nothing protects, with when they connected) to disconnect while
/// `connected` peers are connected: none at or below [`HIGH`], else the oldest, down to [`LOW`].
pub fn choose(connected: usize, mut idle: Vec<(PeerId, Instant)>) -> Vec<PeerId> {
    if connected <= HIGH {
        return Vec::new();
    }
    idle.sort_by_key(|(_, since)| *since);
    idle.into_iter().take(connected - LOW).map(|(p, _)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_above_high_water_and_oldest_first_down_to_low() {
        let t0 = Instant::now();
        let idle: Vec<(PeerId, Instant)> =
            (0..40).map(|i| (PeerId::random(), t0 + Duration::from_secs(40 - i as u64))).collect();
        assert!(choose(HIGH, idle.clone()).is_empty(), "at the bound: nothing closed");
        let closed = choose(HIGH + 6, idle.clone());
        assert_eq!(closed.len(), HIGH + 6 - LOW);
        let oldest: Vec<PeerId> = idle.iter().rev().take(closed.len()).map(|(p, _)| *p).collect();
        assert_eq!(closed, oldest, "the longest-connected first");
        assert_eq!(choose(200, idle.clone()).len(), idle.len(), "never more than the idle ones");
    }
}
