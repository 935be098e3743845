//! Kademlia's record store, with provider records in SQLite (no 1024-key cap, and they survive a
//! restart). Value records — which IPFS nodes rarely put and peerix never reads — stay in a bounded
//! map in memory.
//!
//! Kademlia calls the store synchronously from the swarm's event loop, and remote peers decide how
//! often (every ADD_PROVIDER they send is an insert). So the loop never writes: inserts and
//! removals go to one writer thread ([`ProviderWriter`], shared by both DHTs) through a bounded
//! queue — a flood beyond it is dropped, not queued — and are batched into transactions there.
//! Until a write is committed it sits in a small overlay that reads consult, so the loop always
//! sees its own writes. Reads are one indexed query on a connection of their own (~10 µs).
//! The table is kept under [`MAX_PROVIDER_ROWS`] with a running row count and the expiry index:
//! each trim costs the rows it deletes, not a scan of 10⁶.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::kad::store::{Error, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::{Multiaddr, PeerId};
use rusqlite::{Connection, params};
use tracing::{debug, info, warn};

use crate::store::now_secs;

/// Providers kept per key: Kademlia's replication factor K.
const MAX_PROVIDERS_PER_KEY: usize = 20;
/// Provider rows kept in all (soonest-expiring foreign records go first beyond that): ~100 bytes each.
const MAX_PROVIDER_ROWS: i64 = 1_000_000;
/// Inserts between two trims of the table.
const TRIM_EVERY: u32 = 1000;
/// Writes queued for the writer thread; more are dropped (a peer flooding ADD_PROVIDER).
const WRITE_QUEUE: usize = 4096;
/// Writes per transaction at most.
const BATCH: usize = 512;
/// Value records kept in memory, and their largest size (kad's MemoryStore defaults).
const MAX_RECORDS: usize = 1024;
const MAX_RECORD_BYTES: usize = 65 * 1024;

type Key = (&'static str, Vec<u8>);

/// A write not yet committed: (sequence number, provider, the record or `None` for a removal).
type PendingOp = (u64, Vec<u8>, Option<ProviderRecord>);

enum Write {
    Put { seq: u64, dht: &'static str, record: ProviderRecord },
    Remove { seq: u64, dht: &'static str, key: Vec<u8>, provider: Vec<u8> },
    Flush(SyncSender<()>),
}

#[derive(Default)]
struct Overlay {
    ops: HashMap<Key, Vec<PendingOp>>,
    next_seq: u64,
}

/// The provider records' writer thread and its overlay of writes in flight.
#[derive(Clone)]
pub struct ProviderWriter {
    tx: SyncSender<Write>,
    overlay: Arc<Mutex<Overlay>>,
}

fn connect(state_dir: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(state_dir.join(crate::store::STATE_DB_FILE))?;
    conn.busy_timeout(crate::timeouts::SQLITE_BUSY)?;
    Ok(conn)
}

impl ProviderWriter {
    /// Starts the writer thread on its own connection to the state DB (the table is created by the
    /// state DB's migrations).
    pub fn start(state_dir: &Path, local: PeerId) -> rusqlite::Result<Self> {
        Self::start_with(state_dir, local, MAX_PROVIDER_ROWS, TRIM_EVERY)
    }

    fn start_with(state_dir: &Path, local: PeerId, max_rows: i64, trim_every: u32) -> rusqlite::Result<Self> {
        let conn = connect(state_dir)?;
        let rows: i64 = conn.query_row("SELECT count(*) FROM kad_providers", [], |r| r.get(0))?;
        let (tx, rx) = sync_channel(WRITE_QUEUE);
        let overlay = Arc::new(Mutex::new(Overlay::default()));
        let thread =
            Writer { conn, local: local.to_bytes(), rows, max_rows, trim_every, inserts: 0, overlay: overlay.clone() };
        crate::tasks::thread("peerix::p2p::provider_writer", move || thread.run(rx))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(Self { tx, overlay })
    }

    /// Queues a write and records it in the overlay; false if the queue is full (dropped).
    fn send(&self, key: Key, provider: Vec<u8>, record: Option<ProviderRecord>) -> bool {
        let mut o = self.overlay.lock().unwrap_or_else(|e| e.into_inner());
        let seq = o.next_seq;
        let write = match &record {
            Some(r) => Write::Put { seq, dht: key.0, record: r.clone() },
            None => Write::Remove { seq, dht: key.0, key: key.1.clone(), provider: provider.clone() },
        };
        match self.tx.try_send(write) {
            Ok(()) => {
                o.next_seq += 1;
                o.ops.entry(key).or_default().push((seq, provider, record));
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Returns once every write queued before is committed.
    pub fn flush(&self) {
        let (done, wait) = sync_channel(1);
        if self.tx.send(Write::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

struct Writer {
    conn: Connection,
    local: Vec<u8>,
    rows: i64,
    max_rows: i64,
    trim_every: u32,
    inserts: u32,
    overlay: Arc<Mutex<Overlay>>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Write>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            let mut flushes = Vec::new();
            let mut done = Vec::new();
            if let Err(e) = self.apply(&mut batch, &mut flushes, &mut done) {
                warn!(cause = %e, "cannot store provider records");
            }
            // Committed (or failed): either way the overlay has done its job for these.
            let mut o = self.overlay.lock().unwrap_or_else(|e| e.into_inner());
            for (key, seq) in done {
                if let Some(ops) = o.ops.get_mut(&key) {
                    ops.retain(|(s, _, _)| *s > seq);
                    if ops.is_empty() {
                        o.ops.remove(&key);
                    }
                }
            }
            drop(o);
            for f in flushes {
                let _ = f.send(());
            }
        }
    }

    fn apply(
        &mut self,
        batch: &mut Vec<Write>,
        flushes: &mut Vec<SyncSender<()>>,
        done: &mut Vec<(Key, u64)>,
    ) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        let mut added = 0i64;
        for w in batch.drain(..) {
            match w {
                Write::Put { seq, dht, record } => {
                    let (key, provider) = (record.key.to_vec(), record.provider.to_bytes());
                    let addrs = record.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" ");
                    let expires = ProviderStore::to_unix(record.expires);
                    let updated = tx
                        .prepare_cached(
                            "UPDATE kad_providers SET addrs = ?4, expires_at = ?5 \
                             WHERE dht = ?1 AND key = ?2 AND provider = ?3",
                        )?
                        .execute(params![dht, key, provider, addrs, expires])?;
                    if updated == 0 {
                        tx.prepare_cached(
                            "INSERT INTO kad_providers (dht, key, provider, addrs, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?
                        .execute(params![dht, key, provider, addrs, expires])?;
                        added += 1;
                    }
                    if provider != self.local {
                        info!(dht, provider = %record.provider, "stored provider record");
                    }
                    done.push(((dht, key), seq));
                }
                Write::Remove { seq, dht, key, provider } => {
                    let n = tx
                        .prepare_cached("DELETE FROM kad_providers WHERE dht = ?1 AND key = ?2 AND provider = ?3")?
                        .execute(params![dht, key, provider])?;
                    self.rows -= n as i64;
                    done.push(((dht, key), seq));
                }
                Write::Flush(f) => flushes.push(f),
            }
        }
        self.rows += added;
        self.inserts += added as u32;
        if self.inserts >= self.trim_every {
            self.inserts = 0;
            trim(&tx, &self.local, &mut self.rows, self.max_rows)?;
        }
        tx.commit()
    }
}

/// Drops expired records, then the soonest-expiring foreign ones beyond `max_rows`: each step walks
/// the expiry index for the rows it deletes only.
fn trim(tx: &rusqlite::Transaction<'_>, local: &[u8], rows: &mut i64, max_rows: i64) -> rusqlite::Result<()> {
    let expired = tx.execute(
        "DELETE FROM kad_providers WHERE expires_at > 0 AND expires_at < ?1 AND provider != ?2",
        params![now_secs(), local],
    )?;
    *rows -= expired as i64;
    let excess = *rows - max_rows;
    if excess > 0 {
        let n = tx.execute(
            "DELETE FROM kad_providers WHERE (dht, key, provider) IN (SELECT dht, key, provider \
             FROM kad_providers WHERE expires_at > 0 AND provider != ?1 ORDER BY expires_at LIMIT ?2)",
            params![local, excess],
        )?;
        *rows -= n as i64;
    }
    debug!(rows = *rows, expired, "trimmed provider records");
    Ok(())
}

pub struct ProviderStore {
    /// Which DHT's records these are (`wan` or `lan`): the two never see each other's.
    dht: &'static str,
    local: PeerId,
    /// Reads only.
    conn: Connection,
    writer: ProviderWriter,
    records: HashMap<RecordKey, Record>,
}

impl ProviderStore {
    pub fn open(state_dir: &Path, local: PeerId, dht: &'static str, writer: ProviderWriter) -> rusqlite::Result<Self> {
        Ok(Self { dht, local, conn: connect(state_dir)?, writer, records: HashMap::new() })
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

    /// Committed records for `key`, with the writes still in flight applied on top.
    fn with_overlay(&self, key: &RecordKey, mut found: Vec<ProviderRecord>) -> Vec<ProviderRecord> {
        let o = self.writer.overlay.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ops) = o.ops.get(&(self.dht, key.to_vec())) {
            for (_, provider, record) in ops {
                found.retain(|r| r.provider.to_bytes() != *provider);
                if let Some(r) = record {
                    found.push(r.clone());
                }
            }
        }
        found
    }

    #[cfg(test)]
    fn flush(&self) {
        self.writer.flush();
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
        if record.provider != self.local {
            let others = self.providers(&record.key).iter().filter(|r| r.provider != record.provider).count();
            if others >= MAX_PROVIDERS_PER_KEY {
                return Err(Error::MaxProvidedKeys);
            }
        }
        let (key, provider) = (record.key.to_vec(), record.provider.to_bytes());
        if !self.writer.send((self.dht, key), provider, Some(record)) {
            debug!(dht = self.dht, "provider writes queue full; dropping a record");
        }
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let committed = self.rows(
            "SELECT key, provider, addrs, expires_at FROM kad_providers \
             WHERE dht = ?1 AND key = ?2 AND (expires_at = 0 OR expires_at > ?3) LIMIT 20",
            Some(key.as_ref()),
        );
        self.with_overlay(key, committed)
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.rows("SELECT key, provider, addrs, expires_at FROM kad_providers WHERE dht = ?1 AND provider = ?2", None)
            .into_iter()
            .map(Cow::Owned)
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        if !self.writer.send((self.dht, k.to_vec()), p.to_bytes(), None) {
            debug!(dht = self.dht, "provider writes queue full; dropping a removal");
        }
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
        let writer = ProviderWriter::start(dir.path(), local).unwrap();
        let mut wan = ProviderStore::open(dir.path(), local, "wan", writer.clone()).unwrap();
        wan.add_provider(record(b"k", other)).unwrap();
        wan.add_provider(record(b"mine", local)).unwrap();
        // Seen at once, before the writer committed anything.
        assert_eq!(wan.providers(&RecordKey::new(&b"k")).len(), 1);
        wan.flush();
        // Reopened (a restart): still there, with addresses; the LAN DHT does not see WAN records.
        let writer = ProviderWriter::start(dir.path(), local).unwrap();
        let mut wan = ProviderStore::open(dir.path(), local, "wan", writer.clone()).unwrap();
        let found = wan.providers(&RecordKey::new(&b"k"));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].provider, other);
        assert_eq!(found[0].addresses.len(), 1);
        assert_eq!(wan.provided().count(), 1);
        let lan = ProviderStore::open(dir.path(), local, "lan", writer.clone()).unwrap();
        assert!(lan.providers(&RecordKey::new(&b"k")).is_empty());
        // A removal is seen at once too.
        wan.remove_provider(&RecordKey::new(&b"k"), &other);
        assert!(wan.providers(&RecordKey::new(&b"k")).is_empty());
        wan.flush();
        assert!(wan.providers(&RecordKey::new(&b"k")).is_empty());

        let small = ProviderWriter::start_with(dir.path(), local, 10, 5).unwrap();
        let mut lan = ProviderStore::open(dir.path(), local, "lan", small).unwrap();
        for i in 0..40u32 {
            lan.add_provider(record(&i.to_le_bytes(), PeerId::random())).unwrap();
        }
        lan.flush();
        let rows: i64 = lan.conn.query_row("SELECT count(*) FROM kad_providers", [], |r| r.get(0)).unwrap();
        assert!(rows <= 10 + 5, "{rows} rows");
        // Our own announcement is never trimmed.
        assert_eq!(wan.provided().count(), 1);
    }

    #[test]
    fn more_than_k_providers_per_key_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        StateDb::open(dir.path()).unwrap();
        let local = PeerId::random();
        let writer = ProviderWriter::start(dir.path(), local).unwrap();
        let mut wan = ProviderStore::open(dir.path(), local, "wan", writer).unwrap();
        for _ in 0..MAX_PROVIDERS_PER_KEY {
            wan.add_provider(record(b"k", PeerId::random())).unwrap();
        }
        assert!(wan.add_provider(record(b"k", PeerId::random())).is_err());
        // Ours always fits.
        wan.add_provider(record(b"k", local)).unwrap();
    }
}
