//! The tracker's SQLite state (`<state-dir>/tracker.sqlite`, WAL): which peer shares which path,
//! where each peer listens, and the nonces of recent announcements.
//!
//! A record lives as long as its peer keeps announcing: every announcement (a heartbeat too)
//! refreshes the peer's `last_seen`, and its paths live and die with it. Lookups skip peers older
//! than the TTL, so expiry is exact; a sweep deletes them later. One announcement is one
//! transaction: it is applied whole or not at all (a refused one changes nothing).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::tracker_wire::{Announcement, Provider};

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS peers (
    peer_id TEXT PRIMARY KEY,
    addrs TEXT NOT NULL,          -- JSON array of multiaddrs
    observed_ip TEXT NOT NULL,    -- where the last announcement came from
    generation INTEGER NOT NULL,
    paths INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    announced_at INTEGER NOT NULL DEFAULT 0  -- the signed timestamp of the newest announcement
);
CREATE TABLE IF NOT EXISTS paths (
    hash TEXT NOT NULL,
    peer_id TEXT NOT NULL REFERENCES peers(peer_id) ON DELETE CASCADE,
    PRIMARY KEY (hash, peer_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS paths_by_peer ON paths(peer_id);
CREATE TABLE IF NOT EXISTS nonces (
    peer_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    seen_at INTEGER NOT NULL,
    PRIMARY KEY (peer_id, nonce)
) WITHOUT ROWID;
";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("tracker database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("tracker database lock poisoned")]
    Poisoned,
}

/// Why an announcement was not applied (each a client's mistake: a 4xx).
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Replayed,
    /// A delta on a generation the tracker does not hold (or no record at all).
    Generation {
        held: Option<u64>,
    },
    TooManyPaths {
        limit: usize,
    },
    /// Older than the announcement the record holds: applying it would roll the record back.
    Older {
        held: i64,
    },
}

/// Candidates a provider lookup considers: the oldest-lived records first, so a flood of fresh
/// keys is read past, never instead of, the long-lived holders.
const CANDIDATES: usize = 1024;
/// Records one source address (an IPv4 /24, an IPv6 /48) may fill in one answer: 20 Sybil keys
/// from one host pushed the one honest provider out of the answer.
const PER_SOURCE: usize = 2;

pub struct TrackerDb {
    /// The one writer (announcements, expiry).
    conn: Mutex<Connection>,
    /// Read connections for lookups, reused: WAL readers do not wait for the writer or each
    /// other, so lookups run on every core at once (with one shared connection they queued
    /// behind each other and capped the tracker at ~17 000 lookups/s here).
    readers: Mutex<Vec<Connection>>,
    path: std::path::PathBuf,
}

/// Read connections kept for reuse; more are opened under load and closed after use.
const READERS: usize = 8;

impl TrackerDb {
    pub fn open(state_dir: &Path) -> Result<Self, DbError> {
        std::fs::create_dir_all(state_dir).map_err(|e| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(e.to_string()),
            )
        })?;
        let path = state_dir.join("tracker.sqlite");
        let conn = Connection::open(&path)?;
        conn.busy_timeout(crate::timeouts::SQLITE_BUSY)?;
        conn.execute_batch(SCHEMA)?;
        // A tracker DB from before `announced_at`: add it (records are soft state; 0 = unknown).
        let has: bool =
            conn.prepare("SELECT 1 FROM pragma_table_info('peers') WHERE name = 'announced_at'")?.exists([])?;
        if !has {
            conn.execute_batch("ALTER TABLE peers ADD COLUMN announced_at INTEGER NOT NULL DEFAULT 0;")?;
        }
        conn.execute_batch("PRAGMA foreign_keys = ON;")?;
        Ok(Self { conn: Mutex::new(conn), readers: Mutex::new(Vec::new()), path })
    }

    /// Runs a read on a pooled read-only connection.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, DbError>) -> Result<T, DbError> {
        let pooled = self.readers.lock().map_err(|_| DbError::Poisoned)?.pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(crate::timeouts::SQLITE_BUSY)?;
                c
            }
        };
        let out = f(&conn);
        if let Ok(mut r) = self.readers.lock()
            && r.len() < READERS
        {
            r.push(conn);
        }
        out
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, DbError>) -> Result<T, DbError> {
        let mut conn = self.conn.lock().map_err(|_| DbError::Poisoned)?;
        f(&mut conn)
    }

    /// Applies one verified announcement seen from `observed` at `now`; `max_paths` bounds what
    /// one peer may hold.
    pub fn apply(
        &self,
        a: &Announcement,
        observed: IpAddr,
        now: i64,
        max_paths: usize,
    ) -> Result<Result<u64, Refused>, DbError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            let fresh = tx
                .prepare_cached("INSERT OR IGNORE INTO nonces (peer_id, nonce, seen_at) VALUES (?1, ?2, ?3)")?
                .execute(params![a.peer_id, a.nonce, now])?;
            if fresh == 0 {
                return Ok(Err(Refused::Replayed));
            }
            let held: Option<(u64, usize, i64)> = tx
                .query_row("SELECT generation, paths, announced_at FROM peers WHERE peer_id = ?1", [&a.peer_id], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as usize, r.get::<_, i64>(2)?))
                })
                .optional()?;
            if let Some((_, _, at)) = held
                && a.timestamp < at
            {
                return Ok(Err(Refused::Older { held: at }));
            }
            let held = held.map(|(g, n, _)| (g, n));
            let count = match (&a.full, held) {
                (Some(full), _) => {
                    if full.len() > max_paths {
                        return Ok(Err(Refused::TooManyPaths { limit: max_paths }));
                    }
                    upsert_peer(&tx, a, observed, now, 0)?;
                    tx.execute("DELETE FROM paths WHERE peer_id = ?1", [&a.peer_id])?;
                    // What the inserts added (repeats in the list add nothing), as for a delta.
                    let mut count = 0;
                    let mut insert =
                        tx.prepare_cached("INSERT OR IGNORE INTO paths (hash, peer_id) VALUES (?1, ?2)")?;
                    for hash in full {
                        count += insert.execute(params![hash, a.peer_id])?;
                    }
                    drop(insert);
                    count
                }
                (None, Some((generation, paths))) if a.base == Some(generation) => {
                    if paths + a.add.len() > max_paths {
                        return Ok(Err(Refused::TooManyPaths { limit: max_paths }));
                    }
                    upsert_peer(&tx, a, observed, now, paths)?;
                    // A running count (what each statement changed), not a count over the table.
                    let mut count = paths;
                    let mut insert =
                        tx.prepare_cached("INSERT OR IGNORE INTO paths (hash, peer_id) VALUES (?1, ?2)")?;
                    for hash in &a.add {
                        count += insert.execute(params![hash, a.peer_id])?;
                    }
                    drop(insert);
                    let mut delete = tx.prepare_cached("DELETE FROM paths WHERE hash = ?1 AND peer_id = ?2")?;
                    for hash in &a.remove {
                        count -= delete.execute(params![hash, a.peer_id])?.min(count);
                    }
                    drop(delete);
                    count
                }
                (None, held) => return Ok(Err(Refused::Generation { held: held.map(|h| h.0) })),
            };
            tx.execute("UPDATE peers SET paths = ?2 WHERE peer_id = ?1", params![a.peer_id, count as i64])?;
            tx.commit()?;
            Ok(Ok(a.generation))
        })
    }

    /// Up to `limit` live peers sharing `hash`: a sample an attacker cannot fill. At most
    /// [`PER_SOURCE`] records per source network; half the answer the longest-lived records (an
    /// honest holder has been announcing for longer than keys made for an attack), the other half
    /// drawn at random from the rest (so new honest peers are found too, and no fixed set of
    /// fresh keys decides the answer).
    pub fn providers(&self, hash: &str, live_since: i64, limit: usize) -> Result<Vec<Provider>, DbError> {
        let candidates: Vec<(Provider, String)> = self.read(|conn| {
            let mut q = conn.prepare_cached(
                "SELECT p.peer_id, p.addrs, p.last_seen, p.observed_ip FROM paths h \
                 JOIN peers p ON p.peer_id = h.peer_id \
                 WHERE h.hash = ?1 AND p.last_seen >= ?2 ORDER BY p.first_seen ASC, p.peer_id LIMIT ?3",
            )?;
            let rows = q.query_map(params![hash, live_since, CANDIDATES as i64], |r| Ok((provider(r)?, r.get(3)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        Ok(sample(candidates, limit))
    }

    /// Up to `limit` live peers (freshest first) with how many paths each shares.
    pub fn peers(&self, live_since: i64, limit: usize) -> Result<Vec<(Provider, u64)>, DbError> {
        self.read(|conn| {
            let mut q = conn.prepare_cached(
                "SELECT peer_id, addrs, last_seen, paths FROM peers WHERE last_seen >= ?1 \
                 ORDER BY last_seen DESC LIMIT ?2",
            )?;
            let rows =
                q.query_map(params![live_since, limit as i64], |r| Ok((provider(r)?, r.get::<_, i64>(3)? as u64)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Live peers and the paths they share (a running count per peer: no scan of `paths`).
    pub fn counts(&self, live_since: i64) -> Result<(u64, u64), DbError> {
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT count(*), coalesce(sum(paths), 0) FROM peers WHERE last_seen >= ?1",
                [live_since],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )?)
        })
    }

    /// Deletes peers not seen since `live_since` (their paths with them) and nonces older than
    /// `nonces_since` (announcements that old are refused by their timestamp anyway).
    pub fn expire(&self, live_since: i64, nonces_since: i64) -> Result<usize, DbError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            let gone = tx.execute("DELETE FROM peers WHERE last_seen < ?1", [live_since])?;
            tx.execute("DELETE FROM nonces WHERE seen_at < ?1", [nonces_since])?;
            tx.commit()?;
            Ok(gone)
        })
    }

    /// Reads one row: fails when the DB is unreadable. For `/health`.
    pub fn probe(&self) -> Result<(), DbError> {
        self.with(|conn| Ok(conn.query_row("SELECT count(*) FROM peers", [], |r| r.get::<_, i64>(0)).map(|_| ())?))
    }
}

fn upsert_peer(
    tx: &rusqlite::Transaction<'_>,
    a: &Announcement,
    observed: IpAddr,
    now: i64,
    paths: usize,
) -> rusqlite::Result<usize> {
    // Only addresses that could be the announcer's own (a record names where its peer is, not
    // where an attacker wants other peers to dial).
    let own: Vec<&String> = a.addrs.iter().filter(|addr| super::api::consistent(addr, observed)).collect();
    let addrs = serde_json::to_string(&own).unwrap_or_else(|_| "[]".into());
    tx.prepare_cached(
        "INSERT INTO peers (peer_id, addrs, observed_ip, generation, paths, first_seen, last_seen, announced_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7) \
         ON CONFLICT(peer_id) DO UPDATE SET addrs = excluded.addrs, observed_ip = excluded.observed_ip, \
           generation = excluded.generation, last_seen = excluded.last_seen, announced_at = excluded.announced_at",
    )?
    .execute(params![a.peer_id, addrs, observed.to_string(), a.generation as i64, paths as i64, now, a.timestamp])
}

/// See [`TrackerDb::providers`]: `candidates` are oldest-lived first.
fn sample(candidates: Vec<(Provider, String)>, limit: usize) -> Vec<Provider> {
    let mut per_source: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let eligible: Vec<Provider> = candidates
        .into_iter()
        .filter(|(p, ip)| {
            // Loopback is this machine (tests, a fleet on one host, a proxy without
            // --trust-proxy): every peer there counts as its own source.
            let key = match ip.parse::<IpAddr>() {
                Ok(a) if a.is_loopback() => p.peer_id.clone(),
                _ => source_network(ip),
            };
            let n = per_source.entry(key).or_default();
            *n += 1;
            *n <= PER_SOURCE
        })
        .map(|(p, _)| p)
        .collect();
    let senior = limit.div_ceil(2).min(eligible.len());
    let mut rest = eligible;
    let mut out: Vec<Provider> = rest.drain(..senior).collect();
    while out.len() < limit && !rest.is_empty() {
        let i = (crate::p2p::peers::random_u64() % rest.len() as u64) as usize;
        out.push(rest.swap_remove(i));
    }
    out
}

/// The network a source address stands for when records are counted per source: an IPv4 /24 or
/// an IPv6 /48 (what one host or one customer of a provider can hold).
fn source_network(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
        Err(_) => ip.to_owned(),
    }
}

fn provider(r: &rusqlite::Row<'_>) -> rusqlite::Result<Provider> {
    let addrs: String = r.get(1)?;
    Ok(Provider { peer_id: r.get(0)?, addrs: serde_json::from_str(&addrs).unwrap_or_default(), last_seen: r.get(2)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: usize) -> Provider {
        Provider { peer_id: format!("peer-{id}"), addrs: Vec::new(), last_seen: 0 }
    }

    #[test]
    fn sybils_from_one_network_cannot_push_the_long_lived_holder_out() {
        // The honest holder announced first (from its own address); 40 fresh keys from one /24.
        let mut candidates = vec![(p(0), "198.51.100.7".to_owned())];
        candidates.extend((1..=40).map(|i| (p(i), format!("203.0.113.{i}"))));
        for _ in 0..50 {
            let got = sample(candidates.clone(), 20);
            assert_eq!(got[0].peer_id, "peer-0", "the long-lived record is always in");
            assert_eq!(got.len(), 1 + PER_SOURCE, "the /24 fills at most {PER_SOURCE} places");
        }
        // Many honest sources: half the answer by seniority, the rest drawn from the others.
        let many: Vec<_> = (0..100).map(|i| (p(i), format!("10.0.{i}.1"))).collect();
        let got = sample(many.clone(), 20);
        assert_eq!(got.len(), 20);
        assert!((0..10).all(|i| got[i].peer_id == format!("peer-{i}")));
        let draws: std::collections::HashSet<String> =
            (0..20).flat_map(|_| sample(many.clone(), 20).into_iter().skip(10).map(|p| p.peer_id)).collect();
        assert!(draws.len() > 30, "the other half varies: {}", draws.len());
    }

    #[test]
    fn an_older_announcement_does_not_roll_a_record_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = TrackerDb::open(dir.path()).unwrap();
        let ann = |ts: i64, nonce: &str, paths: &[&str]| Announcement {
            peer_id: "12D3KooWGmRVtpjRBm2Z2iv2mVNDf8uVYwobtkj3q6mRV6bAfjkP".into(),
            addrs: vec!["/ip4/198.51.100.7/tcp/1".into(), "/ip4/203.0.113.80/tcp/80".into()],
            timestamp: ts,
            nonce: nonce.into(),
            generation: 1,
            base: None,
            full: Some(paths.iter().map(|s| s.to_string()).collect()),
            add: Vec::new(),
            remove: Vec::new(),
        };
        let from: IpAddr = "198.51.100.7".parse().unwrap();
        let new = ann(2000, "aa", &["0c6kzph7l0dcbfmjap64f0czdafn3b7x"]);
        assert_eq!(db.apply(&new, from, 2000, 10).unwrap(), Ok(1));
        let old = ann(1000, "bb", &[]);
        assert_eq!(db.apply(&old, from, 2001, 10).unwrap(), Err(Refused::Older { held: 2000 }));
        let found = db.providers("0c6kzph7l0dcbfmjap64f0czdafn3b7x", 0, 20).unwrap();
        assert_eq!(found.len(), 1, "the record still lists the path");
        assert_eq!(found[0].addrs, vec!["/ip4/198.51.100.7/tcp/1".to_owned()], "the victim's address was dropped");
    }
}
