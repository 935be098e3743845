//! Kademlia's record store, with provider records in SQLite (no 1024-key cap, and they survive a
//! restart). Value records — which IPFS nodes rarely put and peerix never reads — stay in a bounded
//! map in memory.
//!
//! Called synchronously from the swarm's event loop; every call is one indexed query on our own
//! connection to the state DB (~10 µs), so it cannot stall the loop noticeably.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use libp2p::kad::store::{Error, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::{Multiaddr, PeerId};
use rusqlite::{Connection, params};
use tracing::warn;

use crate::store::now_secs;

/// Providers kept per key: Kademlia's replication factor K.
const MAX_PROVIDERS_PER_KEY: usize = 20;
/// Provider rows kept in all (oldest expiring first beyond that): ~100 bytes each.
const MAX_PROVIDER_ROWS: i64 = 1_000_000;
/// Inserts between two trims of the table.
const TRIM_EVERY: u32 = 1000;
/// Value records kept in memory, and their largest size (kad's MemoryStore defaults).
const MAX_RECORDS: usize = 1024;
const MAX_RECORD_BYTES: usize = 65 * 1024;

pub struct ProviderStore {
    /// Which DHT's records these are (`wan` or `lan`): the two never see each other's.
    dht: &'static str,
    local: PeerId,
    conn: Connection,
    records: HashMap<RecordKey, Record>,
    inserts: u32,
    max_rows: i64,
    trim_every: u32,
}

impl ProviderStore {
    pub fn open(state_dir: &Path, local: PeerId, dht: &'static str) -> rusqlite::Result<Self> {
        let conn = Connection::open(state_dir.join(crate::store::STATE_DB_FILE))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // The table is created by the state DB's migrations (schema version 3).
        Ok(Self {
            dht,
            local,
            conn,
            records: HashMap::new(),
            inserts: 0,
            max_rows: MAX_PROVIDER_ROWS,
            trim_every: TRIM_EVERY,
        })
    }

    fn to_unix(expires: Option<Instant>) -> i64 {
        expires.map_or(0, |e| now_secs() + e.saturating_duration_since(Instant::now()).as_secs() as i64)
    }

    fn to_instant(unix: i64) -> Option<Instant> {
        (unix > 0).then(|| Instant::now() + Duration::from_secs((unix - now_secs()).max(0) as u64))
    }

    fn rows(&self, sql: &str, key: Option<&[u8]>) -> Vec<ProviderRecord> {
        let run = || -> rusqlite::Result<Vec<ProviderRecord>> {
            let mut stmt = self.conn.prepare_cached(sql)?;
            let map = |r: &rusqlite::Row<'_>| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
            };
            let raw: Vec<_> = match key {
                Some(k) => stmt.query_map(params![self.dht, k, now_secs()], map)?.collect::<rusqlite::Result<_>>()?,
                None => {
                    stmt.query_map(params![self.dht, self.local.to_bytes()], map)?.collect::<rusqlite::Result<_>>()?
                }
            };
            Ok(raw
                .into_iter()
                .filter_map(|(key, provider, addrs, expires)| {
                    Some(ProviderRecord {
                        key: RecordKey::from(key),
                        provider: PeerId::from_bytes(&provider).ok()?,
                        expires: Self::to_instant(expires),
                        addresses: addrs.split_whitespace().filter_map(|a| a.parse::<Multiaddr>().ok()).collect(),
                    })
                })
                .collect())
        };
        run().unwrap_or_else(|e| {
            warn!(cause = %e, "provider store query failed");
            Vec::new()
        })
    }
}

impl RecordStore for ProviderStore {
    type RecordsIter<'a> =
        std::iter::Map<std::collections::hash_map::Values<'a, RecordKey, Record>, fn(&'a Record) -> Cow<'a, Record>>;
    type ProvidedIter<'a> = std::vec::IntoIter<Cow<'a, ProviderRecord>>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.records.get(k).map(Cow::Borrowed)
    }

    fn put(&mut self, r: Record) -> Result<()> {
        if r.value.len() > MAX_RECORD_BYTES {
            return Err(Error::ValueTooLarge);
        }
        if self.records.len() >= MAX_RECORDS && !self.records.contains_key(&r.key) {
            return Err(Error::MaxRecords);
        }
        self.records.insert(r.key.clone(), r);
        Ok(())
    }

    fn remove(&mut self, k: &RecordKey) {
        self.records.remove(k);
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.records.values().map(Cow::Borrowed)
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        let key = record.key.to_vec();
        let provider = record.provider.to_bytes();
        let addrs = record.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" ");
        let expires = Self::to_unix(record.expires);
        let write = || -> rusqlite::Result<bool> {
            let count: i64 = self
                .conn
                .prepare_cached("SELECT count(*) FROM kad_providers WHERE key = ?1 AND provider != ?2")?
                .query_row(params![key, provider], |r| r.get(0))?;
            if count as usize >= MAX_PROVIDERS_PER_KEY && record.provider != self.local {
                return Ok(false);
            }
            self.conn
                .prepare_cached(
                    "INSERT INTO kad_providers (dht, key, provider, addrs, expires_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT(dht, key, provider) DO UPDATE SET addrs = excluded.addrs, expires_at = excluded.expires_at",
                )?
                .execute(params![self.dht, key, provider, addrs, expires])?;
            Ok(true)
        };
        match write() {
            Ok(true) if record.provider != self.local => {
                tracing::info!(dht = self.dht, provider = %record.provider, "stored provider record");
            }
            Ok(true) => {}
            Ok(false) => return Err(Error::MaxProvidedKeys),
            Err(e) => {
                warn!(cause = %e, "cannot store provider record");
                return Err(Error::MaxProvidedKeys);
            }
        }
        // Keep the table bounded: every TRIM_EVERY inserts, drop the soonest-expiring foreign records
        // beyond the cap (counting 10^6 rows on every insert would cost more than the insert).
        self.inserts += 1;
        if self.inserts >= self.trim_every {
            self.inserts = 0;
            if let Err(e) = self.conn.execute(
                "DELETE FROM kad_providers WHERE (dht, key, provider) IN (SELECT dht, key, provider \
                 FROM kad_providers WHERE provider != ?1 ORDER BY expires_at \
                 LIMIT max(0, (SELECT count(*) FROM kad_providers) - ?2))",
                params![self.local.to_bytes(), self.max_rows],
            ) {
                warn!(cause = %e, "cannot trim provider records");
            }
        }
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        self.rows(
            "SELECT key, provider, addrs, expires_at FROM kad_providers \
             WHERE dht = ?1 AND key = ?2 AND (expires_at = 0 OR expires_at > ?3) LIMIT 20",
            Some(key.as_ref()),
        )
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.rows("SELECT key, provider, addrs, expires_at FROM kad_providers WHERE dht = ?1 AND provider = ?2", None)
            .into_iter()
            .map(Cow::Owned)
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        let _ = self.conn.execute(
            "DELETE FROM kad_providers WHERE dht = ?1 AND key = ?2 AND provider = ?3",
            params![self.dht, k.to_vec(), p.to_bytes()],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StateDb;

    fn record(key: &[u8], provider: PeerId) -> ProviderRecord {
        ProviderRecord {
            key: RecordKey::new(&key),
            provider,
            expires: Some(Instant::now() + Duration::from_secs(3600)),
            addresses: vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
        }
    }

    #[test]
    fn records_persist_per_dht_and_the_table_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        StateDb::open(dir.path()).unwrap();
        let local = PeerId::random();
        let other = PeerId::random();
        let mut wan = ProviderStore::open(dir.path(), local, "wan").unwrap();
        wan.add_provider(record(b"k", other)).unwrap();
        wan.add_provider(record(b"mine", local)).unwrap();
        // Reopened (a restart): still there, with addresses; the LAN DHT does not see WAN records.
        let wan = ProviderStore::open(dir.path(), local, "wan").unwrap();
        let found = wan.providers(&RecordKey::new(&b"k"));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].provider, other);
        assert_eq!(found[0].addresses.len(), 1);
        assert_eq!(wan.provided().count(), 1);
        let lan = ProviderStore::open(dir.path(), local, "lan").unwrap();
        assert!(lan.providers(&RecordKey::new(&b"k")).is_empty());

        let mut small = ProviderStore::open(dir.path(), local, "lan").unwrap();
        small.max_rows = 10;
        small.trim_every = 5;
        for i in 0..40u32 {
            small.add_provider(record(&i.to_le_bytes(), PeerId::random())).unwrap();
        }
        let rows: i64 = small.conn.query_row("SELECT count(*) FROM kad_providers", [], |r| r.get(0)).unwrap();
        assert!(rows <= 10 + 5, "{rows} rows");
        // Our own announcement is never trimmed.
        assert_eq!(ProviderStore::open(dir.path(), local, "wan").unwrap().provided().count(), 1);
    }
}
