//! Bookkeeping around the block index in the state database: totals for status reports, the
//! persisted scan progress (so `peerix status` in another process sees it) and which published
//! paths are due a DHT provider announcement ([`crate::p2p`]'s announcer reads and marks them).

use cid::Cid;
use rusqlite::{OptionalExtension, params};

use super::{StateDb, StateError, now_secs};

/// Totals for status reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IndexStats {
    pub published_paths: u64,
    pub private_paths: u64,
    pub failed_paths: u64,
    pub published_nar_bytes: u64,
    pub chunks: u64,
    pub unique_chunks: u64,
    /// NAR bytes that are covered by a chunk some other (or the same) path already has.
    pub bytes_deduplicated: u64,
}

/// Scan progress, persisted so `peerix status` shows it from any process.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ScanProgress {
    pub running: bool,
    pub started_at: i64,
    pub updated_at: i64,
    pub total_paths: u64,
    pub done_paths: u64,
    pub total_bytes: u64,
    pub done_bytes: u64,
}

impl StateDb {
    pub fn index_stats(&self) -> Result<IndexStats, StateError> {
        self.read(|c| {
            let mut s = IndexStats::default();
            let mut stmt =
                c.prepare("SELECT status, count(*), coalesce(sum(nar_size), 0) FROM paths GROUP BY status")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64))
            })?;
            for row in rows {
                match row? {
                    (Some(st), n, bytes) if st == "published" => {
                        s.published_paths = n;
                        s.published_nar_bytes = bytes;
                    }
                    (Some(st), n, _) if st == "private" => s.private_paths = n,
                    (Some(st), n, _) if st == "failed" => s.failed_paths = n,
                    _ => {}
                }
            }
            let (chunks, total): (i64, i64) =
                c.query_row("SELECT count(*), coalesce(sum(length), 0) FROM local_chunks", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            let (unique, unique_bytes): (i64, i64) = c.query_row(
                "SELECT count(*), coalesce(sum(length), 0) FROM \
                 (SELECT cid, max(length) AS length FROM local_chunks GROUP BY cid)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            s.chunks = chunks as u64;
            s.unique_chunks = unique as u64;
            s.bytes_deduplicated = (total - unique_bytes).max(0) as u64;
            Ok(s)
        })
    }

    /// Published paths never announced to the DHT, or not since `older_than` seconds: (hash32, root).
    pub fn due_announcements(&self, limit: usize, older_than: i64) -> Result<Vec<(String, Cid)>, StateError> {
        self.read(|c| {
            let rows = c
                .prepare_cached(
                    "SELECT hash32, root_cid FROM paths WHERE status = 'published' AND root_cid IS NOT NULL \
                     AND (announced_at IS NULL OR announced_at < ?1) ORDER BY announced_at IS NOT NULL, announced_at \
                     LIMIT ?2",
                )?
                .query_map(params![now_secs() - older_than, limit as i64], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.into_iter().filter_map(|(h, c)| Cid::try_from(c).ok().map(|c| (h, c))).collect())
        })
    }

    pub fn mark_announced(&self, hash32: &str) -> Result<(), StateError> {
        self.write(|c| {
            c.prepare_cached("UPDATE paths SET announced_at = ?2 WHERE hash32 = ?1")?
                .execute(params![hash32, now_secs()])?;
            Ok(())
        })
    }

    pub fn set_scan_progress(&self, p: &ScanProgress) -> Result<(), StateError> {
        self.write(|c| {
            c.prepare_cached(
                "INSERT INTO scan_progress (id, running, started_at, updated_at, total_paths, done_paths, \
                 total_bytes, done_bytes) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(id) DO UPDATE SET \
                 running = excluded.running, started_at = excluded.started_at, updated_at = excluded.updated_at, \
                 total_paths = excluded.total_paths, done_paths = excluded.done_paths, \
                 total_bytes = excluded.total_bytes, done_bytes = excluded.done_bytes",
            )?
            .execute(params![
                p.running,
                p.started_at,
                p.updated_at,
                p.total_paths as i64,
                p.done_paths as i64,
                p.total_bytes as i64,
                p.done_bytes as i64
            ])?;
            Ok(())
        })
    }

    pub fn scan_progress(&self) -> Result<ScanProgress, StateError> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT running, started_at, updated_at, total_paths, done_paths, total_bytes, done_bytes \
                 FROM scan_progress WHERE id = 1",
                [],
                |r| {
                    Ok(ScanProgress {
                        running: r.get(0)?,
                        started_at: r.get(1)?,
                        updated_at: r.get(2)?,
                        total_paths: r.get::<_, i64>(3)? as u64,
                        done_paths: r.get::<_, i64>(4)? as u64,
                        total_bytes: r.get::<_, i64>(5)? as u64,
                        done_bytes: r.get::<_, i64>(6)? as u64,
                    })
                },
            )
            .optional()?
            .unwrap_or_default())
        })
    }
}
