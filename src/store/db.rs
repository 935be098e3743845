//! The state DB's connections: one writer, a pool of readers, the blockstore's own writer, and
//! a watcher (see [`super`] for why each).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

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

pub struct StateDb {
    pub(super) path: PathBuf,
    /// The writer: every write but the blockstore's, and reads inside write transactions.
    pub(super) conn: Mutex<Connection>,
    /// Idle read connections (WAL: readers see the last commit and never wait for the writer), so a
    /// narinfo or block lookup never queues behind an indexing transaction.
    pub(super) readers: Mutex<Vec<Connection>>,
    /// Every write to the `blocks` table ([`blockstore`]): bulk inserts, LRU touches, evictions.
    pub(super) block_writer: Mutex<Connection>,
    /// Never writes: its `PRAGMA data_version` moves when any other connection commits.
    pub(super) watcher: Mutex<Connection>,
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
        super::schema::migrate(&mut conn, &path).map_err(open)?;
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

    pub(super) fn write<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StateError> {
        let conn = self.conn.lock().map_err(|_| StateError::Poisoned)?;
        Ok(f(&conn)?)
    }

    /// Runs a read on a pooled connection of its own (opened on demand, [`READERS`] kept).
    pub(super) fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StateError> {
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

    pub(super) fn with_block_writer<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
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

    /// (paths known, upstream verdicts stored).
    pub fn counts(&self) -> Result<(u64, u64), StateError> {
        self.read(|c| {
            let paths: i64 = c.query_row("SELECT count(*) FROM paths", [], |r| r.get(0))?;
            let verdicts: i64 = c.query_row("SELECT count(*) FROM verdicts", [], |r| r.get(0))?;
            Ok((paths as u64, verdicts as u64))
        })
    }
}
