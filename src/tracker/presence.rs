//! Which announcing peers the tracker's node saw leave. A record lives for its TTL (5 min) after
//! the last announcement, so a peer that vanished was still named as a provider for minutes: every
//! lookup of its paths dialled it and waited out the asker's deadline (a 250 ms miss where a 0 ms
//! one was due), and on a fleet nodes that held no summary of it kept answering 200 for its paths
//! while it was gone. Each daemon holds a connection to the tracker's node (an idle presence
//! stream, [`crate::tracker_wire::PRESENCE_PROTOCOL`]): when it breaks (a reset, end of stream)
//! or its heartbeats stop ([`crate::p2p::liveness`]), the node marks the peer here, and
//! `/v1/providers` leaves it out until it connects again or announces. A connection closed for
//! idleness marks nothing.
//!
//! A peer counts as gone [`GRACE`] after the mark, not at once: a live daemon whose connection
//! broke (its CPU starved past the ping timeout, its own liveness check closing on us) is back
//! within about a second (a fleet of 50 daemons on two cores marked about ten live ones a minute
//! at rest), and should not be left out of the answers meanwhile.
//!
//! Bounded: [`MAX_DEPARTED`] peers, each forgotten once its record would have expired anyway.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Departed peers remembered at most (a tracker serves hundreds to thousands of peers).
const MAX_DEPARTED: usize = 65_536;
/// How long a marked peer still counts as present: its daemon reopens the presence stream 0.5–1 s
/// after it ends. Silence is found after 5–6 s, so a departure leaves the answers within ~8 s.
pub const GRACE: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct Presence {
    departed: Mutex<HashMap<String, Instant>>,
}

impl Presence {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Instant>) -> T) -> T {
        f(&mut self.departed.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// `peer`'s last connection to our node broke or went silent.
    pub fn left(&self, peer: &str) {
        self.with(|m| {
            if m.len() < MAX_DEPARTED || m.contains_key(peer) {
                m.insert(peer.to_owned(), Instant::now());
            }
        })
    }

    /// `peer` connected again, or announced.
    pub fn back(&self, peer: &str) {
        self.with(|m| m.remove(peer));
    }

    pub fn is_gone(&self, peer: &str) -> bool {
        self.is_gone_at(peer, Instant::now())
    }

    fn is_gone_at(&self, peer: &str, now: Instant) -> bool {
        self.with(|m| m.get(peer).is_some_and(|at| now.saturating_duration_since(*at) >= GRACE))
    }

    /// Forgets peers that left longer than `ttl` ago (their records have expired by now).
    pub fn sweep(&self, ttl: Duration) {
        self.with(|m| m.retain(|_, at| at.elapsed() < ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_gone_from_leaving_until_it_is_back_or_swept() {
        let p = Presence::default();
        assert!(!p.is_gone_at("a", Instant::now() + GRACE));
        p.left("a");
        p.left("b");
        assert!(!p.is_gone("a"), "not within the grace: a live daemon is back by then");
        let later = Instant::now() + GRACE;
        assert!(p.is_gone_at("a", later) && p.is_gone_at("b", later));
        p.back("a");
        assert!(!p.is_gone_at("a", later) && p.is_gone_at("b", later));
        p.sweep(Duration::from_secs(300));
        assert!(p.is_gone_at("b", later), "left just now");
        p.sweep(Duration::ZERO);
        assert!(!p.is_gone_at("b", later));
    }
}
