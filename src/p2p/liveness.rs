//! Liveness of connections: which ones have stopped answering pings.
//!
//! A peer that vanishes without a FIN (a lid closed, Wi-Fi gone, its packets dropped) keeps its TCP
//! connection "open" for minutes; until it closes, its have-summary says it holds paths, our narinfo
//! answers 200 for them and nix's NAR requests wait on it. libp2p's ping reports a failure only on
//! the second timeout in a row, and the second attempt first waits up to 10 s to negotiate a new
//! stream, so a silent peer would be seen after ~17 s. Instead, the event loop records every
//! answered ping here and closes a connection whose last answer is older than [`SILENT_AFTER`]
//! (checked each second): a vanished peer is gone within ~6 s, its summary with it. Between two
//! peerix nodes the answers are their heartbeats ([`super::heartbeat`], half the bytes of ping's),
//! and libp2p's ping, every [`crate::timeouts::PING_INTERVAL`], judges only the others, after
//! [`PING_SILENT_AFTER`].
//!
//! A peer that asks us things, answers us or takes the blocks we send it is there too, whatever its
//! pings say: on a busy connection a ping waits behind seconds of bulk bytes, and on a starved
//! machine behind everything else (a crowd of 50 on 2 cores: its seeder closed live askers'
//! connections, and their NARs failed for want of a live source).
//!
//! Only connections that answered at least once are judged: a peer that does not speak ping at all
//! is left to the idle timeout, as before.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::timeouts::{PING_SILENT_AFTER, SILENT_AFTER};
use libp2p::PeerId;
use libp2p::swarm::ConnectionId;

/// A liveness check this late is skipped (see [`Liveness::silent_at`]).
pub const LATE_CHECK: Duration = Duration::from_millis(500);

/// What the rest of the node knows of a peer's being there, besides pings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Heard {
    /// When it last answered or asked us, took data from us, or beat ([`super::heartbeat`]).
    pub at: Option<Instant>,
    /// Its heartbeats come every 2 s: silent after [`SILENT_AFTER`], not [`PING_SILENT_AFTER`].
    pub quick: bool,
}

#[derive(Default)]
pub struct Liveness {
    last: HashMap<ConnectionId, (PeerId, Instant)>,
}

impl Liveness {
    /// A ping on `connection` was answered.
    pub fn answered(&mut self, connection: ConnectionId, peer: PeerId, now: Instant) {
        self.last.insert(connection, (peer, now));
    }

    pub fn closed(&mut self, connection: &ConnectionId) {
        self.last.remove(connection);
    }

    /// As [`Self::silent`], on the check due at `due`, or nothing when the check runs more than
    /// [`LATE_CHECK`] late: then the task was not running (a starved machine), the pings answered
    /// meanwhile are still queued unread, and judging now would close live connections — on a
    /// fleet of 50 daemons on 2 cores, the tracker marked ~80 live peers a minute as gone.
    pub fn silent_at(
        &mut self,
        due: tokio::time::Instant,
        heard: impl Fn(&PeerId) -> Heard,
    ) -> Vec<(ConnectionId, PeerId, Duration)> {
        if due.elapsed() > LATE_CHECK {
            return Vec::new();
        }
        self.silent(Instant::now(), heard)
    }

    /// Connections silent for longer than [`SILENT_AFTER`]; they are forgotten here (the caller
    /// closes them). `heard`: when the peer last showed it is there otherwise (an answer or a
    /// request to us, a block it took), which counts as a ping answered — on a busy connection a ping waits behind seconds of
    /// bulk bytes in the send buffer (a seeder's to each of a crowd of 50 on 2 cores: it closed
    /// live askers' connections, and their NARs failed as having no live source).
    pub fn silent(&mut self, now: Instant, heard: impl Fn(&PeerId) -> Heard) -> Vec<(ConnectionId, PeerId, Duration)> {
        let mut out = Vec::new();
        self.last.retain(|c, (p, t)| {
            let Heard { at, quick } = heard(p);
            if let Some(h) = at {
                *t = (*t).max(h);
            }
            let quiet = now.saturating_duration_since(*t);
            if quiet > if quick { SILENT_AFTER } else { PING_SILENT_AFTER } {
                out.push((*c, *p, quiet));
                false
            } else {
                true
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing heard but what `answered` records, every 2 s.
    fn none(_: &PeerId) -> Heard {
        Heard { at: None, quick: true }
    }

    #[test]
    fn a_peer_moving_our_data_is_not_silent_though_its_pings_queue() {
        let mut l = Liveness::default();
        let (c, p) = (ConnectionId::new_unchecked(1), PeerId::random());
        let t0 = Instant::now();
        l.answered(c, p, t0);
        let heard = |at: Instant| move |q: &PeerId| Heard { at: (*q == p).then_some(at), quick: true };
        assert!(l.silent(t0 + SILENT_AFTER * 2, heard(t0 + SILENT_AFTER * 2)).is_empty(), "heard just now");
        assert!(l.silent(t0 + SILENT_AFTER * 2, none).is_empty(), "heard counts as answered until then");
        let gone = l.silent(t0 + SILENT_AFTER * 3 + Duration::from_millis(1), heard(t0));
        assert_eq!(gone.len(), 1, "neither pings nor data for longer than SILENT_AFTER");
    }

    #[test]
    fn a_connection_is_silent_only_after_answering_once_and_then_not_for_too_long() {
        let mut l = Liveness::default();
        let (c1, c2, p) = (ConnectionId::new_unchecked(1), ConnectionId::new_unchecked(2), PeerId::random());
        let t0 = Instant::now();
        l.answered(c1, p, t0);
        l.answered(c2, p, t0);
        assert!(l.silent(t0 + SILENT_AFTER, none).is_empty(), "not yet");
        l.answered(c2, p, t0 + Duration::from_secs(4));
        let gone = l.silent(t0 + SILENT_AFTER + Duration::from_millis(1), none);
        assert_eq!(gone.iter().map(|g| g.0).collect::<Vec<_>>(), vec![c1]);
        assert!(l.silent(t0 + SILENT_AFTER * 3, none).iter().all(|g| g.0 == c2), "c1 is reported once");
        l.answered(c1, p, t0);
        l.closed(&c1);
        assert!(l.silent(t0 + SILENT_AFTER * 10, none).is_empty());
    }

    #[tokio::test]
    async fn a_late_check_judges_nobody() {
        let mut l = Liveness::default();
        let (c, p) = (ConnectionId::new_unchecked(1), PeerId::random());
        l.answered(c, p, Instant::now() - SILENT_AFTER * 2);
        let now = tokio::time::Instant::now();
        assert!(l.silent_at(now - LATE_CHECK * 2, none).is_empty(), "the task was not running: no verdict");
        assert_eq!(l.silent_at(now, none).len(), 1, "on time: silent for 10 s is silent");
    }

    #[test]
    fn a_peer_without_heartbeats_is_judged_on_its_slower_pings() {
        let mut l = Liveness::default();
        let (c, p) = (ConnectionId::new_unchecked(1), PeerId::random());
        let t0 = Instant::now();
        l.answered(c, p, t0);
        let pings = |_: &PeerId| Heard { at: None, quick: false };
        assert!(l.silent(t0 + SILENT_AFTER * 2, pings).is_empty(), "its next ping is not due yet");
        assert_eq!(l.silent(t0 + PING_SILENT_AFTER + Duration::from_millis(1), pings).len(), 1);
    }
}
