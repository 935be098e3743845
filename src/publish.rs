//! The scanner/publisher: turns gated-in local store paths into indexed NARs.
//!
//! Data flow: Nix DB (`ValidPaths`) → diff against the state DB → publish gate → NAR layout →
//! FastCDC chunks (CIDs) + UnixFS nodes → one transaction per path. Nothing is copied: only
//! (CID, path, NAR offset, length) rows and the small dag-pb nodes are stored.
//!
//! A scan reads the Nix DB's id list and our own index once (a rescan of an unchanged store of
//! 10 000 paths is two queries and a set difference), then works only on new paths, paths that
//! left the store (dropped), private paths whose verdict has expired, failed paths, and paths whose
//! gate configuration changed (re-checked without re-chunking). Gate checks overlap (up to 16, they
//! may wait on upstream); at most `jobs` paths are chunked at once, each on a blocking thread, and
//! an optional read-rate cap ([`Throttle`]) spans them all, so a first scan keeps the machine usable.
//! Progress is committed per path: a kill -9 loses at most the paths in flight.
//!
//! While chunking, the whole NAR is hashed and compared with Nix's NarHash: a store path modified
//! on disk is marked failed and never published.
//!
//! Every change of what is shareable is emitted as a [`Publication`] (published, withdrawn), which
//! drives have-summaries and DHT announcements. State DB reads and writes run on blocking threads,
//! never on the async workers that serve HTTP and the network. Each scan first reconciles the gate
//! fingerprint, so paths another process published under other gate flags are checked again
//! under this one's before they are announced.

use std::collections::HashSet;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cid::Cid;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use crate::ipld::{ChunkedNar, chunker, raw_cid, unixfs};
use crate::local_cache::{CacheError, LocalCache};
use crate::nix::hash::NarHash;
use crate::nix::nar_layout::NarLayout;
use crate::nix::store_db::PathInfo;
use crate::nix::store_path::{StoreHash, StorePath};
use crate::publications::Publication;
use crate::store::{Published, ScanProgress, Seen, StateDb, StateError, Status, now_secs};
use crate::timeouts::{PAUSE_POLL, PEER_PATH_TTL, PROGRESS_EVERY, PROGRESS_TICK};
use crate::trust::Verdict;

/// Paths whose gate check may be in flight at once. Checks of unsigned paths ask upstream (~50 ms
/// each to cache.nixos.org), so they overlap; only the chunking after them is bounded by `jobs`.
const GATE_CHECKS: usize = 16;

/// What one scan did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ScanReport {
    pub published: u64,
    pub private: u64,
    pub failed: u64,
    pub removed: u64,
    pub rechecked: u64,
    pub unchanged: u64,
    pub bytes_indexed: u64,
    /// Time spent listing Nix's DB and ours (what noticing a change costs, whatever it indexes).
    pub listing_micros: u64,
}

enum Outcome {
    Published(u64),
    Private,
    Failed,
}

pub struct Publisher {
    cache: Arc<LocalCache>,
    jobs: usize,
    /// `jobs` permits: one per path being chunked.
    chunking: tokio::sync::Semaphore,
    /// Also holds the operator's pause switch, which it checks between reads.
    throttle: Arc<Throttle>,
}

/// A read-rate cap shared by all indexing jobs: after each read, a job sleeps until the bytes read
/// so far (by everyone) fit under `rate` per second since the scan began. It is also where a pause
/// takes hold: a job stops reading mid-path (within one read, ≤ 256 KiB) until resumed.
pub struct Throttle {
    rate: u64,
    start: Mutex<(Instant, u64)>,
    control: crate::index_control::IndexControl,
    /// Bytes read so far of the paths being chunked now: the scan's progress moves within a large
    /// path, not only when it is done.
    reading: std::sync::atomic::AtomicU64,
}

impl Throttle {
    /// `rate` bytes per second; 0 means no cap.
    pub fn new(rate: u64) -> Self {
        Self { rate, start: Mutex::new((Instant::now(), 0)), control: Default::default(), reading: Default::default() }
    }

    fn restart(&self) {
        if let Ok(mut s) = self.start.lock() {
            *s = (Instant::now(), 0);
        }
    }

    fn consumed(&self, n: usize) {
        if self.control.is_paused() {
            let paused_at = Instant::now();
            while self.control.is_paused() {
                std::thread::sleep(PAUSE_POLL);
            }
            // The pause does not count against the rate.
            if let Ok(mut s) = self.start.lock() {
                s.0 += paused_at.elapsed();
            }
        }
        if self.rate == 0 {
            return;
        }
        let wait = {
            let Ok(mut s) = self.start.lock() else { return };
            s.1 += n as u64;
            let due = Duration::from_secs_f64(s.1 as f64 / self.rate as f64);
            due.saturating_sub(s.0.elapsed())
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

impl Publisher {
    /// `jobs`: paths chunked at once (each uses one core while it runs); `rate`: bytes per second
    /// all jobs together may read, 0 for no cap.
    pub fn new(cache: Arc<LocalCache>, jobs: usize, rate: u64) -> Result<Self, CacheError> {
        let jobs = jobs.max(1);
        let publisher =
            Self { cache, jobs, chunking: tokio::sync::Semaphore::new(jobs), throttle: Arc::new(Throttle::new(rate)) };
        let changed = publisher.cache.state().reconcile_gate(&publisher.cache.gate().fingerprint())?;
        publisher.rechecking(changed);
        Ok(publisher)
    }

    /// Paths published under other gate settings are marked for a re-check: withdrawn until then.
    fn rechecking(&self, changed: Vec<(String, Option<Cid>)>) {
        if !changed.is_empty() {
            info!(paths = changed.len(), "publish gate settings changed; published paths will be checked again");
        }
        for (hash, root) in changed {
            if let Ok(hash) = StoreHash::parse(&hash) {
                self.cache.publish_event(Publication::Withdrawn { hash, root });
            }
        }
    }

    /// Runs `f` on the state DB on a blocking thread.
    async fn on_state<T: Send + 'static>(
        &self,
        f: impl FnOnce(&StateDb) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, CacheError> {
        let state = self.cache.state_arc();
        match crate::tasks::spawn_blocking(module_path!(), move || f(&state)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(CacheError::State(StateError::Poisoned)),
        }
    }

    /// Emits a withdrawal if `was` says the path was shareable until now.
    fn withdrawn(&self, hash: &str, was: Option<Cid>) {
        if let (Some(root), Ok(hash)) = (was, StoreHash::parse(hash)) {
            self.cache.publish_event(Publication::Withdrawn { hash, root: Some(root) });
        }
    }

    /// The operator's pause switch and scan nudge for this indexer.
    pub fn control(&self) -> crate::index_control::IndexControl {
        self.throttle.control.clone()
    }

    /// Changes whenever Nix's DB does (see [`crate::nix::store_db::StoreDb::stamp`]).
    pub fn store_version(&self) -> Option<[i64; 6]> {
        self.cache.store_db().stamp()
    }

    /// Brings the index up to date with the store. With `only`, just those paths (and the removal
    /// of vanished ones). `on_progress` sees every update (for a progress bar).
    pub async fn scan(
        &self,
        only: Option<&[StorePath]>,
        on_progress: &(dyn Fn(&ScanProgress) + Sync),
    ) -> Result<ScanReport, CacheError> {
        let cache = self.cache.clone();
        let listing = Instant::now();
        let (changed, valid, seen) = crate::tasks::spawn_blocking(module_path!(), move || -> Result<_, CacheError> {
            let changed = cache.state().reconcile_gate(&cache.gate().fingerprint())?;
            // Narinfos accepted from peers for paths nix never registered (another substituter
            // won, the transfer failed) would otherwise stay forever.
            cache.state().expire_peer_paths(PEER_PATH_TTL.as_secs() as i64)?;
            Ok((changed, cache.store_db().list_paths()?, cache.state().seen_paths()?))
        })
        .await
        .map_err(|_| CacheError::State(StateError::Poisoned))??;
        self.rechecking(changed);
        let db = self.cache.store_db();
        let mut report = ScanReport { listing_micros: listing.elapsed().as_micros() as u64, ..Default::default() };

        let live: HashSet<String> = valid.iter().map(|(_, p, _)| p.hash().as_str().to_owned()).collect();
        let gone: Vec<String> = seen.keys().filter(|h| !live.contains(*h)).cloned().collect();
        report.removed = gone.len() as u64;
        let forgotten = self
            .on_state(move |state| {
                gone.into_iter().map(|h| state.forget_path(&h).map(|was| (h, was))).collect::<Result<Vec<_>, _>>()
            })
            .await?;
        for (hash, was) in forgotten {
            self.withdrawn(&hash, was);
        }

        let negative_ttl = self.cache.gate().negative_ttl().as_secs() as i64;
        let now = now_secs();
        let wanted: Option<HashSet<&StorePath>> = only.map(|o| o.iter().collect());
        let mut todo = Vec::new();
        let mut recheck = Vec::new();
        for (id, path, size) in &valid {
            if wanted.as_ref().is_some_and(|w| !w.contains(path)) {
                continue;
            }
            match seen.get(path.hash().as_str()) {
                Some(Seen { nix_id, status: Status::Published, .. }) if nix_id == id => report.unchanged += 1,
                Some(Seen { nix_id, status: Status::Recheck, .. }) if nix_id == id => recheck.push(path.clone()),
                Some(Seen { nix_id, status: Status::Private, checked_at })
                    if nix_id == id && now - checked_at < negative_ttl =>
                {
                    report.unchanged += 1
                }
                _ => todo.push((path.clone(), *size)),
            }
        }

        for path in recheck {
            let Some(info) = db.query_by_hash(&path.hash())? else { continue };
            let hash = path.hash();
            match self.cache.gate().verdict(&info).await? {
                v @ (Verdict::TrustedSignature { .. } | Verdict::Upstream { .. } | Verdict::ServePrivate) => {
                    let name = v.name();
                    if let Some(root) = self.on_state(move |state| state.confirm_published(hash.as_str(), name)).await?
                    {
                        self.cache.publish_event(Publication::Published { hash, root });
                    }
                }
                Verdict::Private { reason } => {
                    let was = self
                        .on_state(move |state| {
                            state.save_unpublished(
                                &info.path,
                                &info.nar_hash,
                                info.nar_size,
                                info.id,
                                Status::Private,
                                reason,
                            )
                        })
                        .await?;
                    self.withdrawn(hash.as_str(), was);
                }
            }
            report.rechecked += 1;
        }

        let progress = Mutex::new(ScanProgress {
            running: true,
            started_at: now,
            updated_at: now,
            total_paths: todo.len() as u64,
            total_bytes: todo.iter().map(|(_, s)| s).sum(),
            ..Default::default()
        });
        let last_write = Mutex::new(Instant::now());
        let publish_progress = |p: &ScanProgress, force: bool| {
            on_progress(p);
            let mut last = last_write.lock().unwrap_or_else(|e| e.into_inner());
            if force || last.elapsed() >= PROGRESS_EVERY {
                *last = Instant::now();
                if let Err(e) = self.cache.state().set_scan_progress(p) {
                    warn!(cause = %e, "cannot record scan progress");
                }
            }
        };
        if let Ok(p) = progress.lock() {
            publish_progress(&p, true);
        }
        if !todo.is_empty() {
            info!(paths = todo.len(), "indexing store paths");
        }
        self.throttle.restart();
        let mut outcomes = futures_util::stream::iter(todo)
            .map(|(path, size)| async move { (self.index_one(&path).await, size) })
            .buffer_unordered(GATE_CHECKS.max(self.jobs));
        // Progress also between paths' ends, from the bytes being read: a large path moves the bar.
        let mut tick = tokio::time::interval(PROGRESS_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reading = || self.throttle.reading.load(std::sync::atomic::Ordering::Relaxed);
        loop {
            let next = tokio::select! {
                next = outcomes.next() => next,
                _ = tick.tick() => {
                    let p = progress.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    publish_progress(&ScanProgress { done_bytes: p.done_bytes + reading(), updated_at: now_secs(), ..p }, false);
                    continue;
                }
            };
            let Some((outcome, size)) = next else { break };
            match outcome? {
                Outcome::Published(bytes) => {
                    report.published += 1;
                    report.bytes_indexed += bytes;
                }
                Outcome::Private => report.private += 1,
                Outcome::Failed => report.failed += 1,
            }
            let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
            p.done_paths += 1;
            p.done_bytes += size;
            p.updated_at = now_secs();
            publish_progress(&ScanProgress { done_bytes: p.done_bytes + reading(), ..p.clone() }, false);
        }
        let mut p = progress.into_inner().unwrap_or_else(|e| e.into_inner());
        p.running = false;
        p.updated_at = now_secs();
        publish_progress(&p, true);
        // Also when nothing changed: tests wait for it before probing what the scan decided.
        debug!(?report, "index scan finished");
        Ok(report)
    }

    /// Records a path as private or failed, announcing its withdrawal if it was shared until now.
    async fn unpublish(&self, info: PathInfo, status: Status, reason: String) -> Result<(), CacheError> {
        let hash = info.path.hash();
        let was = self
            .on_state(move |state| {
                state.save_unpublished(&info.path, &info.nar_hash, info.nar_size, info.id, status, &reason)
            })
            .await?;
        self.withdrawn(hash.as_str(), was);
        Ok(())
    }

    /// Gate-checks and indexes one path.
    async fn index_one(&self, path: &StorePath) -> Result<Outcome, CacheError> {
        self.throttle.control.resumed().await;
        let Some(info) = self.cache.store_db().query_by_hash(&path.hash())? else {
            // Deleted between listing and now.
            return Ok(Outcome::Failed);
        };
        let verdict = self.cache.gate().verdict(&info).await?;
        if let Verdict::Private { reason } = verdict {
            self.unpublish(info, Status::Private, reason.to_owned()).await?;
            return Ok(Outcome::Private);
        }
        let chunked = match self.cache.arrivals.take(&info.nar_hash) {
            // Nix just wrote this path from a NAR peerix streamed to it: the blocks that carried it
            // are its index (nix checked the NarHash on import), so nothing is read or hashed again.
            Some(mut dag) if dag.covers(info.nar_size) => {
                debug!(path = %info.path, "indexed from the blocks it arrived in");
                // nix wrote these files from the verified bytes and registered them: as they are
                // now is as they were written.
                let fs_path = self.cache.fs_path(&info.path);
                dag.fingerprint = crate::tasks::spawn_blocking(module_path!(), move || {
                    NarLayout::of(&fs_path).map(|l| l.fingerprint())
                })
                .await
                .ok()
                .and_then(Result::ok);
                Ok(dag)
            }
            _ => {
                let fs_path = self.cache.fs_path(&info.path);
                let expect = (info.nar_hash, info.nar_size);
                let throttle = self.throttle.clone();
                let _permit = self.chunking.acquire().await.ok();
                let counters = &self.cache.arrivals.counters;
                counters.read_paths.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                counters.read_bytes.fetch_add(info.nar_size, std::sync::atomic::Ordering::Relaxed);
                match crate::tasks::spawn_blocking(module_path!(), move || {
                    chunk_path_throttled(fs_path, expect, &throttle)
                })
                .await
                {
                    Ok(r) => r,
                    Err(e) => Err(IndexError::Task(e.to_string())),
                }
            }
        };
        match chunked {
            Ok(c) => {
                let (hash, root, size, chunks) = (info.path.hash(), c.root, info.nar_size, c.chunks.len());
                // Blocks held from the transfer that brought this path: the store serves them now.
                let received = self.cache.received.held_of(c.chunks.iter().map(|(_, _, cid)| *cid));
                let name = verdict.name();
                let path = info.path.clone();
                self.on_state(move |state| {
                    state.save_published(&Published {
                        path: &info.path,
                        nix_id: info.id,
                        nar_hash: &info.nar_hash,
                        nar_size: info.nar_size,
                        verdict: name,
                        root: c.root,
                        chunks: &c.chunks,
                        nodes: &c.nodes,
                        fingerprint: c.fingerprint,
                    })
                })
                .await?;
                self.cache.received.forget(&received);
                debug!(%path, %root, chunks, "published");
                self.cache.publish_event(Publication::Published { hash, root });
                Ok(Outcome::Published(size))
            }
            Err(reason) => {
                warn!(path = %info.path, %reason, "cannot index");
                self.unpublish(info, Status::Failed, reason.to_string()).await?;
                Ok(Outcome::Failed)
            }
        }
    }
}

/// Why a path could not be indexed; its text (one line, the cause included) is the index's
/// `reason` for it, shown by `/api/paths` and `peerix publish`.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("NAR on disk has {disk} bytes, Nix's DB says {db}")]
    SizeMismatch { disk: u64, db: u64 },
    #[error("NAR on disk does not match Nix's NarHash (modified store path)")]
    HashMismatch,
    #[error("indexing task failed: {0}")]
    Task(String),
}

/// Reads the NAR of `fs_path` once: cuts and hashes chunks, and checks the whole against Nix's
/// NarHash and NarSize.
pub fn chunk_path(fs_path: PathBuf, expect: (NarHash, u64)) -> Result<ChunkedNar, IndexError> {
    chunk_path_throttled(fs_path, expect, &Throttle::new(0))
}

fn chunk_path_throttled(
    fs_path: PathBuf,
    (nar_hash, nar_size): (NarHash, u64),
    throttle: &Throttle,
) -> Result<ChunkedNar, IndexError> {
    let read = |source| IndexError::Read { path: fs_path.clone(), source };
    let layout = NarLayout::of(&fs_path).map_err(read)?;
    if layout.size() != nar_size {
        return Err(IndexError::SizeMismatch { disk: layout.size(), db: nar_size });
    }
    let mut hasher = Sha256::new();
    let reader = HashingReader { inner: layout.reader(), hasher: &mut hasher, throttle, read: 0 };
    let mut chunks = Vec::with_capacity((nar_size / chunker::AVG_CHUNK as u64) as usize + 1);
    for chunk in chunker::chunks(reader) {
        let chunk = chunk.map_err(read)?;
        chunks.push((chunk.offset, chunk.data.len() as u32, raw_cid(&chunk.data)));
    }
    if NarHash(hasher.finalize().into()) != nar_hash {
        return Err(IndexError::HashMismatch);
    }
    let leaves: Vec<(Cid, u64)> = chunks.iter().map(|(_, len, cid)| (*cid, *len as u64)).collect();
    let dag = unixfs::build(&leaves);
    // The bytes just hashed are the files' bytes only if no file moved while they were read: a
    // second walk (metadata only) must find every stamp as the first did.
    let before = layout.fingerprint();
    let fingerprint = NarLayout::of(&fs_path).ok().map(|l| l.fingerprint()).filter(|after| *after == before);
    Ok(ChunkedNar { root: dag.root, chunks, nodes: dag.nodes, fingerprint })
}

struct HashingReader<'h, R> {
    inner: R,
    hasher: &'h mut Sha256,
    throttle: &'h Throttle,
    /// What this reader added to [`Throttle::reading`], taken back when it is dropped (the path is
    /// then counted whole, or failed).
    read: u64,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.throttle.consumed(n);
        self.read += n as u64;
        self.throttle.reading.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

impl<R> Drop for HashingReader<'_, R> {
    fn drop(&mut self) {
        self.throttle.reading.fetch_sub(self.read, std::sync::atomic::Ordering::Relaxed);
    }
}
