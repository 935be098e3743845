//! The block index in the state database: which local store paths are published, their chunks
//! (`local_chunks`: CID → path, NAR offset, length — the bytes stay in /nix/store) and their
//! dag-pb nodes; [`super::progress`] keeps the totals and scan progress. One path's index is
//! written in one transaction, so a kill -9 at any moment leaves each path either fully indexed
//! or not at all, and the next scan resumes.

use std::collections::HashMap;

use cid::Cid;
use rusqlite::{OptionalExtension, params};

use super::{StateDb, StateError, now_secs};
use crate::nix::hash::NarHash;
use crate::nix::store_path::StorePath;

/// Index status of a local path (serialized as its column value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Gated in and chunked: served on every interface.
    Published,
    /// Gated out: never served; re-checked after the negative TTL.
    Private,
    /// Could not be read or did not match Nix's NarHash: re-tried on the next scan.
    Failed,
    /// Indexed, but the gate's configuration changed since: not served until checked again.
    Recheck,
}

impl Status {
    /// Its root is (still) announced: a verdict that turns private must withdraw it.
    pub fn is_shared(self) -> bool {
        matches!(self, Status::Published | Status::Recheck)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Published => "published",
            Status::Private => "private",
            Status::Failed => "failed",
            Status::Recheck => "recheck",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "published" => Status::Published,
            "private" => Status::Private,
            "failed" => Status::Failed,
            "recheck" => Status::Recheck,
            _ => return None,
        })
    }
}

/// What a scan needs to know about an already indexed path.
#[derive(Debug, Clone)]
pub struct Seen {
    pub nix_id: i64,
    pub status: Status,
    pub checked_at: i64,
}

/// A path ready to be written as published.
pub struct Published<'a> {
    pub path: &'a StorePath,
    pub nix_id: i64,
    pub nar_hash: &'a NarHash,
    pub nar_size: u64,
    pub verdict: &'a str,
    pub root: Cid,
    /// (NAR offset, length, CID) in NAR order.
    pub chunks: &'a [(u64, u32, Cid)],
    pub nodes: &'a [(Cid, Vec<u8>)],
    /// The files' fingerprint when the chunks were known to be their bytes.
    pub fingerprint: Option<[u8; 32]>,
}

/// One path as `/api/paths/<hash32>` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PathEntry {
    pub store_path: String,
    pub nar_hash: String,
    pub nar_size: u64,
    pub origin: String,
    pub status: Option<Status>,
    pub reason: Option<String>,
    pub verdict: Option<String>,
    pub root_cid: Option<String>,
    pub chunk_count: Option<u64>,
}

impl StateDb {
    /// Every path a scan has decided about, by hash.
    pub fn seen_paths(&self) -> Result<HashMap<String, Seen>, StateError> {
        self.read(|c| {
            let mut stmt =
                c.prepare("SELECT hash32, nix_id, status, checked_at FROM paths WHERE status IS NOT NULL")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?, r.get::<_, String>(2)?, r.get(3)?))
            })?;
            let mut out = HashMap::new();
            for row in rows {
                let (hash, id, status, checked): (String, Option<i64>, String, Option<i64>) = row?;
                if let Some(status) = Status::parse(&status) {
                    out.insert(hash, Seen { nix_id: id.unwrap_or(-1), status, checked_at: checked.unwrap_or(0) });
                }
            }
            Ok(out)
        })
    }

    /// Writes a published path with its chunks and nodes, replacing what was there, atomically.
    pub fn save_published(&self, p: &Published<'_>) -> Result<(), StateError> {
        let hash = p.path.hash();
        let mut conn = self.conn.lock().map_err(|_| StateError::Poisoned)?;
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM local_chunks WHERE hash32 = ?1", [hash.as_str()])?;
        tx.execute("DELETE FROM local_nodes WHERE hash32 = ?1", [hash.as_str()])?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO local_chunks (hash32, nar_offset, length, cid) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (off, len, cid) in p.chunks {
                ins.execute(params![hash.as_str(), *off as i64, *len, cid.to_bytes()])?;
            }
            let mut ins =
                tx.prepare_cached("INSERT OR REPLACE INTO local_nodes (cid, hash32, data) VALUES (?1, ?2, ?3)")?;
            for (cid, data) in p.nodes {
                ins.execute(params![cid.to_bytes(), hash.as_str(), data])?;
            }
        }
        upsert_path(
            &tx,
            p.path,
            p.nar_hash,
            p.nar_size,
            p.nix_id,
            Status::Published,
            None,
            Some(p.verdict),
            Some((&p.root, p.chunks.len() as u64)),
        )?;
        tx.execute(
            "UPDATE paths SET fingerprint = ?2 WHERE hash32 = ?1",
            params![hash.as_str(), p.fingerprint.map(|f| f.to_vec())],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records a path that is not published (private or failed), dropping any index it had.
    /// Returns the root it had if it was shareable until now (its withdrawal is to be announced).
    pub fn save_unpublished(
        &self,
        path: &StorePath,
        nar_hash: &NarHash,
        nar_size: u64,
        nix_id: i64,
        status: Status,
        reason: &str,
    ) -> Result<Option<Cid>, StateError> {
        let mut conn = self.conn.lock().map_err(|_| StateError::Poisoned)?;
        let tx = conn.transaction()?;
        let was = shared_root(&tx, path.hash().as_str())?;
        tx.execute("DELETE FROM local_chunks WHERE hash32 = ?1", [path.hash().as_str()])?;
        tx.execute("DELETE FROM local_nodes WHERE hash32 = ?1", [path.hash().as_str()])?;
        upsert_path(&tx, path, nar_hash, nar_size, nix_id, status, Some(reason), None, None)?;
        tx.commit()?;
        Ok(was)
    }

    /// A path that passed the gate again after a [`Status::Recheck`]; returns its root.
    pub fn confirm_published(&self, hash32: &str, verdict: &str) -> Result<Option<Cid>, StateError> {
        self.write(|c| {
            c.execute(
                "UPDATE paths SET status = 'published', verdict = ?2, reason = NULL, checked_at = ?3 WHERE hash32 = ?1",
                params![hash32, verdict, now_secs()],
            )?;
            let raw: Option<Option<Vec<u8>>> =
                c.query_row("SELECT root_cid FROM paths WHERE hash32 = ?1", [hash32], |r| r.get(0)).optional()?;
            Ok(raw.flatten().and_then(|b| Cid::try_from(b).ok()))
        })
    }

    /// Forgets a path that left the store (garbage-collected). Returns the root it had if it was
    /// shareable until now.
    pub fn forget_path(&self, hash32: &str) -> Result<Option<Cid>, StateError> {
        let mut conn = self.conn.lock().map_err(|_| StateError::Poisoned)?;
        let tx = conn.transaction()?;
        let was = shared_root(&tx, hash32)?;
        tx.execute("DELETE FROM local_chunks WHERE hash32 = ?1", [hash32])?;
        tx.execute("DELETE FROM local_nodes WHERE hash32 = ?1", [hash32])?;
        tx.execute("DELETE FROM paths WHERE hash32 = ?1", [hash32])?;
        tx.commit()?;
        Ok(was)
    }

    /// Marks every published path for a gate re-check when the gate's configuration (trusted keys,
    /// upstream, serve-private) differs from the one they were published under (by this process
    /// before a restart, or by another one since). Returns the paths (hash32, root) that were
    /// published until now.
    pub fn reconcile_gate(&self, gate_fingerprint: &str) -> Result<Vec<(String, Option<Cid>)>, StateError> {
        let mut conn = self.conn.lock().map_err(|_| StateError::Poisoned)?;
        let tx = conn.transaction()?;
        let old: Option<String> =
            tx.query_row("SELECT value FROM meta WHERE key = 'gate'", [], |r| r.get(0)).optional()?;
        let mut changed = Vec::new();
        if old.as_deref() != Some(gate_fingerprint) {
            if old.is_some() {
                changed = tx
                    .prepare("SELECT hash32, root_cid FROM paths WHERE status = 'published'")?
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<Vec<u8>>>(1)?)))?
                    .map(|r| r.map(|(h, c)| (h, c.and_then(|c| Cid::try_from(c).ok()))))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                tx.execute("UPDATE paths SET status = 'recheck' WHERE status = 'published'", [])?;
                // Private verdicts may now be wrong too: ask again on the next scan.
                tx.execute("UPDATE paths SET checked_at = 0 WHERE status = 'private'", [])?;
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('gate', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [gate_fingerprint],
            )?;
        }
        tx.commit()?;
        Ok(changed)
    }

    /// Where the bytes of a chunk are: (hash32, NAR offset, length) of published paths holding it.
    pub fn chunk_locations(&self, cid: &Cid) -> Result<Vec<(String, u64, u32)>, StateError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT l.hash32, l.nar_offset, l.length FROM local_chunks l JOIN paths p ON p.hash32 = l.hash32 \
                 WHERE l.cid = ?1 AND p.status = 'published'",
            )?
            .query_map([cid.to_bytes()], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?)))?
            .collect()
        })
    }

    /// A dag-pb node of published local NARs: (hash32 of a path holding it, node bytes), for the
    /// first few paths that do.
    pub fn local_node(&self, cid: &Cid) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT n.hash32, n.data FROM local_nodes n JOIN paths p ON p.hash32 = n.hash32 \
                 WHERE n.cid = ?1 AND p.status = 'published' LIMIT 8",
            )?
            .query_map([cid.to_bytes()], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
        })
    }

    /// Every chunk of a path, in NAR order: (offset, length, CID).
    pub fn chunks_of(&self, hash32: &str) -> Result<Vec<(u64, u32, Cid)>, StateError> {
        self.read(|c| {
            let rows = c
                .prepare_cached(
                    "SELECT nar_offset, length, cid FROM local_chunks WHERE hash32 = ?1 ORDER BY nar_offset",
                )?
                .query_map([hash32], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get::<_, Vec<u8>>(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.into_iter().filter_map(|(o, l, c)| Cid::try_from(c).ok().map(|c| (o, l, c))).collect())
        })
    }

    /// Hashes of every published path (for `peerix verify`).
    pub fn published_paths(&self) -> Result<Vec<String>, StateError> {
        self.read(|c| {
            c.prepare("SELECT hash32 FROM paths WHERE status = 'published' ORDER BY hash32")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
    }

    pub fn path_entry(&self, hash32: &str) -> Result<Option<PathEntry>, StateError> {
        self.read(|c| {
            c.query_row(
                "SELECT store_path, nar_hash, nar_size, origin, status, reason, verdict, root_cid, chunk_count \
                 FROM paths WHERE hash32 = ?1",
                [hash32],
                |r| {
                    Ok(PathEntry {
                        store_path: r.get(0)?,
                        nar_hash: format!("sha256:{}", r.get::<_, String>(1)?),
                        nar_size: r.get::<_, i64>(2)? as u64,
                        origin: r.get(3)?,
                        status: r.get::<_, Option<String>>(4)?.as_deref().and_then(Status::parse),
                        reason: r.get(5)?,
                        verdict: r.get(6)?,
                        root_cid: r
                            .get::<_, Option<Vec<u8>>>(7)?
                            .and_then(|b| Cid::try_from(b).ok())
                            .map(|c| c.to_string()),
                        chunk_count: r.get::<_, Option<i64>>(8)?.map(|n| n as u64),
                    })
                },
            )
            .optional()
        })
    }

    /// The NAR root of a published path.
    pub fn published_root(&self, hash32: &str) -> Result<Option<Cid>, StateError> {
        let raw: Option<Option<Vec<u8>>> = self.read(|c| {
            c.prepare_cached("SELECT root_cid FROM paths WHERE hash32 = ?1 AND status = 'published'")?
                .query_row([hash32], |r| r.get(0))
                .optional()
        })?;
        Ok(raw.flatten().and_then(|b| Cid::try_from(b).ok()))
    }

    /// The fingerprint of a published path's files recorded when its chunks were known to be
    /// their bytes ([`crate::nix::nar_layout::NarLayout::fingerprint`]).
    pub fn fingerprint(&self, hash32: &str) -> Result<Option<[u8; 32]>, StateError> {
        self.read(|c| {
            let raw: Option<Option<Vec<u8>>> = c
                .prepare_cached("SELECT fingerprint FROM paths WHERE hash32 = ?1 AND status = 'published'")?
                .query_row([hash32], |r| r.get(0))
                .optional()?;
            Ok(raw.flatten().and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok()))
        })
    }
}

/// The root of `hash32` if it is published (or published and awaiting a re-check).
fn shared_root(tx: &rusqlite::Transaction<'_>, hash32: &str) -> rusqlite::Result<Option<Cid>> {
    let raw: Option<Option<Vec<u8>>> = tx
        .query_row(
            "SELECT root_cid FROM paths WHERE hash32 = ?1 AND status IN ('published', 'recheck')",
            [hash32],
            |r| r.get(0),
        )
        .optional()?;
    Ok(raw.flatten().and_then(|b| Cid::try_from(b).ok()))
}

#[allow(clippy::too_many_arguments)]
fn upsert_path(
    tx: &rusqlite::Transaction<'_>,
    path: &StorePath,
    nar_hash: &NarHash,
    nar_size: u64,
    nix_id: i64,
    status: Status,
    reason: Option<&str>,
    verdict: Option<&str>,
    root: Option<(&Cid, u64)>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO paths (hash32, store_path, nar_hash, nar_size, origin, updated_at, nix_id, status, reason, \
           verdict, root_cid, chunk_count, checked_at) \
         VALUES (?1, ?2, ?3, ?4, 'local', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?5) \
         ON CONFLICT(hash32) DO UPDATE SET store_path = excluded.store_path, nar_hash = excluded.nar_hash, \
           nar_size = excluded.nar_size, updated_at = excluded.updated_at, nix_id = excluded.nix_id, \
           origin = 'local', narinfo = NULL, status = excluded.status, reason = excluded.reason, verdict = excluded.verdict, \
           root_cid = excluded.root_cid, chunk_count = excluded.chunk_count, checked_at = excluded.checked_at",
    )?
    .execute(params![
        path.hash().as_str(),
        path.to_string(),
        nar_hash.to_nix32(),
        nar_size as i64,
        now_secs(),
        nix_id,
        status.as_str(),
        reason,
        verdict,
        root.map(|(c, _)| c.to_bytes()),
        root.map(|(_, n)| n as i64),
    ])?;
    Ok(())
}
