//! The `blocks` table: blocks that did not come from the local store (received by bitswap), verified
//! by the caller before insert, evicted least-recently-used first under a byte cap.

use cid::Cid;
use rusqlite::{OptionalExtension, params};

use super::{StateDb, StateError, now_secs};

impl StateDb {
    /// A stored block; marks it used.
    pub fn get_block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StateError> {
        let key = cid.to_bytes();
        let data: Option<Vec<u8>> = self.read(|c| {
            c.prepare_cached("SELECT data FROM blocks WHERE cid = ?1")?.query_row([&key], |r| r.get(0)).optional()
        })?;
        if data.is_some() {
            // A write: on the writer's connection, so the shared one is not held while a bulk
            // insert has the write lock.
            self.with_block_writer(|c| {
                c.prepare_cached("UPDATE blocks SET last_used = ?2 WHERE cid = ?1 AND last_used < ?2")?
                    .execute(params![key, now_secs()])
            })?;
        }
        Ok(data)
    }

    /// The size of a stored block, without reading it (SQLite answers `length()` of a blob from
    /// its record header) and without marking it used: for a bitswap HAVE.
    pub fn block_size(&self, cid: &Cid) -> Result<Option<u64>, StateError> {
        let key = cid.to_bytes();
        self.read(|c| {
            c.prepare_cached("SELECT length(data) FROM blocks WHERE cid = ?1")?
                .query_row([&key], |r| r.get::<_, i64>(0))
                .optional()
        })
        .map(|n| n.map(|n| n as u64))
    }

    /// Stores many blocks in one transaction (one WAL commit instead of one per block); returns the
    /// bytes that were new.
    pub fn put_blocks(&self, blocks: &[(Cid, bytes::Bytes)]) -> Result<u64, StateError> {
        self.with_block_writer(|conn| {
            let tx = conn.transaction()?;
            let mut added = 0u64;
            {
                let mut touch = tx.prepare_cached("UPDATE blocks SET last_used = ?2 WHERE cid = ?1")?;
                let mut insert =
                    tx.prepare_cached("INSERT INTO blocks (cid, size, last_used, data) VALUES (?1, ?2, ?3, ?4)")?;
                let now = now_secs();
                for (cid, data) in blocks {
                    let key = cid.to_bytes();
                    if touch.execute(params![key, now])? == 0 {
                        insert.execute(params![key, data.len() as i64, now, data.as_ref()])?;
                        added += data.len() as u64;
                    }
                }
            }
            tx.commit()?;
            Ok(added)
        })
    }

    pub fn delete_block(&self, cid: &Cid) -> Result<(), StateError> {
        self.with_block_writer(|c| {
            c.execute("DELETE FROM blocks WHERE cid = ?1", [cid.to_bytes()])?;
            Ok(())
        })
    }

    /// (count, bytes) of stored blocks.
    pub fn block_stats(&self) -> Result<(u64, u64), StateError> {
        self.read(|c| {
            c.query_row("SELECT count(*), coalesce(sum(size), 0) FROM blocks", [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })
        })
    }

    /// CIDs of all stored blocks (for `peerix verify`).
    pub fn block_cids(&self) -> Result<Vec<Cid>, StateError> {
        self.read(|c| {
            let rows = c
                .prepare("SELECT cid FROM blocks")?
                .query_map([], |r| r.get::<_, Vec<u8>>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.into_iter().filter_map(|b| Cid::try_from(b).ok()).collect())
        })
    }

    /// Deletes least-recently-used blocks until `excess` bytes are freed; returns
    /// the bytes freed. One transaction, walking the LRU index from its oldest end: costs the rows
    /// it deletes, not the table (callers keep the running total that says how much is in excess).
    pub fn evict_blocks(&self, excess: u64) -> Result<u64, StateError> {
        self.with_block_writer(|c| {
            let tx = c.transaction()?;
            let mut freed = 0u64;
            let mut victims = Vec::new();
            {
                let mut oldest = tx.prepare_cached("SELECT cid, size FROM blocks ORDER BY last_used ASC, rowid ASC")?;
                let mut rows = oldest.query([])?;
                while freed < excess {
                    let Some(row) = rows.next()? else { break };
                    let cid: Vec<u8> = row.get(0)?;
                    freed += row.get::<_, i64>(1)? as u64;
                    victims.push(cid);
                }
            }
            {
                let mut delete = tx.prepare_cached("DELETE FROM blocks WHERE cid = ?1")?;
                for cid in &victims {
                    delete.execute([cid])?;
                }
            }
            tx.commit()?;
            Ok(freed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::raw_cid;

    #[test]
    fn lru_eviction_frees_the_oldest_blocks_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let blocks: Vec<(Cid, bytes::Bytes)> =
            (0..10u8).map(|i| (raw_cid(&[i; 100]), bytes::Bytes::from(vec![i; 100]))).collect();
        for b in &blocks {
            assert_eq!(db.put_blocks(std::slice::from_ref(b)).unwrap(), 100, "new block counted");
        }
        assert_eq!(db.put_blocks(&blocks[..1]).unwrap(), 0, "a block already there adds nothing");
        assert_eq!(db.block_stats().unwrap(), (10, 1000));
        // 350 bytes over a 650 cap: whole blocks go, oldest first (same second: in insertion order).
        let freed = db.evict_blocks(350).unwrap();
        assert_eq!(freed, 400);
        for (c, _) in &blocks[..4] {
            assert!(db.get_block(c).unwrap().is_none());
        }
        for (c, _) in &blocks[4..] {
            assert!(db.get_block(c).unwrap().is_some());
        }
        assert_eq!(db.block_stats().unwrap(), (6, 600));
        assert_eq!(db.evict_blocks(0).unwrap(), 0);
    }
}
