//! What each peer did lately, as the node heard it: its answers to our requests (and the ones it
//! let pass), its requests to us, its heartbeats and ping round trips; and whether we need to
//! hear it (watched peers get a heartbeat, [`crate::p2p::heartbeat`]; connections nothing depends
//! on may be closed, [`crate::p2p::trim`]). Lookups and transfers wait longer for a peer that
//! keeps answering; [`crate::p2p::liveness`] closes a connection to one that went quiet. A part of
//! [`Peers`], in a file of its own.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::{Peer, Peers};
use crate::p2p::liveness::Heard;
use crate::timeouts::WATCH_NAMED_FOR;

impl Peers {
    /// A ping to `peer` came back after `rtt`.
    pub fn pinged(&self, peer: PeerId, rtt: Duration) {
        self.update(&peer, |p| {
            p.rtt = Some(rtt);
            p.nearest = Some(p.nearest.map_or(rtt, |n| n.min(rtt)));
        });
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

    /// The heartbeat stream with `peer` opened on connection `on` ([`Self::connection`]) ended:
    /// its pings judge it again until the next beat. A stream of a connection since replaced
    /// changes nothing (its end, seconds later, once reset the verdict on the new one: a holder
    /// stopped just then stayed offered for 61 s).
    pub fn beat_stopped(&self, peer: PeerId, on: Option<u64>) {
        self.update(&peer, |p| {
            if p.connection() == on {
                p.beat_heard = false;
            }
        });
    }

    /// True if a heartbeat task with `peer` should start now (we should ask it,
    /// [`Peer::asks`], and none runs); the caller starts it, and it asks [`Self::beat_ends`]
    /// whenever its stream ends. `local`: our own id.
    pub fn start_beating(&self, peer: PeerId, local: &PeerId) -> bool {
        self.with(|m| m.get_mut(&peer).is_some_and(|p| p.claim_task(asks_first(local, &peer))))
    }

    /// Connected peers a heartbeat task should start with now (they became watched since they
    /// connected: their summary came, or they named a path of ours); each is marked as beating.
    pub fn start_due(&self, local: &PeerId) -> Vec<PeerId> {
        self.with(|m| m.iter_mut().filter_map(|(id, p)| p.claim_task(asks_first(local, id)).then_some(*id)).collect())
    }

    /// True while our heartbeat task with `peer` should go on asking.
    pub fn asks(&self, peer: &PeerId, local: &PeerId) -> bool {
        self.with(|m| m.get(peer).is_some_and(|p| p.asks(asks_first(local, peer))))
    }

    /// True if the heartbeat task with `peer` ends now (it is gone, or no longer to be asked);
    /// false if it goes on (a stream that ended is opened again). One decision under the lock, so
    /// a reconnecting peer's identify either sees the task going on or starts a new one.
    pub fn beat_ends(&self, peer: PeerId, local: &PeerId) -> bool {
        self.with(|m| {
            let Some(p) = m.get_mut(&peer) else { return true };
            p.beating = p.asks(asks_first(local, &peer));
            !p.beating
        })
    }

    /// A heartbeat stream from `peer` to us opened (`true`) or ended, on connection `on`. When
    /// one ends, its pings judge it again until the next beat, unless our own heartbeat task with
    /// it runs (it beats, or gives up and says so: [`Self::beat_stopped`]); a stream of a
    /// connection since replaced changes nothing.
    pub fn asked_by(&self, peer: PeerId, opens: bool, on: Option<u64>) {
        self.update(&peer, |p| {
            if p.connection() != on {
                return;
            }
            if opens {
                p.asked_by = p.asked_by.saturating_add(1);
            } else {
                p.asked_by = p.asked_by.saturating_sub(1);
                p.beat_heard &= p.beating;
            }
        });
    }

    /// `peer` named a root of a narinfo we accepted: while we offer that path, its leaving must
    /// be noticed in seconds, so it is watched for [`WATCH_NAMED_FOR`], and judged by the
    /// heartbeat's deadline at once: it answered just now, and a heartbeat with it starts. (Had it
    /// to wait for the heartbeat stream to open, a holder stopped a second after answering, on a
    /// fleet of 100 on 2 cores, was judged by its pings and stayed offered for 61 s.)
    pub fn named(&self, peer: PeerId) {
        self.update(&peer, |p| {
            p.named_until = Some(Instant::now() + WATCH_NAMED_FOR);
            p.last_heard = Some(Instant::now());
            p.beat_heard = p.connected;
        });
    }

    /// What [`crate::p2p::liveness`] weighs besides pings, in one look: when `peer` last
    /// answered us, asked us, took data from us or beat, and whether a heartbeat stream with it is
    /// open (ours, or its beats reach us), which gives it the heartbeat's deadline, not the ping's.
    pub fn heard(&self, peer: &PeerId) -> Heard {
        self.with(|m| {
            m.get(peer)
                .map(|p| {
                    // A peer that named a path we offer and speaks the heartbeat is judged by it
                    // whatever the state of the streams: someone asks within 2 s.
                    let named = p.beats && p.named_until.is_some_and(|t| t > Instant::now());
                    Heard { at: p.last_heard, quick: p.beat_heard || named }
                })
                .unwrap_or_default()
        })
    }

    /// The peers we send our summary to now (the have advertiser's links).
    pub fn set_linked(&self, linked: &HashSet<PeerId>) {
        self.with(|m| m.iter_mut().for_each(|(id, p)| p.linked = linked.contains(id)));
    }

    /// Connected peers nothing of ours depends on, with when they connected ([`super::trim`]):
    /// not watched, not sent our summary, no request of ours to them in flight, connected longer
    /// than `grace` and neither heard from nor answering within it.
    pub fn trimmable(&self, grace: Duration) -> Vec<(PeerId, Instant)> {
        let quiet = |t: Option<Instant>| t.is_none_or(|t| t.elapsed() > grace);
        self.with(|m| {
            m.iter()
                .filter(|(_, p)| p.connected && !p.watched() && !p.linked && p.asking == 0)
                .filter(|(_, p)| p.since.elapsed() > grace && quiet(p.last_heard) && quiet(p.last_answer))
                .map(|(id, p)| (*id, p.since))
                .collect()
        })
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

    /// How far away `peer` is: the smallest round trip on its connection, if any.
    pub fn distance(&self, peer: &PeerId) -> Option<Duration> {
        self.with(|m| m.get(peer).and_then(|p| p.nearest))
    }
}

/// True if this end asks for heartbeats when both ends watch each other: of two nodes, exactly
/// one does, whoever dialled.
fn asks_first(local: &PeerId, peer: &PeerId) -> bool {
    local.to_bytes() < peer.to_bytes()
}

impl Peer {
    /// Whether we ask this peer for heartbeats: it is connected, beats, and we watch it
    /// ([`Peer::watched`]); unless it asks us already and its id is the smaller (`!smaller`:
    /// [`asks_first`]), so that two peers that watch each other settle on one asker.
    fn asks(&self, smaller: bool) -> bool {
        self.connected && self.beats && self.watched() && (smaller || self.asked_by == 0)
    }

    /// True if a heartbeat task with this peer should start now (we ask it and none runs): it is
    /// then marked as running, for the caller to start.
    fn claim_task(&mut self, smaller: bool) -> bool {
        let starts = !self.beating && self.asks(smaller);
        self.beating |= starts;
        starts
    }
}

#[cfg(test)]
mod tests {
    use super::super::Discovery;
    use super::*;

    /// `peer` connects (found as `found`) and identify says it is a peerix node that beats.
    fn peerix_connects(peers: &Peers, peer: PeerId, found: Discovery) {
        peers.connected(peer, "/ip4/127.0.0.1/tcp/1".parse().unwrap(), found, false);
        peers.identified(peer, "peerix/0".into(), true, true);
    }

    #[test]
    fn of_two_peers_exactly_one_asks_first() {
        for _ in 0..32 {
            let (a, b) = (PeerId::random(), PeerId::random());
            assert!(asks_first(&a, &b) != asks_first(&b, &a));
            assert!(!asks_first(&a, &a));
        }
    }

    #[test]
    fn heartbeats_judge_a_peer_only_once_one_went_through_on_its_connection() {
        let peers = Peers::default();
        let (peer, local) = (PeerId::random(), PeerId::random());
        peerix_connects(&peers, peer, Discovery::Dht);
        assert!(!peers.start_beating(peer, &local), "a DHT neighbour offers us nothing: not watched");
        let mdns = PeerId::random();
        peerix_connects(&peers, mdns, Discovery::Mdns);
        assert!(peers.start_beating(mdns, &local), "a kept peer: ours starts");
        assert!(!peers.start_beating(mdns, &local), "one task at a time");
        assert!(!peers.heard(&mdns).quick, "no beat yet: its pings judge it, not a heartbeat still opening");
        peers.named(peer);
        assert!(peers.heard(&peer).quick, "it answered just now: judged by beats from now on");
        assert!(peers.start_beating(peer, &local), "it named a path we accepted: ours starts");
        peers.beat(peer);
        let heard = peers.heard(&peer);
        assert!(heard.quick && heard.at.is_some());
        assert!(!peers.beat_ends(peer, &local), "still connected: the task opens a new stream");
        peers.beat(mdns);
        assert!(peers.heard(&mdns).quick);
        let first = peers.connection(&mdns);
        peers.disconnected(mdns);
        assert!(!peers.heard(&mdns).quick, "a new connection starts over");
        peers.connected(mdns, "/ip4/127.0.0.1/tcp/2".parse().unwrap(), Discovery::Mdns, false);
        peers.beat(mdns);
        peers.beat_stopped(mdns, first);
        peers.asked_by(mdns, false, first);
        assert!(peers.heard(&mdns).quick, "the end of a stream of the connection before changes nothing");
        peers.beat_stopped(mdns, peers.connection(&mdns));
        assert!(!peers.heard(&mdns).quick);
        peers.disconnected(peer);
        assert!(peers.heard(&peer).quick, "named lately: judged by beats on its next connection too");
        assert!(peers.beat_ends(peer, &local), "gone: the task ends");
        peerix_connects(&peers, peer, Discovery::Dht);
        assert!(peers.start_beating(peer, &local), "back, and still named lately: a new task");
        // A peer that names a path before identify says it does not beat (older peerix) is
        // judged by its pings once identify says so.
        let old = PeerId::random();
        peers.connected(old, "/ip4/127.0.0.1/tcp/3".parse().unwrap(), Discovery::Dht, false);
        peers.named(old);
        assert!(peers.heard(&old).quick);
        peers.identified(old, "peerix/0.0".into(), true, false);
        assert!(!peers.heard(&old).quick && !peers.start_beating(old, &local));
    }

    #[test]
    fn two_peers_that_watch_each_other_settle_on_one_asker() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let (small, big) = if asks_first(&a, &b) { (a, b) } else { (b, a) };
        // Each side's view of the other: kept both ways (`--peer`, mDNS), so both watch.
        let view = |other: PeerId| {
            let peers = Peers::default();
            peerix_connects(&peers, other, Discovery::Mdns);
            peers
        };
        let (at_small, at_big) = (view(big), view(small));
        assert!(at_small.start_beating(big, &small) && at_big.start_beating(small, &big), "both start at once");
        at_small.asked_by(big, true, Some(1));
        at_big.asked_by(small, true, Some(1));
        assert!(at_small.asks(&big, &small), "the smaller id goes on asking");
        assert!(!at_big.asks(&small, &big), "the larger stops: the smaller asks it");
        at_big.beat(small);
        assert!(at_big.beat_ends(small, &big));
        assert!(at_big.heard(&small).quick, "the smaller one's beats judge it: our stopping changes nothing");
        at_small.beat(big);
        at_small.asked_by(big, false, Some(1));
        assert!(at_small.heard(&big).quick, "its stream closed, ours goes on");
        assert!(at_small.asks(&big, &small));
        // The smaller one stops watching (its summary link went): the larger asks again.
        at_big.asked_by(small, false, Some(1));
        assert!(at_big.start_beating(small, &big));
    }

    #[test]
    fn a_peer_that_watches_alone_asks_whatever_the_ids() {
        let peers = Peers::default();
        let (peer, local) = (PeerId::random(), PeerId::random());
        peerix_connects(&peers, peer, Discovery::Dht);
        peers.named(peer);
        assert!(peers.start_beating(peer, &local));
        assert!(peers.asks(&peer, &local) && peers.asks(&peer, &PeerId::random()));
        assert_eq!(peers.start_due(&local), Vec::<PeerId>::new(), "its task runs already");
        peers.update(&peer, |p| p.named_until = Some(Instant::now()));
        assert!(!peers.asks(&peer, &local), "no longer named lately: its task stops");
        assert!(peers.beat_ends(peer, &local));
        // The tracker's node beats but is no peerix node: watched from identify on.
        let tracker = PeerId::random();
        peers.connected(tracker, "/ip4/127.0.0.1/tcp/2".parse().unwrap(), Discovery::Dialed, false);
        peers.identified(tracker, "peerix-tracker/0".into(), false, true);
        assert_eq!(peers.start_due(&local), vec![tracker]);
    }

    #[test]
    fn only_connections_nothing_depends_on_are_trimmed() {
        let peers = Peers::default();
        let [dht, kept, linked, named, asking] = std::array::from_fn(|_| PeerId::random());
        for (p, found) in
            [(dht, Discovery::Dht), (kept, Discovery::Mdns), (linked, Discovery::Dht), (named, Discovery::Dht)]
                .into_iter()
                .chain([(asking, Discovery::Dht)])
        {
            peerix_connects(&peers, p, found);
        }
        peers.set_linked(&HashSet::from([linked]));
        peers.named(named);
        peers.asking(asking, true);
        // Past a zero grace: the clock has moved since they connected.
        std::thread::sleep(Duration::from_millis(2));
        let trimmed: Vec<PeerId> = peers.trimmable(Duration::ZERO).into_iter().map(|(p, _)| p).collect();
        assert_eq!(trimmed, vec![dht], "a DHT neighbour only: not kept, linked, named or asked");
        assert!(peers.trimmable(Duration::from_secs(60)).is_empty(), "all within their grace");
    }

    #[test]
    fn a_peer_is_as_far_as_its_smallest_round_trip_on_this_connection() {
        let peers = Peers::default();
        let peer = PeerId::random();
        peerix_connects(&peers, peer, Discovery::Dht);
        assert_eq!(peers.distance(&peer), None, "not pinged yet");
        let ms = Duration::from_millis;
        // A heartbeat waits behind bulk data on a busy link: the round trip grows, the distance not.
        for rtt in [ms(40), ms(1), ms(12), ms(30)] {
            peers.pinged(peer, rtt);
        }
        assert_eq!(peers.distance(&peer), Some(ms(1)));
        // Another connection may take another route (a relay, another network).
        peers.disconnected(peer);
        peerix_connects(&peers, peer, Discovery::Dht);
        assert_eq!(peers.distance(&peer), None);
        peers.pinged(peer, ms(40));
        assert_eq!(peers.distance(&peer), Some(ms(40)));
    }
}
