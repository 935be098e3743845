//! The publish gate's upstream verdicts, as stored: what upstream said about a local path's NAR,
//! and when.

use rusqlite::{OptionalExtension, params};

use super::{StateDb, StateError, now_secs};
use crate::nix::hash::NarHash;
use crate::nix::store_path::StorePath;

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

impl StateDb {
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
}
