//! The tracker's HTTP API (`/v1`), its health and metrics. Every refusal is a 4xx with a one-line
//! reason, decided before anything is written: an announcement is checked whole (size, JSON,
//! signature, timestamp, nonce, addresses, hashes, rates) and then applied in one transaction.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use serde_json::{Value, json};

use super::Tracker;
use super::db::Refused;
use crate::httpd::{Failure, plain};
use crate::nix::store_path::StoreHash;
use crate::p2p::admission::ip_of;
use crate::store::now_secs;
use crate::tracker_wire::MAX_PATHS;
use crate::tracker_wire::{Accepted, Announcement, Providers, Signed, WireError};

/// An announcement's timestamp may be this far from the tracker's clock (either way).
pub const CLOCK_SKEW_SECS: i64 = 300;
const MAX_ADDRS: usize = 16;
const MAX_ADDR_LEN: usize = 256;
/// Providers one lookup returns: the transfer needs a few good ones, not all.
const PROVIDERS_LIMIT: usize = 20;
const PEERS_LIMIT: usize = 1000;

#[derive(Debug)]
pub enum TrackerError {
    BadRequest(String),
    Forbidden(&'static str),
    NotFound(&'static str),
    Conflict(String),
    TooLarge(String),
    TooMany(&'static str),
    Internal(String),
}

impl IntoResponse for TrackerError {
    fn into_response(self) -> Response {
        let (failure, line) = match self {
            TrackerError::BadRequest(why) => (Failure::BadRequest, why),
            TrackerError::Forbidden(why) => (Failure::Forbidden, why.to_owned()),
            TrackerError::NotFound(what) => (Failure::NotFound, what.to_owned()),
            TrackerError::Conflict(why) => (Failure::Conflict, why),
            TrackerError::TooLarge(why) => (Failure::TooLarge, why),
            TrackerError::TooMany(why) => (Failure::TooMany, why.to_owned()),
            TrackerError::Internal(cause) => {
                tracing::error!(%cause, "tracker request failed");
                (Failure::Internal, "internal error".to_owned())
            }
        };
        tracing::debug!(?failure, %line, "tracker refused a request");
        plain(failure, &line)
    }
}

impl From<super::db::DbError> for TrackerError {
    fn from(e: super::db::DbError) -> Self {
        TrackerError::Internal(crate::errors::chain(&e))
    }
}

impl From<tokio::task::JoinError> for TrackerError {
    fn from(e: tokio::task::JoinError) -> Self {
        TrackerError::Internal(e.to_string())
    }
}

/// `POST /v1/announce`.
pub async fn announce(
    State(t): State<Arc<Tracker>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Accepted>, TrackerError> {
    let ip = t.client_ip(peer, &headers);
    // Loopback is this machine (a local proxy without --trust-proxy, tests): per-peer limits only.
    if !ip.is_loopback() && !t.per_address.try_take(&ip, 1.0, tokio::time::Instant::now()) {
        t.count_announce("rate_limited");
        return Err(TrackerError::TooMany("too many announcements from this address"));
    }
    let result = check(&body);
    let a = match result {
        Ok(a) => a,
        Err(e) => {
            t.count_announce("refused");
            return Err(e);
        }
    };
    if !t.per_peer.try_take(&a.peer_id, 1.0, tokio::time::Instant::now()) {
        t.count_announce("rate_limited");
        return Err(TrackerError::TooMany("too many announcements from this peer"));
    }
    let (tracker, now, announcer) = (t.clone(), now_secs(), a.peer_id.clone());
    let applied =
        crate::tasks::spawn_blocking(module_path!(), move || tracker.db.apply(&a, ip, now, MAX_PATHS)).await??;
    match applied {
        Ok(generation) => {
            t.count_announce("accepted");
            // It speaks, so it is there (its connection to our node may have broken on its own).
            t.presence.back(&announcer);
            Ok(Json(Accepted { generation, ttl_secs: t.ttl_secs as u64 }))
        }
        Err(refused) => {
            t.count_announce("refused");
            Err(match refused {
                Refused::Replayed => TrackerError::Conflict("replayed announcement (nonce already used)".into()),
                Refused::Generation { held } => TrackerError::Conflict(format!(
                    "delta on a generation the tracker does not hold (it holds {}): send a full announcement",
                    held.map_or("none".into(), |g| g.to_string())
                )),
                Refused::TooManyPaths { limit } => TrackerError::TooLarge(format!("more than {limit} paths")),
                Refused::Older { held } => TrackerError::Conflict(format!(
                    "older than the announcement the tracker holds (timestamp {held}): it would roll the record back"
                )),
            })
        }
    }
}

/// Everything about an announcement that needs no database.
fn check(body: &[u8]) -> Result<Announcement, TrackerError> {
    let signed: Signed =
        serde_json::from_slice(body).map_err(|e| TrackerError::BadRequest(format!("malformed JSON: {e}")))?;
    let (a, _) = signed.verify().map_err(|e| match e {
        WireError::BadSignature => TrackerError::Forbidden("signature does not verify under the peer id's key"),
        other => TrackerError::BadRequest(other.to_string()),
    })?;
    // Checked: a timestamp near i64::MIN made `now - ts` wrap and pass as "no skew".
    let skew = now_secs().checked_sub(a.timestamp).unwrap_or(i64::MAX);
    if skew.unsigned_abs() > CLOCK_SKEW_SECS as u64 {
        return Err(TrackerError::BadRequest(format!(
            "stale timestamp: {} s from the tracker's clock (at most {CLOCK_SKEW_SECS})",
            skew
        )));
    }
    if !(16..=64).contains(&a.nonce.len()) || !a.nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TrackerError::BadRequest("nonce must be 16 to 64 hex digits".into()));
    }
    if a.addrs.len() > MAX_ADDRS {
        return Err(TrackerError::BadRequest(format!("more than {MAX_ADDRS} addresses")));
    }
    for addr in &a.addrs {
        if addr.len() > MAX_ADDR_LEN || addr.parse::<Multiaddr>().is_err() {
            return Err(TrackerError::BadRequest("an address is not a multiaddr".into()));
        }
    }
    match (&a.full, a.base) {
        (Some(_), Some(_)) => return Err(TrackerError::BadRequest("a full announcement has no base".into())),
        (Some(_), None) if !a.add.is_empty() || !a.remove.is_empty() => {
            return Err(TrackerError::BadRequest("a full announcement has no add or remove".into()));
        }
        (None, None) => return Err(TrackerError::BadRequest("an announcement is full or names its base".into())),
        _ => {}
    }
    let hashes = a.full.iter().flatten().chain(&a.add).chain(&a.remove);
    if hashes.clone().count() > MAX_PATHS {
        return Err(TrackerError::TooLarge(format!("more than {MAX_PATHS} paths")));
    }
    if let Some(bad) = hashes.clone().find(|h| StoreHash::parse(h).is_err()) {
        let shown: String = bad.chars().take(40).collect();
        return Err(TrackerError::BadRequest(format!("{shown:?} is not a store path hash")));
    }
    Ok(a)
}

/// `GET /v1/providers/<hash32>`: live peers sharing the path, freshest first, with the addresses
/// this requester may see.
pub async fn providers(
    State(t): State<Arc<Tracker>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(hash): Path<String>,
) -> Result<Json<Providers>, TrackerError> {
    let hash = StoreHash::parse(&hash).map_err(|_| TrackerError::BadRequest("not a store path hash".into()))?;
    let requester = t.client_ip(peer, &headers);
    // An index seek and ≤ 20 rows on a pooled reader, ~20 µs: on the calling task, as the
    // daemon's Nix DB lookups; a hop to a blocking thread would cost as much as the query.
    let mut found = t.db.providers(hash.as_str(), now_secs() - t.ttl_secs, PROVIDERS_LIMIT)?;
    found.retain(|p| !t.presence.is_gone(&p.peer_id));
    for p in &mut found {
        p.addrs.retain(|a| visible_to(a, requester));
    }
    t.count_lookup(!found.is_empty());
    Ok(Json(Providers { providers: found }))
}

/// `GET /v1/peers`.
pub async fn peers(
    State(t): State<Arc<Tracker>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, TrackerError> {
    let requester = t.client_ip(peer, &headers);
    let (tracker, since) = (t.clone(), now_secs() - t.ttl_secs);
    let rows = crate::tasks::spawn_blocking(module_path!(), move || tracker.db.peers(since, PEERS_LIMIT)).await??;
    let peers: Vec<Value> = rows
        .into_iter()
        .map(|(p, paths)| {
            let addrs: Vec<&String> = p.addrs.iter().filter(|a| visible_to(a, requester)).collect();
            json!({ "peer_id": p.peer_id, "addrs": addrs, "paths": paths, "last_seen": p.last_seen })
        })
        .collect();
    Ok(Json(json!({ "peers": peers })))
}

/// `GET /v1/status`.
pub async fn status(State(t): State<Arc<Tracker>>) -> Result<Json<Value>, TrackerError> {
    let (tracker, since) = (t.clone(), now_secs() - t.ttl_secs);
    let (peers, paths) = crate::tasks::spawn_blocking(module_path!(), move || tracker.db.counts(since)).await??;
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "peers": peers,
        "paths": paths,
        "ttl_secs": t.ttl_secs,
        "uptime_secs": t.started.elapsed().as_secs(),
        // The tracker's libp2p node: kad bootstrap, relay, AutoNAT.
        "multiaddrs": t.node_addrs.lock().map(|a| a.clone()).unwrap_or_default(),
    })))
}

/// `GET /health`: 200 `ok`, or 503 with the reason.
pub async fn health(State(t): State<Arc<Tracker>>) -> Response {
    let tracker = t.clone();
    match crate::tasks::spawn_blocking(module_path!(), move || tracker.db.probe()).await {
        Ok(Ok(())) => "ok\n".into_response(),
        // One line for the probe; the cause (paths, SQLite's words) goes to the log.
        Ok(Err(e)) => {
            tracing::error!(cause = %crate::errors::chain(&e), "tracker database unreadable");
            plain(Failure::Unavailable, "degraded: tracker database unreadable")
        }
        Err(e) => {
            tracing::error!(cause = %e, "health check failed");
            plain(Failure::Unavailable, "degraded: health check failed")
        }
    }
}

/// True when `addr` could be the address of a peer whose announcement came from `observed`: its
/// IP is the one the announcement came from (any port: NATs map them), or a private or loopback
/// one (a LAN address, shown only to requesters inside that range, see [`visible_to`]), or it is
/// a relayed (`/p2p-circuit`) address, which is dialled through the relay's libp2p handshake. A
/// public IP other than the sender's, or a DNS name (resolving anywhere), is dropped: otherwise a
/// record could send every peer that looks up a path to dial a victim. Announcements seen from
/// loopback (the tracker's own machine: tests, a local reverse proxy without `--trust-proxy`)
/// cannot be checked and keep every address.
pub fn consistent(addr: &str, observed: IpAddr) -> bool {
    if observed.is_loopback() {
        return true;
    }
    let Ok(addr) = addr.parse::<Multiaddr>() else { return false };
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return true;
    }
    ip_of(&addr).is_some_and(|ip| ip == observed || ip.is_loopback() || private_range(ip).is_some())
}

/// True when `requester` may see `addr`: public addresses (and names) to everyone; loopback ones
/// to loopback requesters; private-range ones (RFC 1918, CGNAT, link-local, ULA) only to
/// requesters in the same range, who can reach them — to anyone else they say only what a LAN
/// looks like inside.
pub fn visible_to(addr: &str, requester: IpAddr) -> bool {
    let Ok(addr) = addr.parse::<Multiaddr>() else { return false };
    match ip_of(&addr) {
        None => true,
        Some(ip) if ip.is_loopback() => requester.is_loopback(),
        Some(ip) => match private_range(ip) {
            None => true,
            Some(range) => private_range(requester) == Some(range),
        },
    }
}

/// The private range `ip` is in, if any.
fn private_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            match (a, b) {
                (10, _) => Some("10/8"),
                (172, 16..=31) => Some("172.16/12"),
                (192, 168) => Some("192.168/16"),
                (100, 64..=127) => Some("100.64/10"),
                (169, 254) => Some("169.254/16"),
                _ => None,
            }
        }
        IpAddr::V6(v6) => match v6.segments()[0] {
            s if s & 0xfe00 == 0xfc00 => Some("fc00::/7"),
            s if s & 0xffc0 == 0xfe80 => Some("fe80::/10"),
            _ => v6.to_ipv4_mapped().and_then(|v4| private_range(IpAddr::V4(v4))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_shown_only_inside_their_range() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let lan = "/ip4/192.168.1.20/tcp/12306";
        assert!(visible_to(lan, ip("192.168.7.9")));
        assert!(!visible_to(lan, ip("203.0.113.5")));
        assert!(!visible_to(lan, ip("10.0.0.2")));
        assert!(visible_to("/ip4/203.0.113.9/udp/12306/quic-v1", ip("10.0.0.2")));
        assert!(visible_to("/dns4/peer.example/tcp/12306", ip("10.0.0.2")));
        assert!(!visible_to("/ip4/127.0.0.1/tcp/1", ip("10.0.0.2")));
        assert!(visible_to("/ip4/127.0.0.1/tcp/1", ip("127.0.0.1")));
        assert!(!visible_to("/ip6/fd00::1/tcp/1", ip("2001:db8::1")));
        assert!(visible_to("/ip6/fd00::1/tcp/1", ip("fd12::7")));
        assert!(!visible_to("/ip4/100.64.3.3/tcp/1", ip("198.51.100.1")));
        assert!(!visible_to("not a multiaddr", ip("127.0.0.1")));
    }

    #[test]
    fn a_record_keeps_only_addresses_its_sender_could_have() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let from = ip("198.51.100.7");
        assert!(consistent("/ip4/198.51.100.7/tcp/12306", from));
        assert!(consistent("/ip4/198.51.100.7/udp/4001/quic-v1", from));
        assert!(consistent("/ip4/192.168.1.20/tcp/12306", from), "its LAN address");
        assert!(!consistent("/ip4/203.0.113.80/tcp/80", from), "a victim's public address");
        assert!(!consistent("/dns4/victim.example/tcp/80", from));
        assert!(consistent(
            "/ip4/203.0.113.1/tcp/12307/p2p/12D3KooWGmRVtpjRBm2Z2iv2mVNDf8uVYwobtkj3q6mRV6bAfjkP/p2p-circuit",
            from
        ));
        assert!(consistent("/ip4/203.0.113.80/tcp/80", ip("127.0.0.1")), "seen from loopback: not checkable");
        assert!(!consistent("garbage", from));
    }
}
