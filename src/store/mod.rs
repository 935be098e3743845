//! peerix's own state: one SQLite file in the state dir (`peerix.sqlite`).
//!
//! Holds what the Nix DB cannot tell us: which NAR hash belongs to which store path (so a
//! `nar/<narhash>.nar` URL handed out 30 days ago still resolves after a restart) and the upstream
//! verdicts of the publish gate. Later layers add blocks, chunk indexes, providers and peers through
//! new schema versions in [`schema`].
//!
//! Concurrency: SQLite allows one writer; we keep one connection behind a std `Mutex` (never held
//! across an `.await`). Writes are a few rows per served path, far below what one connection does.
//! Reads take a connection of their own from a small pool, so they never wait for a write: in WAL
//! mode a reader sees the last committed state while an indexing transaction is open.
//! The exception is the blockstore's writes, led by the bulk insert of fetched blocks (a batch is
//! ~10 MB, tens of ms of writing): they have a connection of their own, so lookups — every block a
//! fetch probes, every chunk a peer asks for — read the last committed state (WAL) instead of
//! queueing behind them.
//! WAL with `synchronous=NORMAL`: a crash can lose the last transactions, never corrupt the file, and
//! everything here can be recomputed.

mod blockstore;
mod index;
mod progress;
mod schema;

pub use index::{PathEntry, Published, Seen, Status};
pub use progress::{IndexStats, ScanProgress};

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use crate::nix::hash::NarHash;
use crate::nix::store_path::StorePath;

pub const STATE_DB_FILE: &str = "peerix.sqlite";

/// Idle read connections kept (each holds an 8 MiB page cache at most).
const READERS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create state directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state database error")]
    Sql(#[from] rusqlite::Error),
    /// The file exists but is not a state DB we can open (corrupt, not SQLite, unreadable): the
    /// start stops here, and the file is left as it is for the operator.
    #[error("cannot open the state database {path} (corrupt or unreadable? move it away to start afresh)")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state database {path} has schema version {found}, newer than this peerix ({supported})")]
    TooNew { path: PathBuf, found: i64, supported: i64 },
    #[error("state database lock poisoned")]
    Poisoned,
}

/// What the upstream cache said about a local path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamVerdict {
    /// Upstream has the same store path with the same NarHash.
    Same = 1,
    /// Upstream does not have it, or has it with another NarHash.
    Absent = 0,
    /// Upstream did not answer in time or answered with an error.
    Unreachable = 2,
}

/// A verdict as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVerdict {
    pub verdict: UpstreamVerdict,
    pub upstream_sigs: Vec<String>,
    pub checked_at: i64,
}

pub struct StateDb {
    path: PathBuf,
    /// The writer: every write but the blockstore's, and reads inside write transactions.
    conn: Mutex<Connection>,
    /// Idle read connections (WAL: readers see the last commit and never wait for the writer), so a
    /// narinfo or block lookup never queues behind an indexing transaction.
    readers: Mutex<Vec<Connection>>,
    /// Every write to the `blocks` table ([`blockstore`]): bulk inserts, LRU touches, evictions.
    block_writer: Mutex<Connection>,
    /// Never writes: its `PRAGMA data_version` moves when any other connection commits.
    watcher: Mutex<Connection>,
}

/// Opens (`create`: or creates) the state DB. Only [`StateDb::open`] creates it: a reader opened
/// later, after the file went away, fails (and `/health` says so) instead of silently making a new,
/// empty database that every later read would use.
fn connect(path: &Path, create: bool) -> Result<Connection, StateError> {
    use rusqlite::OpenFlags;
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(crate::timeouts::SQLITE_BUSY)?;
    // The state code has ~30 cached statements and rusqlite keeps 16: past that, LRU eviction made
    // the per-block lookups of a peer's fetch re-parse their SQL (~1 % of the serving daemon's CPU).
    conn.set_prepared_statement_cache_capacity(64);
    // 64 KiB pages (SQLite's largest; takes effect only on a new file, before WAL is on): a
    // fetched block (≤ 256 KiB) is 1–4 pages instead of 16–64, so storing a 1 GiB fetch takes 16×
    // fewer WAL frames, checksums and write calls (the block writer's CPU per GiB fell by a third).
    conn.pragma_update(None, "page_size", 65536)?;
    // SQLite's default cache is 2 MiB; at 64 KiB pages that is 32 pages. 8 MiB per connection.
    conn.pragma_update(None, "cache_size", -8192)?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    // Checkpoint every 16 MiB of WAL (SQLite counts pages: its default of 1000 was 4 MiB at 4 KiB
    // pages and would be 64 MiB at 64 KiB). A checkpoint fsyncs, and the block writer waits for it
    // while fetched blocks queue up: 16 MiB ones let a 1 GiB fetch run at 159–169 MB/s against
    // 128–143 with 64 MiB ones (same run, disk doing 420 MB/s of synced writes).
    let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    conn.pragma_update(None, "wal_autocheckpoint", (16 << 20) / page.max(512))?;
    conn.pragma_update(None, "synchronous", "normal")?;
    conn.pragma_update(None, "foreign_keys", "on")?;
    Ok(conn)
}

pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl StateDb {
    /// Opens (creating and migrating) `<state_dir>/peerix.sqlite`.
    pub fn open(state_dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StateError::Dir { path: state_dir.to_owned(), source })?;
        let path = state_dir.join(STATE_DB_FILE);
        let open = |e: StateError| match e {
            StateError::Sql(source) => StateError::Open { path: path.clone(), source },
            other => other,
        };
        let mut conn = connect(&path, true).map_err(open)?;
        schema::migrate(&mut conn, &path).map_err(open)?;
        let block_writer = connect(&path, false).map_err(open)?;
        let watcher = connect(&path, false).map_err(open)?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            block_writer: Mutex::new(block_writer),
            watcher: Mutex::new(watcher),
        })
    }

    fn write<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StateError> {
        let conn = self.conn.lock().map_err(|_| StateError::Poisoned)?;
        Ok(f(&conn)?)
    }

    /// Runs a read on a pooled connection of its own (opened on demand, [`READERS`] kept).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StateError> {
        let pooled = self.readers.lock().map_err(|_| StateError::Poisoned)?.pop();
        let conn = match pooled {
            Some(c) => c,
            None => connect(&self.path, false)?,
        };
        let out = f(&conn);
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < READERS
        {
            pool.push(conn);
        }
        Ok(out?)
    }

    fn with_block_writer<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T, StateError> {
        let mut conn = self.block_writer.lock().map_err(|_| StateError::Poisoned)?;
        Ok(f(&mut conn)?)
    }

    /// A number that changes whenever anything (this process or another) commits to the state DB:
    /// results derived from the tables stay valid while it does not. ~1 µs, no table read.
    pub fn version(&self) -> Result<i64, StateError> {
        let conn = self.watcher.lock().map_err(|_| StateError::Poisoned)?;
        Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// Opens the state DB afresh, read-only, and reads its schema: fails when the file has gone,
    /// become unreadable or is not a database, which the daemon's open connections would not
    /// notice. For `/health`; ~100 µs.
    pub fn probe(&self) -> Result<(), StateError> {
        let conn = Connection::open_with_flags(&self.path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))?;
        Ok(())
    }

    /// SQLite's own consistency check of the file (b-trees, indexes, constraints; `quick_check`
    /// skips only the O(N log N) index-content comparison): empty when the file is sound.
    pub fn quick_check(&self) -> Result<Vec<String>, StateError> {
        self.read(|c| {
            let mut stmt = c.prepare("PRAGMA quick_check")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.into_iter().filter(|r| r != "ok").collect())
        })
    }

    /// Remembers that `path` has NAR `nar_hash` (idempotent). A path we had from a peer is local now.
    pub fn record_local_path(&self, path: &StorePath, nar_hash: &NarHash, nar_size: u64) -> Result<(), StateError> {
        self.write(|c| {
            c.prepare_cached(
                "INSERT INTO paths (hash32, store_path, nar_hash, nar_size, origin, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, 'local', ?5) \
                 ON CONFLICT(hash32) DO UPDATE SET store_path = excluded.store_path, \
                   nar_hash = excluded.nar_hash, nar_size = excluded.nar_size, updated_at = excluded.updated_at, \
                   origin = 'local', narinfo = NULL \
                 WHERE paths.nar_hash != excluded.nar_hash OR paths.store_path != excluded.store_path \
                   OR paths.origin != 'local'",
            )?
            .execute(params![
                path.hash().as_str(),
                path.to_string(),
                nar_hash.to_nix32(),
                nar_size as i64,
                now_secs()
            ])?;
            Ok(())
        })
    }

    /// Store paths we have seen with this NAR hash.
    pub fn paths_by_nar_hash(&self, nar_hash: &NarHash) -> Result<Vec<StorePath>, StateError> {
        self.read(|c| {
            let rows = c
                .prepare_cached("SELECT store_path FROM paths WHERE nar_hash = ?1")?
                .query_map([nar_hash.to_nix32()], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.iter().filter_map(|p| StorePath::parse(p).ok()).collect())
        })
    }

    /// The stored verdict for `path` with `nar_hash`: the verdict, upstream's Sig values, and when
    /// it was taken (unix seconds).
    pub fn upstream_verdict(&self, path: &StorePath, nar_hash: &NarHash) -> Result<Option<StoredVerdict>, StateError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT verdict, upstream_sigs, checked_at FROM verdicts WHERE store_path = ?1 AND nar_hash = ?2",
            )?
            .query_row(params![path.to_string(), nar_hash.to_nix32()], |r| {
                let verdict = match r.get::<_, i64>(0)? {
                    1 => UpstreamVerdict::Same,
                    2 => UpstreamVerdict::Unreachable,
                    _ => UpstreamVerdict::Absent,
                };
                let sigs: String = r.get(1)?;
                Ok(StoredVerdict {
                    verdict,
                    upstream_sigs: sigs.split_whitespace().map(str::to_owned).collect(),
                    checked_at: r.get(2)?,
                })
            })
            .optional()
        })
    }

    pub fn set_upstream_verdict(
        &self,
        path: &StorePath,
        nar_hash: &NarHash,
        verdict: UpstreamVerdict,
        upstream_sigs: &[String],
    ) -> Result<(), StateError> {
        self.write(|c| {
            c.prepare_cached(
                "INSERT INTO verdicts (store_path, nar_hash, verdict, upstream_sigs, checked_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT(store_path) DO UPDATE SET nar_hash = excluded.nar_hash, verdict = excluded.verdict, \
                   upstream_sigs = excluded.upstream_sigs, checked_at = excluded.checked_at",
            )?
            .execute(params![
                path.to_string(),
                nar_hash.to_nix32(),
                verdict as i64,
                upstream_sigs.join(" "),
                now_secs()
            ])?;
            Ok(())
        })
    }

    /// Drops the stored upstream verdict on `path`, so the gate asks upstream again.
    pub fn forget_upstream_verdict(&self, path: &StorePath) -> Result<(), StateError> {
        self.write(|c| {
            c.prepare_cached("DELETE FROM verdicts WHERE store_path = ?1")?.execute([path.to_string()])?;
            Ok(())
        })
    }

    /// Remembers a narinfo accepted from peers (origin `peer`), so its NAR URL still resolves after a
    /// restart (nix keeps narinfos for 30 days; [`Self::expire_peer_paths`] forgets it after that).
    /// Never overwrites a local path's row.
    pub fn record_peer_path(
        &self,
        path: &StorePath,
        nar_hash: &NarHash,
        nar_size: u64,
        root: &cid::Cid,
        narinfo: &str,
    ) -> Result<(), StateError> {
        self.write(|c| {
            c.prepare_cached(
                "INSERT INTO paths (hash32, store_path, nar_hash, nar_size, origin, updated_at, root_cid, narinfo) \
                 VALUES (?1, ?2, ?3, ?4, 'peer', ?5, ?6, ?7) \
                 ON CONFLICT(hash32) DO UPDATE SET store_path = excluded.store_path, nar_hash = excluded.nar_hash, \
                   nar_size = excluded.nar_size, updated_at = excluded.updated_at, root_cid = excluded.root_cid, \
                   narinfo = excluded.narinfo \
                 WHERE paths.origin = 'peer'",
            )?
            .execute(params![
                path.hash().as_str(),
                path.to_string(),
                nar_hash.to_nix32(),
                nar_size as i64,
                now_secs(),
                root.to_bytes(),
                narinfo
            ])?;
            Ok(())
        })
    }

    /// A narinfo accepted from peers for this NAR hash, and the root its blocks were under.
    pub fn peer_path_by_nar_hash(&self, nar_hash: &NarHash) -> Result<Option<(String, Vec<u8>)>, StateError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT narinfo, root_cid FROM paths WHERE nar_hash = ?1 AND origin = 'peer' \
                 AND narinfo IS NOT NULL AND root_cid IS NOT NULL LIMIT 1",
            )?
            .query_row([nar_hash.to_nix32()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
        })
    }

    /// Forgets peer narinfos accepted more than `max_age` seconds ago (each acceptance renews the
    /// row; nix keeps a narinfo 30 days). The index scan calls it.
    pub fn expire_peer_paths(&self, max_age: i64) -> Result<usize, StateError> {
        self.write(|c| {
            c.prepare_cached("DELETE FROM paths WHERE origin = 'peer' AND updated_at < ?1")?
                .execute([now_secs() - max_age])
        })
    }

    /// (paths known, upstream verdicts stored).
    pub fn counts(&self) -> Result<(u64, u64), StateError> {
        self.read(|c| {
            let paths: i64 = c.query_row("SELECT count(*) FROM paths", [], |r| r.get(0))?;
            let verdicts: i64 = c.query_row("SELECT count(*) FROM verdicts", [], |r| r.get(0))?;
            Ok((paths as u64, verdicts as u64))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_and_paths_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = StorePath::parse("/nix/store/qxkmhhvi8i3pc831vvw023h4mhzpfflr-with-refs").unwrap();
        let h = NarHash([3; 32]);
        {
            let db = StateDb::open(dir.path()).unwrap();
            db.record_local_path(&p, &h, 792).unwrap();
            db.record_local_path(&p, &h, 792).unwrap();
            db.set_upstream_verdict(&p, &h, UpstreamVerdict::Same, &["k:sig".to_owned()]).unwrap();
        }
        let db = StateDb::open(dir.path()).unwrap();
        assert_eq!(db.paths_by_nar_hash(&h).unwrap(), vec![p.clone()]);
        let stored = db.upstream_verdict(&p, &h).unwrap().unwrap();
        assert_eq!(stored.verdict, UpstreamVerdict::Same);
        assert_eq!(stored.upstream_sigs, vec!["k:sig".to_owned()]);
        // A verdict is about one NarHash: another hash for the same path has none.
        assert_eq!(db.upstream_verdict(&p, &NarHash([4; 32])).unwrap(), None);
        assert_eq!(db.counts().unwrap(), (1, 1));
    }

    /// A peer's narinfo for a path nix never registered goes once it is older than the TTL;
    /// a local path's row never does.
    #[test]
    fn peer_narinfos_expire_and_local_rows_stay() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let local = StorePath::parse("/nix/store/qxkmhhvi8i3pc831vvw023h4mhzpfflr-local").unwrap();
        let peer = StorePath::parse("/nix/store/0xkmhhvi8i3pc831vvw023h4mhzpfflr-from-a-peer").unwrap();
        let root = crate::ipld::raw_cid(b"x");
        db.record_local_path(&local, &NarHash([1; 32]), 10).unwrap();
        db.record_peer_path(&peer, &NarHash([2; 32]), 10, &root, "StorePath: x\n").unwrap();
        assert_eq!(db.expire_peer_paths(3600).unwrap(), 0, "accepted just now");
        assert!(db.peer_path_by_nar_hash(&NarHash([2; 32])).unwrap().is_some());
        assert_eq!(db.expire_peer_paths(-1).unwrap(), 1, "older than a TTL that ended a second from now");
        assert!(db.peer_path_by_nar_hash(&NarHash([2; 32])).unwrap().is_none());
        assert_eq!(db.paths_by_nar_hash(&NarHash([1; 32])).unwrap(), vec![local]);
    }
}
