//! Admission of inbound connections still in their handshake, per source address.
//!
//! An inbound TCP connection holds a pending slot from accept until its noise and yamux
//! handshakes finish (or the 5 s connection timeout). libp2p caps pending inbound connections
//! globally only, so 64 idle sockets from one address, re-opened whenever the node closed them,
//! kept every honest peer out (20 of 20 handshakes failed). This behaviour refuses a new pending
//! connection from an address that already has [`PER_ADDRESS`] in flight, or from a network (IPv4
//! /24, IPv6 /64) that has [`PER_NETWORK`]: one host or one subnet can use a small share of the
//! global cap ([`super::MAX_PENDING_INCOMING`]), never all of it. Loopback sources count per
//! address only (a fleet or a test on one machine). Connections we dial ourselves (`--peer`
//! peers, providers, the tracker) are outbound and never wait behind these. A peer the node
//! dropped for misbehaving is refused both ways for [`BAN`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::timeouts::BAN;
use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, ListenFailure, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};

/// Handshakes one source address may have in flight: a node behind a NAT with a few peerix
/// machines dials us a few times at once, never dozens.
pub const PER_ADDRESS: usize = 8;
/// Handshakes one /24 (or /64) may have in flight.
pub const PER_NETWORK: usize = 32;

#[derive(Debug, thiserror::Error)]
#[error("too many pending connections from {0}")]
struct TooMany(&'static str);

#[derive(Debug, thiserror::Error)]
#[error("peer dropped for misbehaving; refused until its ban ends")]
struct Banned;

/// Banned peers remembered at most (the oldest ban goes first).
const MAX_BANNED: usize = 4096;

#[derive(Default)]
pub struct Behaviour {
    pending: HashMap<ConnectionId, (IpAddr, Option<Net>)>,
    per_address: HashMap<IpAddr, usize>,
    per_network: HashMap<Net, usize>,
    banned: HashMap<PeerId, Instant>,
}

/// An IPv4 /24 or IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Net {
    V4([u8; 3]),
    V6([u16; 4]),
}

fn network(ip: IpAddr) -> Option<Net> {
    match ip {
        _ if ip.is_loopback() => None,
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            Some(Net::V4([a, b, c]))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(Net::V6([s[0], s[1], s[2], s[3]]))
        }
    }
}

/// The IP address a multiaddr names, if any.
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl Behaviour {
    /// Refuses `peer`'s connections, both ways, for [`BAN`].
    pub fn ban(&mut self, peer: PeerId) {
        let now = Instant::now();
        self.banned.retain(|_, until| *until > now);
        if self.banned.len() >= MAX_BANNED
            && let Some(oldest) = self.banned.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p)
        {
            self.banned.remove(&oldest);
        }
        self.banned.insert(peer, now + BAN);
    }

    fn check_ban(&self, peer: &PeerId) -> Result<(), ConnectionDenied> {
        match self.banned.get(peer) {
            Some(until) if *until > Instant::now() => Err(ConnectionDenied::new(Banned)),
            _ => Ok(()),
        }
    }

    fn admit(&mut self, connection: ConnectionId, remote: &Multiaddr) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(remote) else { return Ok(()) };
        let net = network(ip);
        if self.per_address.get(&ip).copied().unwrap_or(0) >= PER_ADDRESS {
            return Err(ConnectionDenied::new(TooMany("one address")));
        }
        if let Some(n) = net
            && self.per_network.get(&n).copied().unwrap_or(0) >= PER_NETWORK
        {
            return Err(ConnectionDenied::new(TooMany("one network")));
        }
        *self.per_address.entry(ip).or_default() += 1;
        if let Some(n) = net {
            *self.per_network.entry(n).or_default() += 1;
        }
        self.pending.insert(connection, (ip, net));
        Ok(())
    }

    /// The handshake of `connection` ended (established, failed or timed out).
    fn done(&mut self, connection: &ConnectionId) {
        let Some((ip, net)) = self.pending.remove(connection) else { return };
        if let Some(c) = self.per_address.get_mut(&ip) {
            *c -= 1;
            if *c == 0 {
                self.per_address.remove(&ip);
            }
        }
        if let Some(n) = net
            && let Some(c) = self.per_network.get_mut(&n)
        {
            *c -= 1;
            if *c == 0 {
                self.per_network.remove(&n);
            }
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.admit(connection_id, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        _local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.done(&connection_id);
        self.check_ban(&peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check_ban(&peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => self.done(&connection_id),
            // Another behaviour may refuse a connection we admitted after our own check passed.
            FromSwarm::ConnectionEstablished(e) => self.done(&e.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_and_one_network_get_a_bounded_share_and_it_comes_back() {
        let mut b = Behaviour::default();
        let addr = |s: &str| s.parse::<Multiaddr>().unwrap();
        let ids: Vec<ConnectionId> = (0..100).map(ConnectionId::new_unchecked).collect();
        for id in &ids[..PER_ADDRESS] {
            assert!(b.admit(*id, &addr("/ip4/203.0.113.5/tcp/1")).is_ok());
        }
        assert!(b.admit(ids[50], &addr("/ip4/203.0.113.5/tcp/2")).is_err(), "the address is full");
        let mut next = PER_ADDRESS;
        for host in 6..20 {
            for _ in 0..PER_ADDRESS {
                if next - PER_ADDRESS >= PER_NETWORK - PER_ADDRESS {
                    break;
                }
                assert!(b.admit(ids[next], &addr(&format!("/ip4/203.0.113.{host}/tcp/1"))).is_ok());
                next += 1;
            }
        }
        assert!(b.admit(ids[60], &addr("/ip4/203.0.113.99/tcp/1")).is_err(), "the /24 is full");
        assert!(b.admit(ids[61], &addr("/ip4/198.51.100.1/tcp/1")).is_ok(), "another network is not");
        assert!(b.admit(ids[62], &addr("/ip4/127.0.0.1/tcp/1")).is_ok());
        b.done(&ids[0]);
        assert!(b.admit(ids[63], &addr("/ip4/203.0.113.5/tcp/3")).is_ok(), "a finished handshake frees its place");
        for id in &ids {
            b.done(id);
        }
        assert!(b.pending.is_empty() && b.per_address.is_empty() && b.per_network.is_empty());
        let (bad, good) = (PeerId::random(), PeerId::random());
        b.ban(bad);
        assert!(b.check_ban(&bad).is_err() && b.check_ban(&good).is_ok());
    }
}
