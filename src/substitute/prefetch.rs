//! Closure prefetch: a NAR fetched from peers as soon as its narinfo is accepted, before nix asks.
//!
//! nix asks the narinfos of a whole missing closure first and fetches the NARs after (25 at a
//! time). Each NAR fetched on demand costs its transfer's fixed cost — a plan, unit requests, a
//! verification — on nix's critical path. So when a lookup accepts a peer's narinfo, its NAR (if
//! at most [`Limits::max_nar`]) is fetched in the background, verified like any transfer (every
//! block against its CID, the whole against the NarHash), and kept in memory; the NAR request
//! that follows is answered from there at once. A request that arrives while the prefetch runs
//! waits for it instead of starting a second transfer.
//!
//! Newest first: nix looks narinfos up from the top of a closure down (it learns a path's
//! references from its narinfo) but realises from the bottom up (a path after its references), so
//! the NARs it needs first are those whose narinfos came last. Prefetches wait on a stack, not a
//! queue, and the [`JOBS`] slots go to the most recently accepted (on a 20-layer closure over a
//! 40 ms link, first-in-first-out prefetched the top layers nix wanted last and held the buffer
//! with them: 17 hits of 337).
//!
//! Bounded: the bytes held and in flight never exceed [`Limits::bytes`] (reserved as a fetch
//! starts; one that finds no room is dropped, so `nix-store -r --dry-run` of a closure larger than
//! the buffer costs the buffer and no more), [`JOBS`] fetches run at once, at most [`WAITING`]
//! wait, and a NAR nix does not ask for within [`Limits::age`] is dropped. Each is used once: nix
//! fetches a NAR once per realisation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::future::{BoxFuture, Shared};
use futures_util::{FutureExt, StreamExt};
use serde::Serialize;
use tokio::sync::oneshot;
use tracing::debug;

use super::Substituter;
use super::accepted::AcceptedNar;
use crate::nix::hash::NarHash;

/// Prefetches running at once: enough to keep two peers busy with small NARs over a link with
/// tens of ms of round trip (each costs a plan and a unit request: two round trips on its lanes),
/// few enough that nix's own requests (up to 25) are not starved.
const JOBS: usize = 8;
/// Prefetches waiting for a job at most; more are not started (nix fetches those on demand).
const WAITING: usize = 1024;

/// `--prefetch-size` and `--prefetch-age`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes held and in flight at most; 0 turns prefetch off.
    pub bytes: u64,
    /// A NAR larger than this is not prefetched (nix streams it on demand, where the fixed cost
    /// per NAR no longer matters): a quarter of the buffer, at most 8 MiB.
    pub max_nar: u64,
    /// A prefetched NAR nix has not asked for within this is dropped.
    pub age: Duration,
}

impl Limits {
    pub fn new(bytes: u64, age: Duration) -> Self {
        Self { bytes, max_nar: (bytes / 4).min(8 << 20), age }
    }
}

/// What prefetch did, for `/metrics` and `/api/status`.
#[derive(Default, Serialize)]
pub struct PrefetchCounters {
    pub started: AtomicU64,
    /// NAR requests answered from the buffer (or from a prefetch they waited for).
    pub hits: AtomicU64,
    /// Asked for by nix before their transfer began: fetched by nix's request itself.
    pub handed_over: AtomicU64,
    /// Not started: the buffer was full.
    pub skipped_full: AtomicU64,
    /// Failed transfers (nix's request then fetches on demand).
    pub failed: AtomicU64,
    /// Dropped unasked after the age cap.
    pub expired: AtomicU64,
    /// Bytes held and reserved now.
    pub held_bytes: AtomicU64,
}

type Fetch = Shared<BoxFuture<'static, Option<Bytes>>>;

struct Entry {
    fetch: Fetch,
    /// Set once its transfer has begun (it had to wait for one of the [`JOBS`]) with its bytes
    /// reserved: removing it then gives them back.
    running: Arc<AtomicBool>,
    /// Set when nix asked for the NAR before the transfer began: nix's own request fetches it
    /// (at nix's concurrency, not the prefetch's), and this one never starts.
    claimed: Arc<AtomicBool>,
    size: u64,
    /// Told apart from a later entry for the same NAR when the age timer fires.
    generation: u64,
}

/// The [`JOBS`] slots, handed to the newest waiter first (see the module's head).
#[derive(Default)]
struct Jobs {
    /// Slots taken, and the waiters in the order they came.
    state: Mutex<(usize, Vec<oneshot::Sender<Slot>>)>,
}

/// A job slot; handed on to the newest waiter (or freed) when dropped.
struct Slot(Arc<Jobs>);

impl Drop for Slot {
    fn drop(&mut self) {
        Jobs::release(&self.0);
    }
}

impl Jobs {
    /// A slot, at once or when one frees up (newest waiter first); `None` when too many wait.
    async fn acquire(self: &Arc<Self>) -> Option<Slot> {
        let rx = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.0 < JOBS {
                st.0 += 1;
                return Some(Slot(self.clone()));
            }
            st.1.retain(|w| !w.is_closed());
            if st.1.len() >= WAITING {
                return None;
            }
            let (tx, rx) = oneshot::channel();
            st.1.push(tx);
            rx
        };
        rx.await.ok()
    }

    fn release(self: &Arc<Self>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(next) = st.1.pop() {
            // The slot moves to the waiter (the count stays); a waiter gone hands it back here.
            match next.send(Slot(self.clone())) {
                Ok(()) => return,
                Err(slot) => std::mem::forget(slot),
            }
        }
        st.0 -= 1;
    }
}

pub struct Prefetch {
    limits: Limits,
    entries: Mutex<(HashMap<NarHash, Entry>, u64)>,
    jobs: Arc<Jobs>,
    pub counters: PrefetchCounters,
}

impl Prefetch {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            entries: Mutex::new((HashMap::new(), 0)),
            jobs: Arc::default(),
            counters: PrefetchCounters::default(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<NarHash, Entry>, &mut u64) -> T) -> T {
        let mut g = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (map, generation) = &mut *g;
        f(map, generation)
    }

    /// Reserves room for `size` bytes; false when the buffer has none.
    fn reserve(&self, size: u64) -> bool {
        let held = &self.counters.held_bytes;
        held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| (h + size <= self.limits.bytes).then_some(h + size))
            .is_ok()
    }

    fn release(&self, size: u64) {
        self.counters.held_bytes.fetch_sub(size, Ordering::AcqRel);
    }

    /// Removes the entry for `nar_hash` (if it is `generation`, when given) and gives back its bytes.
    fn remove(&self, nar_hash: &NarHash, generation: Option<u64>) -> Option<Entry> {
        self.with(|map, _| match map.get(nar_hash) {
            Some(e) if generation.is_none_or(|g| g == e.generation) => {
                let entry = map.remove(nar_hash)?;
                if entry.running.load(Ordering::Acquire) {
                    self.release(entry.size);
                }
                Some(entry)
            }
            _ => None,
        })
    }
}

impl Substituter {
    /// Queues `nar` for the prefetch buffer, if it is small enough and not there yet; it starts
    /// when a job is free (newest first) and the buffer has room for it then.
    pub(super) fn prefetch(self: &Arc<Self>, nar: &Arc<AcceptedNar>) {
        let p = &self.prefetch;
        if p.limits.bytes == 0 || nar.nar_size > p.limits.max_nar || self.with_entry(&nar.nar_hash) {
            return;
        }
        let (me, job, jobs) = (self.clone(), nar.clone(), p.jobs.clone());
        let (running, claimed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (started, taken) = (running.clone(), claimed.clone());
        let fetch: Fetch = async move {
            let _slot = jobs.acquire().await?;
            let p = &me.prefetch;
            // Under the entries' lock, so that nix's request sees it either claimed (and this
            // never starts) or started with its bytes reserved (and waits for it).
            let go = p.with(|_, _| {
                if taken.load(Ordering::Acquire) {
                    return false;
                }
                if !p.reserve(job.nar_size) {
                    p.counters.skipped_full.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                started.store(true, Ordering::Release);
                true
            });
            if !go {
                return None;
            }
            p.counters.started.fetch_add(1, Ordering::Relaxed);
            let mut stream = Box::pin(me.transfer(job.clone(), 0..job.nar_size).await?);
            let mut out = BytesMut::with_capacity(job.nar_size as usize);
            while let Some(piece) = stream.next().await {
                out.extend_from_slice(&piece.ok()?);
            }
            // The transfer checked the NarHash before its last bytes; the length is all that is left.
            (out.len() as u64 == job.nar_size).then(|| out.freeze())
        }
        .boxed()
        .shared();
        let generation = p.with(|map, generation| {
            *generation += 1;
            let entry = Entry {
                fetch: fetch.clone(),
                running: running.clone(),
                claimed: claimed.clone(),
                size: nar.nar_size,
                generation: *generation,
            };
            map.insert(nar.nar_hash, entry);
            *generation
        });
        let (me, nar_hash, path) = (self.clone(), nar.nar_hash, nar.store_path.clone());
        crate::tasks::spawn(module_path!(), async move {
            let ok = fetch.await.is_some();
            let p = &me.prefetch;
            if !ok && claimed.load(Ordering::Acquire) {
                return; // Handed to nix's own request before it began.
            }
            if !ok && !running.load(Ordering::Acquire) {
                p.remove(&nar_hash, Some(generation)); // No room when its turn came.
                return;
            }
            if !ok {
                p.counters.failed.fetch_add(1, Ordering::Relaxed);
                p.remove(&nar_hash, Some(generation));
                debug!(%path, "prefetch failed; nix's request will fetch on demand");
                return;
            }
            debug!(%path, "prefetched");
            tokio::time::sleep(p.limits.age).await;
            if p.remove(&nar_hash, Some(generation)).is_some() {
                p.counters.expired.fetch_add(1, Ordering::Relaxed);
                debug!(%path, "prefetched NAR never asked for; dropped");
            }
        });
    }

    fn with_entry(&self, nar_hash: &NarHash) -> bool {
        self.prefetch.with(|map, _| map.contains_key(nar_hash))
    }

    /// The NAR from the prefetch buffer (taken), waiting for a prefetch still running; `None` when
    /// there is none or it failed.
    pub async fn prefetched(&self, nar_hash: &NarHash) -> Option<Bytes> {
        let fetch = self.prefetch.with(|map, _| {
            let e = map.get(nar_hash)?;
            if e.running.load(Ordering::Acquire) {
                return Some(Some(e.fetch.clone()));
            }
            // Still waiting for a job: nix's request goes ahead on its own.
            e.claimed.store(true, Ordering::Release);
            Some(None)
        })?;
        let Some(fetch) = fetch else {
            self.prefetch.remove(nar_hash, None);
            self.prefetch.counters.handed_over.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let waited = Instant::now();
        let bytes = fetch.await?;
        self.prefetch.remove(nar_hash, None);
        self.prefetch.counters.hits.fetch_add(1, Ordering::Relaxed);
        debug!(micros = waited.elapsed().as_micros() as u64, "NAR answered from the prefetch buffer");
        Some(bytes)
    }

    pub fn prefetch_counters(&self) -> &PrefetchCounters {
        &self.prefetch.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_freed_job_goes_to_the_newest_waiter_and_a_gone_waiter_hands_it_on() {
        let jobs = Arc::new(Jobs::default());
        let mut held = Vec::new();
        for _ in 0..JOBS {
            held.push(jobs.acquire().await.unwrap());
        }
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..3 {
            let (j, order) = (jobs.clone(), order.clone());
            waiters.push(crate::tasks::spawn(module_path!(), async move {
                let slot = j.acquire().await;
                order.lock().unwrap().push(i);
                slot
            }));
            tokio::task::yield_now().await;
            while jobs.state.lock().unwrap().1.len() < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        // The newest waiter (2) is gone: the slot passes it by to 1.
        waiters.pop().unwrap().abort();
        drop(held.pop());
        let slot1 = waiters.pop().unwrap().await.unwrap();
        assert!(slot1.is_some());
        drop(held.pop());
        let slot0 = waiters.pop().unwrap().await.unwrap();
        assert_eq!(*order.lock().unwrap(), vec![1, 0], "newest first");
        drop((slot0, slot1, held));
        assert_eq!(jobs.state.lock().unwrap().0, 0, "every slot came back");
    }

    #[test]
    fn reservations_never_pass_the_cap_and_come_back() {
        let p = Prefetch::new(Limits::new(100, Duration::from_secs(1)));
        assert_eq!(p.limits.max_nar, 25);
        assert!(p.reserve(60));
        assert!(!p.reserve(41));
        assert!(p.reserve(40));
        assert_eq!(p.counters.held_bytes.load(Ordering::Relaxed), 100);
        p.release(60);
        assert!(p.reserve(60));
        assert!(!p.reserve(1));
    }
}
