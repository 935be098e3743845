//! One NAR's transfer: the units it is cut into, a slot per source, and the [`Driver`] that
//! assigns units, emits verified bytes in order and ends the response ([`super::schedule`] decides
//! who gets what, [`super::report`] says how it went).

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use futures_util::{Stream, StreamExt};
use libp2p::PeerId;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{debug, info};

use crate::ipld::ChunkedNar;
use crate::ipld::walk::Piece;
use crate::nix::hash::NarHash;
use crate::p2p::blocks::MAX_CIDS;
use crate::substitute::Substituter;
use crate::substitute::accepted::AcceptedNar;
use crate::substitute::sources::{Source, SourceError};
use crate::timeouts::{ANSWERING_WITHIN, FIRST_BYTES_BUSY_MAX, FIRST_BYTES_WAIT};

/// Why a transfer ended before nix had the whole NAR; shown as `failed: <text>` in
/// `/api/status`, and the response is aborted (nix sees a truncated body and moves on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TransferFailure {
    #[error("the client went away")]
    ClientGone,
    #[error("the NAR's DAG does not match its blocks")]
    DagMismatch,
    #[error("NarHash mismatch")]
    NarHashMismatch,
    #[error("a unit came back short")]
    ShortUnit,
    #[error("no source left for the NAR's blocks")]
    NoSource,
}

/// Bytes per unit: big enough that per-request costs vanish (~16 chunks), small enough that a
/// lost unit costs little and three 10 MB/s peers share even a 20 MB NAR.
pub const UNIT_BYTES: u64 = 1 << 20;
/// Units one source works on at once: with 4, a 1 GiB transfer from two peers on loopback took
/// 5.9–6.3 s; with 8, 5.0–5.4 s, and less CPU (fewer idle gaps between a source's units).
pub(super) const SOURCE_UNITS: usize = 8;
/// Fallbacks (HTTP, one block per request) get fewer.
pub(super) const FALLBACK_UNITS: usize = 2;
/// Bytes fetched ahead of what nix has read.
pub(super) const WINDOW_BYTES: u64 = 32 << 20;
/// Sources one transfer keeps at most: busy peers name others ([`SourceError::Busy`]), and a
/// hostile one must not grow the list without bound.
pub(super) const MAX_SLOTS: usize = 32;
/// Times a unit is asked for with redirects allowed. A busy seeder names peers it sent the unit
/// to; when those stall (in the N = 100 flash crowd on one starved machine, 246 named peers did),
/// the unit comes back to it, and with redirects no longer allowed it had to send one more copy
/// (it uploaded 12.1× the closure; 8.0× with a second redirect). A second redirect names peers
/// that received the unit since; more would only bounce it.
pub(super) const MAX_REDIRECTS: u32 = 2;
/// A source failing this many units in a row is dropped.
pub(super) const MAX_FAILURES: u32 = 3;
/// Pieces buffered between the driver and the HTTP body.
pub(super) const OUT_QUEUE: usize = 32;

pub(super) struct Unit {
    pub(super) pieces: Range<usize>,
    pub(super) cids: Vec<Cid>,
    pub(super) bytes: u64,
}

pub(super) struct Slot {
    pub(super) source: Source,
    pub(super) in_flight: usize,
    pub(super) dead: bool,
    /// Named by a busy source for one unit: it may lack the others, so a miss is a failure, not
    /// the end of it.
    pub(super) named: bool,
    /// Kept though a unit stalled: the last source left, still connected (logged once).
    pub(super) patient: bool,
    /// It answered "busy, ask again shortly": not asked again before this.
    pub(super) resting_until: Option<Instant>,
    /// It has answered only that since this (cleared by a unit delivered).
    pub(super) deferring_since: Option<Instant>,
    pub(super) failures: u32,
    pub(super) bytes: u64,
    pub(super) blocks: u64,
    /// Smoothed seconds per unit.
    pub(super) unit_secs: Option<f64>,
}

pub(super) type Done = (usize, usize, Result<Vec<Bytes>, SourceError>, Duration);

/// A transfer's signs of life, shared with the NAR request that waits for its first bytes.
#[derive(Default)]
pub(super) struct Progress {
    /// When a unit last arrived, from any source.
    pub(super) last_unit: Option<Instant>,
    /// Every peer the transfer asks, the peers a busy source named too: one of them sending
    /// blocks (to us, for any transfer) is at work on a queue our units are in.
    pub(super) peers: Vec<PeerId>,
}

pub(super) struct Driver {
    pub(super) sub: Arc<Substituter>,
    pub(super) nar: Arc<AcceptedNar>,
    pub(super) root: Cid,
    pub(super) pieces: Vec<Piece>,
    pub(super) units: Vec<Unit>,
    pub(super) range: Range<u64>,
    pub(super) hasher: Option<Sha256>,
    /// The DAG as an index, handed to the indexer once the whole NAR proved right.
    pub(super) index: Option<ChunkedNar>,
    pub(super) slots: Vec<Slot>,
    pub(super) next: usize,
    pub(super) requeue: BTreeSet<usize>,
    /// Units a busy source sent elsewhere: the last such source's slot, and how often: the unit
    /// goes to another source if one has room, and is asked with redirects allowed
    /// [`MAX_REDIRECTS`] times.
    pub(super) redirected: HashMap<usize, (usize, u32)>,
    pub(super) flying: HashMap<usize, Vec<(usize, Instant, AbortHandle)>>,
    pub(super) done: HashMap<usize, Vec<Bytes>>,
    pub(super) emit: usize,
    pub(super) ahead: u64,
    pub(super) results: (mpsc::Sender<Done>, mpsc::Receiver<Done>),
    pub(super) fallbacks_added: bool,
    pub(super) no_source_since: Option<Instant>,
    pub(super) id: u64,
    pub(super) started: Instant,
    /// What the wait for the first bytes sees of the transfer ([`Substituter::sources_busy`]).
    pub(super) progress: Arc<Mutex<Progress>>,
    pub(super) sent: u64,
    pub(super) duplicate: u64,
}

impl Substituter {
    /// Plans the NAR's DAG and starts streaming `range` of it. `None` — a 404, on which nix moves on
    /// to its next substituter at once, where an aborted body would make it retry 5 times — when no
    /// live source is left, when no candidate root leads to a DAG any source can deliver, or when
    /// every source failed before the first bytes were ready ([`FIRST_BYTES_WAIT`]). Once bytes
    /// have gone out, a failure aborts the body.
    pub async fn transfer(
        self: &Arc<Self>,
        nar: Arc<AcceptedNar>,
        range: Range<u64>,
    ) -> Option<impl Stream<Item = io::Result<Bytes>> + Send + 'static> {
        let mut deadline = tokio::time::Instant::now() + FIRST_BYTES_WAIT;
        let last = tokio::time::Instant::now() + FIRST_BYTES_BUSY_MAX;
        if !self.deliverable(&nar) {
            info!(path = %nar.store_path, "no live source for the NAR; answering 404");
            return None;
        }
        let Some(plan) = self.before_first_bytes(&nar, &mut deadline, last, None, self.plan(&nar)).await else {
            info!(path = %nar.store_path, "no source delivered the NAR's DAG in time; answering 404");
            return None;
        };
        let plan = plan?;
        let (out, mut rx) = mpsc::channel(OUT_QUEUE);
        let whole = range.start == 0 && range.end == nar.nar_size;
        let index = whole.then(|| plan.as_index()).flatten();
        let root = plan.root;
        let pieces: Vec<Piece> =
            plan.pieces.into_iter().filter(|p| p.offset() < range.end && p.offset() + p.len() > range.start).collect();
        let units = units_of(&pieces);
        let id = self.activity.transfer_started(nar.store_path.to_string(), range.end - range.start);
        let slots: Vec<Slot> = self.peer_sources(&nar, Some(root)).into_iter().map(Slot::new).collect();
        let peers = slots.iter().filter_map(|s| s.source.peer()).collect();
        let progress = Arc::new(Mutex::new(Progress { last_unit: None, peers }));
        let driver = Driver {
            sub: self.clone(),
            nar,
            root,
            pieces,
            units,
            range,
            hasher: whole.then(Sha256::new),
            index,
            slots,
            next: 0,
            requeue: BTreeSet::new(),
            redirected: HashMap::new(),
            flying: HashMap::new(),
            done: HashMap::new(),
            emit: 0,
            ahead: 0,
            results: mpsc::channel(256),
            fallbacks_added: false,
            no_source_since: None,
            id,
            started: Instant::now(),
            progress: progress.clone(),
            sent: 0,
            duplicate: 0,
        };
        let (path, nar) = (driver.nar.store_path.clone(), driver.nar.clone());
        crate::tasks::spawn(module_path!(), driver.run(out));
        // The status line waits for the first bytes: until then a failure is still a clean 404.
        // (Dropping `rx` stops the driver within a tick.)
        let first = match self.before_first_bytes(&nar, &mut deadline, last, Some(&progress), rx.recv()).await {
            Some(Some(Ok(piece))) => piece,
            Some(Some(Err(e))) => {
                info!(%path, cause = %e, "every source failed before the first bytes; answering 404");
                return None;
            }
            Some(None) => return None,
            None => {
                info!(%path, "no source delivered the first bytes in time; answering 404");
                return None;
            }
        };
        let first = futures_util::stream::once(std::future::ready(Ok(first)));
        Some(
            first.chain(futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|piece| (piece, rx)) },
            )),
        )
    }

    /// Awaits `step` (planning, then the first unit) until `deadline`, which moves on by
    /// [`FIRST_BYTES_WAIT`] while [`Self::sources_busy`]; `None` once it passed.
    async fn before_first_bytes<T>(
        &self,
        nar: &AcceptedNar,
        deadline: &mut tokio::time::Instant,
        last: tokio::time::Instant,
        progress: Option<&Mutex<Progress>>,
        step: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(step);
        loop {
            match tokio::time::timeout_at(*deadline, &mut step).await {
                Ok(done) => return Some(done),
                Err(_) if self.sources_busy(nar, *deadline, last, progress) => *deadline += FIRST_BYTES_WAIT,
                Err(_) => return None,
            }
        }
    }

    /// At a first-byte deadline: true if one of the NAR's peers or the transfer's sources answered
    /// a request of ours (a block of an answer counts, a "busy, ask again" too) within
    /// [`ANSWERING_WITHIN`] and is still connected, or a unit of this transfer arrived within the
    /// last [`FIRST_BYTES_WAIT`] (and [`FIRST_BYTES_BUSY_MAX`] is not reached) — a seeder serving a crowd queues our units behind theirs but delivers, and a 404
    /// would fail the build of every node without another substituter (a crowd of 19 from one
    /// seeder: 7 failed so; of 50, 6–12 still did while the peers a busy seeder named, crowd
    /// members themselves, were not counted). A peer that vanished answers nothing, and the
    /// deadline stands.
    fn sources_busy(
        &self,
        nar: &AcceptedNar,
        deadline: tokio::time::Instant,
        last: tokio::time::Instant,
        progress: Option<&Mutex<Progress>>,
    ) -> bool {
        let Some(node) = &self.sources.node else { return false };
        let (moving, mut peers) = progress.map_or((false, Vec::new()), |m| {
            let p = m.lock().unwrap_or_else(|e| e.into_inner());
            (p.last_unit.is_some_and(|t| t.elapsed() < FIRST_BYTES_WAIT), p.peers.clone())
        });
        // Every peer that named a root (a tracker's holder too), not only those whose summary
        // lists the path: in a crowd a node reaches its seeder either way.
        peers.extend(nar.roots().into_iter().flat_map(|r| r.peers));
        peers.extend(node.peers().matching(&nar.hash));
        let busy = deadline < last && (moving || node.peers().answering(&peers, ANSWERING_WITHIN));
        if busy {
            debug!(path = %nar.store_path, "its sources are busy but answering; waiting longer for the first bytes");
        }
        busy
    }
}

/// Consecutive blocks grouped into units; inline data is a unit of its own.
fn units_of(pieces: &[Piece]) -> Vec<Unit> {
    let mut units: Vec<Unit> = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        match p {
            Piece::Block { cid, len, .. } => match units.last_mut() {
                Some(u) if !u.cids.is_empty() && u.bytes + len <= UNIT_BYTES && u.cids.len() < MAX_CIDS => {
                    u.pieces.end = i + 1;
                    u.cids.push(*cid);
                    u.bytes += len;
                }
                _ => units.push(Unit { pieces: i..i + 1, cids: vec![*cid], bytes: *len }),
            },
            Piece::Data { bytes, .. } => {
                units.push(Unit { pieces: i..i + 1, cids: Vec::new(), bytes: bytes.len() as u64 })
            }
        }
    }
    units
}

impl Slot {
    pub(super) fn new(source: Source) -> Self {
        Self {
            source,
            in_flight: 0,
            dead: false,
            named: false,
            patient: false,
            resting_until: None,
            deferring_since: None,
            failures: 0,
            bytes: 0,
            blocks: 0,
            unit_secs: None,
        }
    }

    pub(super) fn cap(&self) -> usize {
        if self.source.is_fallback() { FALLBACK_UNITS } else { SOURCE_UNITS }
    }
}

impl Driver {
    #[tracing::instrument(name = "transfer", level = "debug", skip_all, fields(path = %self.nar.store_path, root = %self.root))]
    async fn run(mut self, out: mpsc::Sender<io::Result<Bytes>>) {
        if let Some(node) = self.sub.sources.node.clone()
            && node.has_dht()
        {
            // DHT providers of the root join as they are found (never in `lan` mode).
            let (tx, rx) = mpsc::channel(64);
            let root = self.root;
            crate::tasks::spawn(module_path!(), async move {
                for p in node.providers(&root).await {
                    let source = if node.peers().is_peerix(&p) { Source::Peer(p) } else { Source::Bitswap(p) };
                    if tx.send(source).await.is_err() {
                        return;
                    }
                }
            });
            self.drive(out, Some(rx)).await;
        } else {
            self.drive(out, None).await;
        }
    }

    async fn drive(&mut self, out: mpsc::Sender<io::Result<Bytes>>, mut found: Option<mpsc::Receiver<Source>>) {
        let outcome = loop {
            self.assign();
            match self.emit_ready(&out).await {
                Err(why) => break Err(why),
                Ok(true) => break Ok(()),
                Ok(false) => {}
            }
            if let Err(why) = self.check_sources() {
                break Err(why);
            }
            if out.is_closed() {
                break Err(TransferFailure::ClientGone);
            }
            let tick = tokio::time::sleep(Duration::from_millis(250));
            tokio::select! {
                Some(done) = self.results.1.recv() => self.on_done(done),
                Some(source) = async { match found.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                    self.add_source(source);
                }
                _ = tick => self.check_stalls(),
            }
        };
        for copies in self.flying.values() {
            for (_, _, h) in copies {
                h.abort();
            }
        }
        self.finish(&out, outcome).await;
    }

    /// Sends every unit that is ready, in order. `Ok(true)` once everything was sent.
    async fn emit_ready(&mut self, out: &mpsc::Sender<io::Result<Bytes>>) -> Result<bool, TransferFailure> {
        while let Some(blocks) = self.done.remove(&self.emit) {
            let unit = &self.units[self.emit];
            let mut pieces = Vec::with_capacity(unit.pieces.len());
            let mut blocks = blocks.into_iter();
            for p in &self.pieces[unit.pieces.clone()] {
                let bytes = match p {
                    Piece::Data { bytes, .. } => bytes.clone(),
                    Piece::Block { cid, len, .. } => {
                        let b = blocks.next().ok_or(TransferFailure::ShortUnit)?;
                        if b.len() as u64 != *len {
                            self.sub.root_failed(&self.nar, &self.root, &format!("block {cid} is not {len} bytes"));
                            return Err(TransferFailure::DagMismatch);
                        }
                        b
                    }
                };
                let (start, end) = (p.offset(), p.offset() + p.len());
                let (from, to) = (self.range.start.max(start), self.range.end.min(end));
                if let Some(h) = self.hasher.as_mut() {
                    h.update(&bytes);
                }
                pieces.push(bytes.slice((from - start) as usize..(to - start) as usize));
            }
            self.ahead -= unit.bytes;
            self.emit += 1;
            // The last bytes go out only once the whole NAR proved to be the one nix was promised.
            if self.emit == self.units.len()
                && let Some(h) = self.hasher.take()
                && NarHash(h.finalize().into()) != self.nar.nar_hash
            {
                self.sub.root_failed(&self.nar, &self.root, &"the NAR's bytes do not hash to its NarHash");
                return Err(TransferFailure::NarHashMismatch);
            }
            // Proved whole and right: the indexer may adopt its DAG as soon as nix registers the
            // path, which can be moments after the last bytes below.
            if self.emit == self.units.len()
                && let Some(index) = self.index.take()
            {
                self.sub.cache.arrivals.offer(self.nar.nar_hash, index);
            }
            for piece in pieces {
                self.sent += piece.len() as u64;
                if out.send(Ok(piece)).await.is_err() {
                    return Err(TransferFailure::ClientGone);
                }
            }
        }
        Ok(self.emit == self.units.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::raw_cid;

    #[test]
    fn units_group_consecutive_blocks_up_to_a_mebibyte() {
        let mut pieces = Vec::new();
        let mut at = 0;
        for i in 0..40u32 {
            let len = 100 << 10;
            pieces.push(Piece::Block { cid: raw_cid(&i.to_le_bytes()), offset: at, len });
            at += len;
        }
        pieces.insert(5, Piece::Data { offset: 0, bytes: Bytes::from_static(b"inline") });
        let units = units_of(&pieces);
        // 5 blocks, the inline piece alone, then 10 + 10 + 10 + 5 blocks (10 × 100 KiB ≤ 1 MiB).
        let sizes: Vec<usize> = units.iter().map(|u| u.cids.len()).collect();
        assert_eq!(sizes, vec![5, 0, 10, 10, 10, 5]);
        assert!(units.iter().all(|u| u.bytes <= UNIT_BYTES));
        assert_eq!(units.iter().map(|u| u.pieces.len()).sum::<usize>(), pieces.len());
    }
}
