//! What each peer did lately, as the node heard it: its answers to our requests (and the ones it
//! let pass), its requests to us, its heartbeats and ping round trips. Lookups and transfers wait
//! longer for a peer that keeps answering; [`crate::p2p::liveness`] closes a connection to one
//! that went quiet. A part of [`Peers`], in a file of its own.

use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::Peers;
use crate::p2p::liveness::Heard;

impl Peers {
    /// A ping to `peer` came back after `rtt`.
    pub fn pinged(&self, peer: PeerId, rtt: Duration) {
        self.update(&peer, |p| p.rtt = Some(rtt));
    }

    /// A narinfo request to `peer` starts (`true`) or ends.
    pub fn asking(&self, peer: PeerId, starts: bool) {
        self.update(&peer, |p| p.asking = if starts { p.asking + 1 } else { p.asking.saturating_sub(1) });
    }

    /// `peer` answered one of our requests just now.
    pub fn answered(&self, peer: PeerId) {
        self.update(&peer, |p| {
            p.last_answer = Some(Instant::now());
            p.last_heard = p.last_answer;
            p.let_down = false;
        });
    }

    /// `peer` sent us a request, or took a block we sent it (its window moved: it reads), just now.
    pub fn heard_from(&self, peer: PeerId) {
        self.update(&peer, |p| p.last_heard = Some(Instant::now()));
    }

    /// A heartbeat with `peer` went through just now ([`crate::p2p::heartbeat`]).
    pub fn beat(&self, peer: PeerId) {
        self.update(&peer, |p| {
            p.last_heard = Some(Instant::now());
            p.beat_heard = p.connected;
        });
    }

    /// The heartbeat stream with `peer` ended: its pings judge it again until the next beat.
    pub fn beat_stopped(&self, peer: PeerId) {
        self.update(&peer, |p| p.beat_heard = false);
    }

    /// True if a heartbeat task with `peer` should start now (it is connected, beats, and none
    /// runs); the caller starts it, and it asks [`Self::beat_ends`] whenever its stream ends.
    pub fn start_beating(&self, peer: PeerId) -> bool {
        self.with(|m| {
            let Some(p) = m.get_mut(&peer).filter(|p| p.connected && p.beats && !p.beating) else { return false };
            p.beating = true;
            true
        })
    }

    /// True if the heartbeat task with `peer` ends now (it is no longer connected); false if it
    /// goes on (a stream that ended is opened again). One decision under the lock, so a
    /// reconnecting peer's identify either sees the task going on or starts a new one.
    pub fn beat_ends(&self, peer: PeerId) -> bool {
        self.with(|m| {
            let Some(p) = m.get_mut(&peer) else { return true };
            p.beating = p.connected && p.beats;
            !p.beating
        })
    }

    /// What [`crate::p2p::liveness`] weighs besides pings, in one look: when `peer` last
    /// answered us, asked us, took data from us or beat, and whether a heartbeat stream with it is
    /// open (ours, or its beats reach us), which gives it the heartbeat's deadline, not the ping's.
    pub fn heard(&self, peer: &PeerId) -> Heard {
        self.with(|m| m.get(peer).map(|p| Heard { at: p.last_heard, quick: p.beat_heard }).unwrap_or_default())
    }

    /// True if one of `peers` answered a request of ours within `within` and is still connected:
    /// it is working through a queue of them (a seeder a crowd asks at once), so an answer still
    /// to come is worth waiting for.
    pub fn answering(&self, peers: &[PeerId], within: Duration) -> bool {
        self.with(|m| {
            peers.iter().any(|id| {
                m.get(id).filter(|p| p.connected).and_then(|p| p.last_answer).is_some_and(|t| t.elapsed() < within)
            })
        })
    }

    /// A request of ours to `peer` went past its deadline without an answer.
    pub fn let_down(&self, peer: PeerId) {
        self.update(&peer, |p| p.let_down = true);
    }

    /// True if one of `peers` has not let a request of ours pass its deadline since it last
    /// answered (or ever): nothing says it is gone, and a slow answer gets the benefit of the
    /// doubt, once.
    pub fn not_let_down(&self, peers: &[PeerId]) -> bool {
        self.with(|m| peers.iter().any(|id| m.get(id).is_some_and(|p| !p.let_down)))
    }

    /// How long an answer from the slowest of `peers` may take now: three of its last ping round
    /// trips (a lane's opening, the request, slack), plus one for every [`crate::p2p::lanes::DEPTH`]
    /// requests to it already in flight (a lane answers its requests in order). Peers not pinged
    /// yet count as nothing.
    pub fn answer_time(&self, peers: &[PeerId]) -> Duration {
        self.with(|m| {
            peers
                .iter()
                .filter_map(|id| m.get(id))
                .filter_map(|p| Some(p.rtt?.saturating_mul(3 + p.asking / crate::p2p::lanes::DEPTH as u32)))
                .max()
                .unwrap_or_default()
        })
    }

    /// The last ping round trip to `peer`, if any.
    pub fn rtt(&self, peer: &PeerId) -> Option<Duration> {
        self.with(|m| m.get(peer).and_then(|p| p.rtt))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Discovery;
    use super::*;

    #[test]
    fn heartbeats_judge_a_peer_only_once_one_went_through_on_its_connection() {
        let peers = Peers::default();
        let peer = PeerId::random();
        peers.connected(peer, "/ip4/127.0.0.1/tcp/1".parse().unwrap(), Discovery::Dht, false);
        peers.identified(peer, "peerix/0".into(), true, true);
        assert!(peers.start_beating(peer), "it lists the heartbeat: ours starts");
        assert!(!peers.start_beating(peer), "one task at a time");
        assert!(!peers.heard(&peer).quick, "no beat yet: its pings judge it, not a heartbeat still opening");
        peers.beat(peer);
        let heard = peers.heard(&peer);
        assert!(heard.quick && heard.at.is_some());
        assert!(!peers.beat_ends(peer), "still connected: the task opens a new stream");
        peers.disconnected(peer);
        assert!(!peers.heard(&peer).quick, "a new connection starts over");
        assert!(peers.beat_ends(peer), "gone: the task ends");
        peers.connected(peer, "/ip4/127.0.0.1/tcp/1".parse().unwrap(), Discovery::Dht, false);
        assert!(peers.start_beating(peer), "back: a new task");
    }
}
