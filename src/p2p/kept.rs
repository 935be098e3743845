//! Peers the node keeps connected: `--peer` addresses (forever) and peers mDNS announced (while
//! their record lives). The event loop dials each one that has no connection, with exponential
//! backoff per peer ([`FIRST_RETRY`] doubling to [`MAX_BACKOFF`]), reset when a connection is made:
//! a peer that is down costs a dial a minute, not one a second, and one that comes back is
//! connected within seconds.
//!
//! Bounded: at most [`MAX_MDNS_PEERS`] mDNS peers and [`MAX_ADDRS`] addresses each — a LAN that
//! announces more (or a host spoofing mDNS answers) cannot grow the map or the dial rate.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

use super::peers::Discovery;
use crate::timeouts::{FIRST_RETRY, MAX_BACKOFF};

/// mDNS peers kept; more announcements are ignored until some expire.
pub const MAX_MDNS_PEERS: usize = 256;
/// Addresses kept per peer.
pub const MAX_ADDRS: usize = 8;

struct Entry {
    addrs: Vec<Multiaddr>,
    found: Discovery,
    next_dial: Instant,
    backoff: Duration,
}

#[derive(Default)]
pub struct Kept {
    map: HashMap<PeerId, Entry>,
}

impl Kept {
    /// A `--peer` address (ending in `/p2p/<id>`); `None` if it names no peer.
    pub fn add_static(&mut self, addr: Multiaddr) -> Option<PeerId> {
        let peer = super::peer_of(&addr)?;
        let e = self.map.entry(peer).or_insert_with(|| Entry {
            addrs: Vec::new(),
            found: Discovery::Static,
            next_dial: Instant::now(),
            backoff: FIRST_RETRY,
        });
        e.found = Discovery::Static;
        if !e.addrs.contains(&addr) && e.addrs.len() < MAX_ADDRS {
            e.addrs.push(addr);
        }
        Some(peer)
    }

    /// An address mDNS announced; false if ignored (the map is full).
    pub fn add_mdns(&mut self, peer: PeerId, addr: Multiaddr) -> bool {
        let mdns_peers = self.map.values().filter(|e| e.found == Discovery::Mdns).count();
        if !self.map.contains_key(&peer) && mdns_peers >= MAX_MDNS_PEERS {
            return false;
        }
        let e = self.map.entry(peer).or_insert_with(|| Entry {
            addrs: Vec::new(),
            found: Discovery::Mdns,
            next_dial: Instant::now(),
            backoff: FIRST_RETRY,
        });
        if !e.addrs.contains(&addr) && e.addrs.len() < MAX_ADDRS {
            e.addrs.push(addr);
        }
        true
    }

    /// An mDNS record expired: the address goes, and the peer with its last one (never a static peer).
    pub fn expire_mdns(&mut self, peer: &PeerId, addr: &Multiaddr) {
        if let Some(e) = self.map.get_mut(peer)
            && e.found == Discovery::Mdns
        {
            e.addrs.retain(|a| a != addr);
            if e.addrs.is_empty() {
                self.map.remove(peer);
            }
        }
    }

    pub fn found(&self, peer: &PeerId) -> Option<Discovery> {
        self.map.get(peer).map(|e| e.found)
    }

    /// A connection to `peer` is up: the next loss is retried quickly again.
    pub fn connected(&mut self, peer: &PeerId) {
        if let Some(e) = self.map.get_mut(peer) {
            e.backoff = FIRST_RETRY;
        }
    }

    /// The connection to `peer` is gone: dial again after a first short wait.
    pub fn disconnected(&mut self, peer: &PeerId) {
        if let Some(e) = self.map.get_mut(peer) {
            e.next_dial = Instant::now() + FIRST_RETRY;
        }
    }

    /// Peers to dial now (not connected, their wait over), with their addresses; each one's next
    /// attempt is pushed back by its doubled backoff.
    pub fn due(&mut self, connected: impl Fn(&PeerId) -> bool) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (peer, e) in self.map.iter_mut() {
            if connected(peer) || e.next_dial > now {
                continue;
            }
            out.push((*peer, e.addrs.clone()));
            e.next_dial = now + e.backoff;
            e.backoff = (e.backoff * 2).min(MAX_BACKOFF);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_resets_and_mdns_is_bounded() {
        let mut k = Kept::default();
        let id = PeerId::random();
        let addr: Multiaddr = format!("/ip4/10.0.0.1/tcp/1/p2p/{id}").parse().unwrap();
        assert_eq!(k.add_static(addr.clone()), Some(id));
        assert_eq!(k.add_static("/ip4/10.0.0.1/tcp/1".parse().unwrap()), None);
        assert_eq!(k.due(|_| false).len(), 1, "dialled at once");
        assert!(k.due(|_| false).is_empty(), "then only after its backoff");
        assert_eq!(k.map[&id].backoff, FIRST_RETRY * 2);
        for _ in 0..10 {
            k.map.get_mut(&id).unwrap().next_dial = Instant::now();
            k.due(|_| false);
        }
        assert_eq!(k.map[&id].backoff, MAX_BACKOFF, "capped");
        k.connected(&id);
        assert_eq!(k.map[&id].backoff, FIRST_RETRY);
        assert!(k.due(|_| true).is_empty(), "a connected peer is not dialled");

        for i in 0..MAX_MDNS_PEERS + 10 {
            let a: Multiaddr = format!("/ip4/10.0.{}.{}/tcp/1", i / 250, i % 250).parse().unwrap();
            k.add_mdns(PeerId::random(), a);
        }
        assert_eq!(k.map.values().filter(|e| e.found == Discovery::Mdns).count(), MAX_MDNS_PEERS);
        // Expiry never removes a static peer.
        k.expire_mdns(&id, &addr);
        assert_eq!(k.found(&id), Some(Discovery::Static));
    }
}
