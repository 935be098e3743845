//! The local Nix store as a binary cache: narinfo lookups and NAR sources for gated-in paths.
//!
//! Data flow: HTTP handler → [`LocalCache::narinfo`] → Nix DB (read-only) → publish gate
//! ([`crate::trust`]) → rendered and signed once ([`crate::trust::Served`]) → memory cache. NAR
//! URLs are `nar/<NarHash nix32>.nar`; [`LocalCache::nar`] resolves them through our state DB (hash
//! → path, written when the narinfo was first served, so a URL handed out before a restart still
//! resolves), falling back to a scan of the Nix DB.
//!
//! The publish gate's verdict is asked through one door for every interface: [`LocalCache::narinfo`]
//! and [`LocalCache::nar`] (HTTP, the narinfo protocol) check it live, asking upstream when they
//! must; [`LocalCache::servable_offline`] (every block read: gateway, RPC, bitswap, the block
//! protocol) checks it from what is known here, never waiting on the network. So a state DB written
//! by another process with other gate flags cannot make this daemon serve what its own gate refuses.
//! Changes of what is shareable go out as [`Publication`] events ([`crate::publications`]).
//!
//! Why a memory cache: a narinfo hit must cost little more than the HTTP exchange to match a static
//! file server (≈ 60 µs here), while the DB query (≈ 30 µs) plus an ed25519 verify and sign (≈ 80 µs)
//! would triple it. Entries are only ever served narinfos; the whole map is dropped whenever Nix's DB
//! changes ([`StoreDb::stamp`]), so a new signature, a garbage-collected path or a new path is seen
//! on the very next request.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::arrivals::Arrivals;
use crate::bounded::Lru;
use crate::nix::hash::NarHash;
use crate::nix::store_db::{PathInfo, StoreDb, StoreDbError};
use crate::nix::store_path::{StoreHash, StorePath};
use crate::publications::{Publication, Publications};
use crate::received::Received;
use crate::store::{StateDb, StateError};
use crate::trust::{Gate, Served, Source};

/// Rendered narinfos kept in memory: ~1 KiB each, so ≤ 32 MiB, least recently used out first (a
/// working set larger than this is re-rendered at ~100 µs a path, which is still fast).
const NARINFO_CACHE_ENTRIES: usize = 32 * 1024;
/// NAR hashes known to match no valid path, until Nix's DB changes. Finding that out scans
/// `ValidPaths` (no index on `hash`: ~20–50 ms at 100k paths), which a stream of requests for
/// made-up NAR URLs must not be able to repeat at will.
const NAR_MISS_ENTRIES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    StoreDb(#[from] StoreDbError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// A NAR this machine holds: its bytes are dumped from the store path on disk.
#[derive(Debug, Clone)]
pub struct LocalNar {
    pub path: StorePath,
    /// The path's top-level file or directory on disk (under `--store-root`).
    pub fs_path: PathBuf,
    pub nar_size: u64,
}

#[derive(Default)]
pub struct Counters {
    pub narinfo_hits: AtomicU64,
    pub narinfo_misses: AtomicU64,
    pub narinfo_denied: AtomicU64,
    pub nars_served: AtomicU64,
    pub nar_bytes_served: AtomicU64,
    /// Full scans of Nix's `ValidPaths` for an unknown NAR hash.
    pub nar_db_scans: AtomicU64,
}

struct Rendered {
    version: Option<[i64; 6]>,
    map: Lru<StoreHash, Bytes>,
    nar_misses: Lru<NarHash, ()>,
    /// Offline gate verdicts for block reads ([`LocalCache::servable_offline`]).
    servable: Lru<StoreHash, bool>,
}

impl Rendered {
    /// True if what is cached was derived from the store as it is at `version` (a known stamp).
    fn valid_for(&self, version: Option<[i64; 6]>) -> bool {
        version.is_some() && self.version == version
    }

    /// As `valid_for`; when not, drops everything and starts over at `version`.
    fn current(&mut self, version: Option<[i64; 6]>) -> bool {
        if self.valid_for(version) {
            return true;
        }
        self.map.clear();
        self.nar_misses.clear();
        self.servable.clear();
        self.version = version;
        false
    }
}

pub struct LocalCache {
    store_root: PathBuf,
    db: StoreDb,
    state: Arc<StateDb>,
    gate: Gate,
    served: Served,
    rendered: Mutex<Rendered>,
    publications: Publications,
    /// DAGs of NARs just streamed to nix from peers, for the indexer to adopt.
    pub arrivals: Arrivals,
    /// Blocks just verified by transfers, served on to peers until their path is indexed.
    pub received: Received,
    pub counters: Counters,
}

impl LocalCache {
    pub fn new(store_root: &Path, state: Arc<StateDb>, gate: Gate, served: Served) -> Self {
        Self {
            store_root: store_root.to_owned(),
            db: StoreDb::new(store_root),
            state,
            gate,
            served,
            rendered: Mutex::new(Rendered {
                version: None,
                map: Lru::new(NARINFO_CACHE_ENTRIES),
                nar_misses: Lru::new(NAR_MISS_ENTRIES),
                servable: Lru::new(NARINFO_CACHE_ENTRIES),
            }),
            publications: Publications::default(),
            arrivals: Arrivals::default(),
            received: Received::default(),
            counters: Counters::default(),
        }
    }

    pub fn store_root(&self) -> &Path {
        &self.store_root
    }

    /// Where a store path's files are on disk (under `--store-root`).
    pub fn fs_path(&self, path: &StorePath) -> PathBuf {
        self.store_root.join("nix/store").join(path.base_name())
    }

    pub fn store_db(&self) -> &StoreDb {
        &self.db
    }

    pub fn state(&self) -> &StateDb {
        &self.state
    }

    pub fn state_arc(&self) -> Arc<StateDb> {
        self.state.clone()
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Renders what we serve for a path, ours or a peer's (and holds the signing key).
    pub fn served(&self) -> &Served {
        &self.served
    }

    pub fn publications(&self) -> &Publications {
        &self.publications
    }

    /// Tells everyone what became shareable or stopped being so (and forgets a withdrawn path's
    /// rendered narinfo at once).
    pub fn publish_event(&self, event: Publication) {
        if let Publication::Withdrawn { hash, .. } = &event
            && let Ok(mut r) = self.rendered.lock()
        {
            r.map.remove(hash);
            r.servable.remove(hash);
        }
        self.publications.emit(event);
    }

    /// The publish gate's verdict on a local path, from what is known here (no network): what every
    /// block read asks before a chunk or node of the path leaves the machine. Kept per Nix-DB stamp.
    /// Blocking (Nix DB and state DB reads): call from a blocking thread.
    pub fn servable_offline(&self, hash: &StoreHash) -> bool {
        let version = self.db.stamp();
        if let Ok(mut r) = self.rendered.lock()
            && r.current(version)
            && let Some(v) = r.servable.get(hash)
        {
            return *v;
        }
        let verdict = match self.db.query_by_hash(hash) {
            Ok(Some(info)) => self.gate.verdict_offline(&info).is_ok_and(|v| v.allowed()),
            _ => false,
        };
        if let Ok(mut r) = self.rendered.lock()
            && r.valid_for(version)
        {
            r.servable.insert(*hash, verdict);
        }
        verdict
    }

    /// The rendered narinfo for `hash`, or `None` when the path is absent or private.
    pub async fn narinfo(&self, hash: &StoreHash) -> Result<Option<Bytes>, CacheError> {
        let version = self.db.stamp();
        if let Some(hit) = self.cached(hash, version) {
            self.counters.narinfo_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(hit));
        }
        let Some(info) = self.db.query_by_hash(hash)? else {
            self.counters.narinfo_misses.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        let verdict = self.gate.verdict(&info).await?;
        if !verdict.allowed() {
            self.counters.narinfo_denied.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        self.remember_nar_url(&info);
        let body = Bytes::from(self.served.narinfo(Source::Own { info, verdict }).render());
        self.remember(*hash, version, body.clone());
        self.counters.narinfo_hits.fetch_add(1, Ordering::Relaxed);
        Ok(Some(body))
    }

    /// Records which path has this NAR hash (so the NAR URL resolves after a restart), on a
    /// blocking thread: an SQLite write has no place on the async workers that answer requests,
    /// and until it lands a NAR request still finds the path through Nix's DB.
    fn remember_nar_url(&self, info: &PathInfo) {
        let (state, path, nar_hash, nar_size) = (self.state.clone(), info.path.clone(), info.nar_hash, info.nar_size);
        crate::tasks::spawn_blocking(module_path!(), move || {
            if let Err(e) = state.record_local_path(&path, &nar_hash, nar_size) {
                tracing::warn!(cause = %e, "cannot record a NAR hash");
            }
        });
    }

    fn cached(&self, hash: &StoreHash, version: Option<[i64; 6]>) -> Option<Bytes> {
        let mut r = self.rendered.lock().ok()?;
        if !r.current(version) {
            return None;
        }
        r.map.get(hash).cloned()
    }

    /// True if `nar_hash` is known to match no valid path in the store as it is now.
    fn known_nar_miss(&self, nar_hash: &NarHash) -> bool {
        let version = self.db.stamp();
        let Ok(mut r) = self.rendered.lock() else { return false };
        r.current(version) && r.nar_misses.get(nar_hash).is_some()
    }

    fn remember_nar_miss(&self, nar_hash: NarHash, version: Option<[i64; 6]>) {
        let Ok(mut r) = self.rendered.lock() else { return };
        if !r.valid_for(version) {
            return;
        }
        r.nar_misses.insert(nar_hash, ());
    }

    fn remember(&self, hash: StoreHash, version: Option<[i64; 6]>, body: Bytes) {
        let Ok(mut r) = self.rendered.lock() else {
            return;
        };
        if !r.valid_for(version) {
            return;
        }
        r.map.insert(hash, body);
    }

    /// Takes a published path whose bytes on disk no longer match its index out of service: it is
    /// forgotten if Nix no longer lists it, else marked failed (with `reason`) for the next scan
    /// to re-index. Its blocks are then missing, never wrong.
    pub fn unpublish_broken(&self, hash: &StoreHash, reason: &str) -> Result<(), CacheError> {
        let was = match self.db.query_by_hash(hash)? {
            None => self.state.forget_path(hash.as_str())?,
            Some(info) => self.state.save_unpublished(
                &info.path,
                &info.nar_hash,
                info.nar_size,
                info.id,
                crate::store::Status::Failed,
                reason,
            )?,
        };
        if let Some(root) = was {
            self.publish_event(Publication::Withdrawn { hash: *hash, root: Some(root) });
        }
        Ok(())
    }

    /// Where to read the NAR with this hash from, if a gated-in path has it.
    pub async fn nar(&self, nar_hash: &NarHash) -> Result<Option<LocalNar>, CacheError> {
        let mut candidates = Vec::new();
        let mut scanned = false;
        for path in self.state.paths_by_nar_hash(nar_hash)? {
            if let Some(info) = self.db.query_by_hash(&path.hash())?
                && info.nar_hash == *nar_hash
            {
                candidates.push(info);
            }
        }
        if candidates.is_empty() {
            if self.known_nar_miss(nar_hash) {
                return Ok(None);
            }
            let version = self.db.stamp();
            self.counters.nar_db_scans.fetch_add(1, Ordering::Relaxed);
            candidates = self.db.query_by_nar_hash(nar_hash)?;
            scanned = true;
            if candidates.is_empty() {
                self.remember_nar_miss(*nar_hash, version);
            }
        }
        for info in candidates {
            if self.gate.verdict(&info).await?.allowed() {
                // Found through the state DB, it is recorded there already: a write (and a
                // blocking thread) per NAR request was a visible share of a small NAR's answer.
                if scanned {
                    self.remember_nar_url(&info);
                }
                return Ok(Some(LocalNar {
                    fs_path: self.fs_path(&info.path),
                    path: info.path,
                    nar_size: info.nar_size,
                }));
            }
        }
        Ok(None)
    }
}
