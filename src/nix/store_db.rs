//! Read-only view of Nix's own database (`<store-root>/nix/var/nix/db/db.sqlite`), as harmonia reads it.
//!
//! Tables used: `ValidPaths(id, path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca)` and
//! `Refs(referrer, reference)`. `hash` is `sha256:<base16>`; `sigs` is space-separated. We never
//! write here: Nix owns the file and its locks.
//!
//! Concurrency: a small pool of read-only connections behind a std `Mutex` (no `.await` while one is
//! held). A lookup is an index seek plus a references join, ~30 µs on a 100k-path store, so it runs on
//! the calling task; handing it to `spawn_blocking` would cost as much as the query.
//! [`StoreDb::stamp`] tells when Nix's DB changed without taking a lock: the (mtime, size, inode) of
//! the DB file and its WAL, two `stat`s, which change on every commit (WAL append) and checkpoint
//! (DB write), so callers can cache what they derived from the DB and drop it the moment the store
//! changes.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::hash::NarHash;
use super::store_path::{STORE_DIR, StoreHash, StorePath};
use crate::timeouts::SQLITE_BUSY;

/// Connections kept for reuse; more may be opened under load and are then closed after use.
const POOL_SIZE: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum StoreDbError {
    #[error("cannot open Nix database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("query on Nix database failed")]
    Query(#[from] rusqlite::Error),
    #[error("Nix database row for {0} is malformed")]
    Row(String),
}

/// One valid store path as Nix's DB records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// `ValidPaths.id`: changes when a path is deleted and registered again.
    pub id: i64,
    pub path: StorePath,
    pub nar_hash: NarHash,
    pub nar_size: u64,
    pub references: Vec<StorePath>,
    /// Base name of the deriver.
    pub deriver: Option<String>,
    pub sigs: Vec<String>,
    pub ca: Option<String>,
    pub registration_time: i64,
}

pub struct StoreDb {
    db_path: PathBuf,
    pool: Mutex<Vec<Connection>>,
    /// The last [`Self::stamp`] and when it was taken.
    stamp: Mutex<Option<(Instant, Option<[i64; 6]>)>>,
}

/// How long a [`StoreDb::stamp`] is reused. Nix's commits take milliseconds, and an answer given
/// 1 ms before a commit is as stale as one given from a 1 ms old stamp; under load (100 000
/// narinfos/s) this saves two `statx` calls per request: 12.2 -> 9.7 µs of CPU per hit under wrk.
const STAMP_REUSE: Duration = Duration::from_millis(1);

impl StoreDb {
    /// `store_root` is `/` for the machine's store, or the directory of a chroot store.
    pub fn new(store_root: &Path) -> Self {
        Self {
            db_path: store_root.join("nix/var/nix/db/db.sqlite"),
            pool: Mutex::new(Vec::new()),
            stamp: Mutex::new(None),
        }
    }

    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// A connection, and whether it may be pooled.
    ///
    /// Nix's DB is in WAL mode, and a WAL reader needs the shared-memory index `db.sqlite-shm`.
    /// Nix creates it and deletes it when its last connection closes (an idle NixOS machine has
    /// none); a reader that may not write `nix/var/nix/db` (the NixOS service: a dynamic user under
    /// `ProtectSystem=strict`) cannot create it, and SQLite answers "attempt to write a readonly
    /// database". Only then do we read the DB file alone (`immutable=1`): with no index there is no
    /// WAL, so the file holds every commit. Such a connection is used for one call and closed, as it
    /// would not see later commits; while any normal connection is open (pooled ones stay open),
    /// its lock keeps Nix from deleting the index, so normal reading takes over from then on.
    fn open(&self) -> Result<(Connection, bool), StoreDbError> {
        let err = |source| StoreDbError::Open { path: self.db_path.clone(), source };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.db_path, flags).map_err(err)?;
        conn.busy_timeout(SQLITE_BUSY)?;
        match conn.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ReadOnly => {
                let uri = format!("file:{}?immutable=1", uri_path(&self.db_path));
                let conn = Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI).map_err(err)?;
                Ok((conn, false))
            }
            _ => Ok((conn, true)),
        }
    }

    /// Runs `f` on a pooled connection. A DB file that exists but has no schema yet (nix is
    /// creating it: a new chroot store's first command) reads as empty, like a missing one.
    fn with_conn<T: Default>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreDbError>) -> Result<T, StoreDbError> {
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        let (conn, keep) = match pooled {
            Some(c) => (c, true),
            None => self.open()?,
        };
        let out = match f(&conn) {
            Err(StoreDbError::Query(rusqlite::Error::SqliteFailure(_, Some(msg))))
                if msg.starts_with("no such table") =>
            {
                Ok(T::default())
            }
            other => other,
        };
        if keep
            && let Ok(mut p) = self.pool.lock()
            && p.len() < POOL_SIZE
        {
            p.push(conn);
        }
        out
    }

    /// Opens Nix's DB afresh and reads one row: fails when it is missing or unreadable. For `/health`.
    pub fn probe(&self) -> Result<(), StoreDbError> {
        let (conn, _) = self.open()?;
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))?;
        Ok(())
    }

    /// True when the DB file exists (a machine without Nix has none; we then serve nothing).
    pub fn exists(&self) -> bool {
        self.db_path.exists()
    }

    /// Changes whenever Nix commits to its DB or checkpoints it, without taking a lock or touching
    /// SQLite: ~1 µs, where a `PRAGMA data_version` behind a mutex shared by every request cost
    /// ~10 µs and capped narinfo throughput; taken at most once per [`STAMP_REUSE`]. `None` if the
    /// DB does not exist.
    pub fn stamp(&self) -> Option<[i64; 6]> {
        let now = Instant::now();
        let mut last = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, stamp)) = *last
            && now.duration_since(at) < STAMP_REUSE
        {
            return stamp;
        }
        let stamp = self.read_stamp();
        *last = Some((now, stamp));
        stamp
    }

    fn read_stamp(&self) -> Option<[i64; 6]> {
        use std::os::unix::fs::MetadataExt;
        let db = std::fs::metadata(&self.db_path).ok()?;
        let mut wal_path = self.db_path.clone().into_os_string();
        wal_path.push("-wal");
        let (wal_mtime, wal_size, wal_ino) = match std::fs::metadata(&wal_path) {
            Ok(m) => (m.mtime() * 1_000_000_000 + m.mtime_nsec(), m.size() as i64, m.ino() as i64),
            Err(_) => (0, -1, 0),
        };
        Some([
            db.mtime() * 1_000_000_000 + db.mtime_nsec(),
            db.size() as i64,
            db.ino() as i64,
            wal_mtime,
            wal_size,
            wal_ino,
        ])
    }

    /// The valid path whose hash part is `hash`, if any. Uses the unique index on `path`: the first
    /// row at or after `/nix/store/<hash>` is ours only if it starts with `/nix/store/<hash>-`.
    pub fn query_by_hash(&self, hash: &StoreHash) -> Result<Option<PathInfo>, StoreDbError> {
        if !self.exists() {
            return Ok(None);
        }
        let lower = format!("{STORE_DIR}/{hash}");
        let prefix = format!("{lower}-");
        self.with_conn(|conn| {
            let row = conn
                .prepare_cached(
                    "SELECT id, path, hash, deriver, narSize, sigs, ca, registrationTime \
                     FROM ValidPaths WHERE path >= ?1 ORDER BY path LIMIT 1",
                )?
                .query_row([&lower], Row::from_sql)
                .optional()?;
            match row {
                Some(row) if row.path.starts_with(&prefix) => Ok(Some(row.into_info(conn)?)),
                _ => Ok(None),
            }
        })
    }

    /// Every valid path whose NAR has this hash (a full scan: `hash` has no index in Nix's schema;
    /// callers keep their own index and come here only on a miss).
    pub fn query_by_nar_hash(&self, nar_hash: &NarHash) -> Result<Vec<PathInfo>, StoreDbError> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        self.with_conn(|conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT id, path, hash, deriver, narSize, sigs, ca, registrationTime \
                     FROM ValidPaths WHERE hash = ?1",
                )?
                .query_map([nar_hash.to_db_string()], Row::from_sql)?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(|r| r.into_info(conn)).collect()
        })
    }

    /// Every valid path: (ValidPaths.id, path, NarSize), in id order. ~50 ms for 100k paths.
    pub fn list_paths(&self) -> Result<Vec<(i64, StorePath, u64)>, StoreDbError> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        self.with_conn(|conn| {
            let mut stmt = conn.prepare("SELECT id, path, narSize FROM ValidPaths ORDER BY id")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<i64>>(2)?.unwrap_or(0)))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, path, size) = row?;
                // A row Nix itself would reject is skipped, not fatal to the whole scan.
                if let Ok(p) = StorePath::parse(&path) {
                    out.push((id, p, size.max(0) as u64));
                }
            }
            Ok(out)
        })
    }

    /// Number of valid paths and the sum of their NAR sizes.
    pub fn counts(&self) -> Result<(u64, u64), StoreDbError> {
        if !self.exists() {
            return Ok((0, 0));
        }
        self.with_conn(|conn| {
            Ok(conn.query_row("SELECT count(*), coalesce(sum(narSize), 0) FROM ValidPaths", [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })?)
        })
    }
}

struct Row {
    id: i64,
    path: String,
    hash: String,
    deriver: Option<String>,
    nar_size: Option<i64>,
    sigs: Option<String>,
    ca: Option<String>,
    registration_time: i64,
}

impl Row {
    fn from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            path: r.get(1)?,
            hash: r.get(2)?,
            deriver: r.get(3)?,
            nar_size: r.get(4)?,
            sigs: r.get(5)?,
            ca: r.get(6)?,
            registration_time: r.get::<_, Option<i64>>(7)?.unwrap_or(0),
        })
    }

    fn into_info(self, conn: &Connection) -> Result<PathInfo, StoreDbError> {
        let bad = || StoreDbError::Row(self.path.clone());
        let path = StorePath::parse(&self.path).map_err(|_| bad())?;
        let nar_hash = NarHash::parse(&self.hash).map_err(|_| bad())?;
        let nar_size = self.nar_size.filter(|&n| n > 0).ok_or_else(bad)? as u64;
        let references = conn
            .prepare_cached("SELECT v.path FROM Refs r JOIN ValidPaths v ON r.reference = v.id WHERE r.referrer = ?1")?
            .query_map([self.id], |r| r.get::<_, String>(0))?
            .map(|p| p.map_err(StoreDbError::from).and_then(|p| StorePath::parse(&p).map_err(|_| bad())))
            .collect::<Result<Vec<_>, _>>()?;
        let deriver = self
            .deriver
            .as_deref()
            .and_then(|d| d.strip_prefix(STORE_DIR))
            .and_then(|d| d.strip_prefix('/'))
            .map(str::to_owned);
        let sigs = self.sigs.as_deref().unwrap_or("").split_whitespace().map(str::to_owned).collect();
        let mut references = references;
        references.sort();
        Ok(PathInfo {
            id: self.id,
            path,
            nar_hash,
            nar_size,
            references,
            deriver,
            sigs,
            ca: self.ca.filter(|c| !c.is_empty()),
            registration_time: self.registration_time,
        })
    }
}

/// `path` as the path of an SQLite `file:` URI: `%`, `?` and `#` escaped, the rest as is.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}
