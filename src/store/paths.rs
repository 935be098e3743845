//! Which store path a NAR hash belongs to: our own paths (so a NAR URL handed out before a restart
//! still resolves) and narinfos accepted from peers (kept until nix would have forgotten them).

use rusqlite::{OptionalExtension, params};

use super::{StateDb, StateError, now_secs};
use crate::nix::hash::NarHash;
use crate::nix::store_path::StorePath;

impl StateDb {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UpstreamVerdict;

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
