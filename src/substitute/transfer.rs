//! One NAR (or a byte range of one) streamed to nix from every source that has it.
//!
//! Plan: the DAG under a candidate root is walked ([`crate::ipld::walk`], bounded, `blocksizes`
//! adding up to the signed NarSize) with its interior nodes fetched from any source; a root whose
//! DAG is wrong is marked failed (its peers caught lying) and the next candidate is tried. The
//! leaves are then cut into units of consecutive blocks ([`UNIT_BYTES`], at most
//! [`crate::p2p::blocks::MAX_CIDS`]), the scheduling grain.
//!
//! Driver: one task per transfer. Sources pull units in order, each at most [`SOURCE_UNITS`] at a
//! time and the whole transfer at most [`WINDOW_BYTES`] ahead of what was sent to nix — so a faster
//! source simply comes back for more, and memory stays bounded. A unit whose source errs, sends a
//! wrong block or does not have it goes back to the front of the queue; a source that fails
//! [`MAX_FAILURES`] times, stalls for [`STALLED`], lacks a block or sends a wrong one is dropped for
//! the rest of the transfer; the unit nix waits for is asked of a second source once it is
//! [`HEDGE_AFTER`] (or 4× its source's usual time) late. Fallbacks join when no peer is left or the
//! head unit is late; new sources (DHT providers) join when they are found. With no source at all
//! for [`NO_SOURCE_WAIT`], the transfer fails.
//!
//! Bytes leave in order. The whole NAR is hashed on the way and the last unit is held back until
//! the hash matches the NarHash nix was given: on a mismatch, or any failure, the body is aborted,
//! so nix sees a failed transfer (and tries again or moves on), never a complete wrong NAR.
//! Nothing is written to the blockstore: nix writes the path, and the indexer then publishes it.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use futures_util::Stream;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use super::Substituter;
use super::accepted::{AcceptedNar, Root};
use super::activity::SourceBytes;
use super::sources::{Source, SourceError};
use crate::ipld::walk::{Limits, Piece, Walk};
use crate::nix::hash::NarHash;
use crate::p2p::blocks::MAX_CIDS;

/// Bytes per unit: big enough that per-request costs vanish (~16 chunks), small enough that a
/// lost unit costs little and three 10 MB/s peers share even a 20 MB NAR.
pub const UNIT_BYTES: u64 = 1 << 20;
/// Units one source works on at once.
const SOURCE_UNITS: usize = 4;
/// Fallbacks (HTTP, one block per request) get fewer.
const FALLBACK_UNITS: usize = 2;
/// Bytes fetched ahead of what nix has read.
const WINDOW_BYTES: u64 = 32 << 20;
/// A source failing this many units in a row is dropped.
const MAX_FAILURES: u32 = 3;
/// A unit in flight this long marks its source as stalled (dropped, its units re-queued).
const STALLED: Duration = Duration::from_secs(8);
/// The unit nix waits for is asked of a second source when it is this late (or 4× its source's
/// usual time, whichever is longer).
const HEDGE_AFTER: Duration = Duration::from_secs(1);
/// Fallbacks join once the unit nix waits for is this late.
const FALLBACK_AFTER: Duration = Duration::from_secs(2);
/// With no source left for this long, the transfer fails.
const NO_SOURCE_WAIT: Duration = Duration::from_secs(5);
/// One attempt to fetch DAG nodes from one source while planning.
const PLAN_ATTEMPT: Duration = Duration::from_secs(5);
/// Pieces buffered between the driver and the HTTP body.
const OUT_QUEUE: usize = 32;

struct Unit {
    pieces: Range<usize>,
    cids: Vec<Cid>,
    bytes: u64,
}

struct Slot {
    source: Source,
    in_flight: usize,
    dead: bool,
    failures: u32,
    bytes: u64,
    blocks: u64,
    /// Smoothed seconds per unit.
    unit_secs: Option<f64>,
}

type Done = (usize, usize, Result<Vec<Bytes>, SourceError>, Duration);

struct Driver {
    sub: Arc<Substituter>,
    nar: Arc<AcceptedNar>,
    root: Cid,
    pieces: Vec<Piece>,
    units: Vec<Unit>,
    range: Range<u64>,
    hasher: Option<Sha256>,
    slots: Vec<Slot>,
    next: usize,
    requeue: BTreeSet<usize>,
    flying: HashMap<usize, Vec<(usize, Instant, AbortHandle)>>,
    done: HashMap<usize, Vec<Bytes>>,
    emit: usize,
    ahead: u64,
    results: (mpsc::Sender<Done>, mpsc::Receiver<Done>),
    fallbacks_added: bool,
    no_source_since: Option<Instant>,
    id: u64,
    started: Instant,
    sent: u64,
    duplicate: u64,
}

impl Substituter {
    /// Plans the NAR's DAG and starts streaming `range` of it: `None` when no candidate root leads
    /// to a DAG any source can deliver (then nix gets a 404 and moves on).
    pub async fn transfer(
        self: &Arc<Self>,
        nar: Arc<AcceptedNar>,
        range: Range<u64>,
    ) -> Option<impl Stream<Item = io::Result<Bytes>> + Send + 'static> {
        let (root, pieces) = self.plan(&nar).await?;
        let (out, rx) = mpsc::channel(OUT_QUEUE);
        let whole = range.start == 0 && range.end == nar.nar_size;
        let pieces: Vec<Piece> =
            pieces.into_iter().filter(|p| p.offset() < range.end && p.offset() + p.len() > range.start).collect();
        let units = units_of(&pieces);
        let id = self.activity.transfer_started(nar.store_path.to_string(), range.end - range.start);
        let slots = self.peer_sources(&nar, Some(root)).into_iter().map(Slot::new).collect();
        let driver = Driver {
            sub: self.clone(),
            nar,
            root,
            pieces,
            units,
            range,
            hasher: whole.then(Sha256::new),
            slots,
            next: 0,
            requeue: BTreeSet::new(),
            flying: HashMap::new(),
            done: HashMap::new(),
            emit: 0,
            ahead: 0,
            results: mpsc::channel(256),
            fallbacks_added: false,
            no_source_since: None,
            id,
            started: Instant::now(),
            sent: 0,
            duplicate: 0,
        };
        tokio::spawn(driver.run(out));
        Some(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|piece| (piece, rx)) }))
    }

    /// Peerix peers that may have the NAR: those that named `root`, then every connected peer whose
    /// summary matches the path; honest ones first.
    fn peer_sources(&self, nar: &AcceptedNar, root: Option<Cid>) -> Vec<Source> {
        let Some(node) = &self.sources.node else { return Vec::new() };
        let named = nar.roots().into_iter().filter(|r| Some(r.cid) == root).flat_map(|r| r.peers);
        let mut peers: Vec<_> = named.filter(|p| node.peers.is_connected(p)).collect();
        for p in node.peers.matching(&nar.hash) {
            if !peers.contains(&p) {
                peers.push(p);
            }
        }
        // A peer caught lying is used only when no honest one is left.
        let (liars, honest): (Vec<_>, Vec<_>) = peers.into_iter().partition(|p| node.peers.is_dishonest(p));
        let peers = if honest.is_empty() { liars } else { honest };
        peers.into_iter().map(Source::Peer).collect()
    }

    /// The first candidate root whose DAG is a file of exactly NarSize bytes, and its pieces. When
    /// every root known proved wrong (or undeliverable), the peers are asked once more.
    async fn plan(&self, nar: &AcceptedNar) -> Option<(Cid, Vec<Piece>)> {
        if let Some(found) = self.plan_known(nar).await {
            return Some(found);
        }
        self.more_roots(nar).await;
        let found = self.plan_known(nar).await;
        if found.is_none() {
            warn!(path = %nar.store_path, "no root CID of this NAR leads to blocks any source can deliver");
        }
        found
    }

    async fn plan_known(&self, nar: &AcceptedNar) -> Option<(Cid, Vec<Piece>)> {
        for Root { cid, .. } in nar.roots() {
            let mut sources = self.peer_sources(nar, Some(cid));
            sources.extend((0..self.sources.fallbacks.len()).map(Source::Fallback));
            let mut walk = match Walk::new(cid, Some(nar.nar_size), Limits::for_size(nar.nar_size)) {
                Ok(w) => w,
                Err(e) => {
                    self.root_failed(nar, &cid, &e);
                    continue;
                }
            };
            let planned = loop {
                if walk.is_done() {
                    break Some(walk.pieces());
                }
                let Some(blocks) = self.fetch_any(&sources, &walk.wanted()).await else {
                    debug!(path = %nar.store_path, root = %cid, "no source delivered the DAG's nodes");
                    break None;
                };
                if let Err(e) = walk.feed(&blocks) {
                    self.root_failed(nar, &cid, &e);
                    break None;
                }
            };
            if let Some(pieces) = planned {
                return Some((cid, pieces));
            }
        }
        None
    }

    fn root_failed(&self, nar: &AcceptedNar, root: &Cid, why: &dyn std::fmt::Display) {
        warn!(path = %nar.store_path, %root, cause = %why, "refused a NAR root that does not describe the NAR");
        let liars = nar.fail_root(root);
        if let Some(node) = &self.sources.node {
            for p in liars {
                node.peers.caught_lying(p);
                node.peers.count(p, |s| s.bad_blocks += 1);
            }
        }
    }

    /// `cids` (a few DAG nodes) from the first source that delivers them all.
    async fn fetch_any(&self, sources: &[Source], cids: &[Cid]) -> Option<Vec<Bytes>> {
        let mut out = Vec::with_capacity(cids.len());
        for batch in cids.chunks(MAX_CIDS) {
            let mut got = None;
            for source in sources {
                match tokio::time::timeout(PLAN_ATTEMPT, self.sources.fetch(source, batch)).await {
                    Ok(Ok(blocks)) => {
                        got = Some(blocks);
                        break;
                    }
                    Ok(Err(SourceError::BadBlock(c))) => self.caught(source, &c),
                    Ok(Err(e)) => debug!(source = ?source, cause = %e, "DAG nodes not delivered"),
                    Err(_) => debug!(source = ?source, "DAG nodes not delivered in time"),
                }
            }
            out.extend(got?);
        }
        Some(out)
    }

    fn caught(&self, source: &Source, cid: &Cid) {
        warn!(source = ?source, %cid, "a source sent bytes that are not the block asked for");
        if let (Some(node), Some(p)) = (&self.sources.node, source.peer()) {
            node.peers.caught_lying(p);
            node.peers.count(p, |s| s.bad_blocks += 1);
        }
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
    fn new(source: Source) -> Self {
        Self { source, in_flight: 0, dead: false, failures: 0, bytes: 0, blocks: 0, unit_secs: None }
    }

    fn cap(&self) -> usize {
        if self.source.is_fallback() { FALLBACK_UNITS } else { SOURCE_UNITS }
    }
}

impl Driver {
    async fn run(mut self, out: mpsc::Sender<io::Result<Bytes>>) {
        if let Some(node) = self.sub.sources.node.clone()
            && node.dht
        {
            // DHT providers of the root join as they are found (never in `lan` mode).
            let (tx, rx) = mpsc::channel(64);
            let root = self.root;
            tokio::spawn(async move {
                let key = libp2p::kad::RecordKey::new(&root.hash().to_bytes());
                for p in node.client.get_providers(key).await {
                    let source = if node.peers.is_peerix(&p) { Source::Peer(p) } else { Source::Bitswap(p) };
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

    /// Hands units to sources with room, the re-queued ones first, within the window.
    fn assign(&mut self) {
        loop {
            let unit = match self.requeue.first() {
                Some(u) => *u,
                None if self.next < self.units.len() && self.ahead < WINDOW_BYTES => self.next,
                None => return,
            };
            if self.units[unit].cids.is_empty() {
                // Inline data: nothing to fetch.
                self.done.insert(unit, Vec::new());
                self.take(unit);
                continue;
            }
            let Some(slot) = self.best_slot(&[]) else { return };
            self.take(unit);
            self.launch(unit, slot);
        }
    }

    /// Marks `unit` as handed out (from the re-queue or the front).
    fn take(&mut self, unit: usize) {
        if !self.requeue.remove(&unit) {
            self.ahead += self.units[unit].bytes;
            self.next += 1;
        }
    }

    /// The live source with room that is fastest so far (unknown speed counts as fast), not one
    /// of `except`.
    fn best_slot(&self, except: &[usize]) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(i, s)| !s.dead && s.in_flight < s.cap() && !except.contains(i))
            .min_by(|(_, a), (_, b)| {
                let speed = |s: &Slot| s.unit_secs.unwrap_or(0.0) * (1 + s.in_flight) as f64;
                speed(a).total_cmp(&speed(b))
            })
            .map(|(i, _)| i)
    }

    fn launch(&mut self, unit: usize, slot: usize) {
        let (sub, source, cids, tx) =
            (self.sub.clone(), self.slots[slot].source.clone(), self.units[unit].cids.clone(), self.results.0.clone());
        let task = tokio::spawn(async move {
            let t = Instant::now();
            let r = sub.sources.fetch(&source, &cids).await;
            let _ = tx.send((unit, slot, r, t.elapsed())).await;
        });
        self.slots[slot].in_flight += 1;
        self.flying.entry(unit).or_default().push((slot, Instant::now(), task.abort_handle()));
    }

    fn on_done(&mut self, (unit, slot, result, took): Done) {
        if let Some(copies) = self.flying.get_mut(&unit) {
            copies.retain(|(s, _, _)| *s != slot);
        }
        self.slots[slot].in_flight = self.slots[slot].in_flight.saturating_sub(1);
        let peer = self.slots[slot].source.peer();
        match result {
            Ok(blocks) => {
                let bytes: u64 = blocks.iter().map(|b| b.len() as u64).sum();
                if unit < self.emit || self.done.contains_key(&unit) {
                    self.duplicate += bytes;
                    return;
                }
                // The other copy of a hedged unit is not needed any more.
                for (_, _, h) in self.flying.remove(&unit).unwrap_or_default() {
                    h.abort();
                }
                let s = &mut self.slots[slot];
                s.failures = 0;
                s.bytes += bytes;
                s.blocks += blocks.len() as u64;
                let secs = took.as_secs_f64();
                s.unit_secs = Some(s.unit_secs.map_or(secs, |old| 0.7 * old + 0.3 * secs));
                if let (Some(node), Some(p)) = (&self.sub.sources.node, peer) {
                    let n = blocks.len() as u64;
                    node.peers.count(p, |st| {
                        st.blocks_received += n;
                        st.bytes_received += bytes;
                    });
                }
                self.done.insert(unit, blocks);
                self.progress();
            }
            Err(e) => {
                let s = &mut self.slots[slot];
                match &e {
                    SourceError::BadBlock(c) => {
                        s.dead = true;
                        let c = *c;
                        let source = s.source.clone();
                        self.sub.caught(&source, &c);
                    }
                    SourceError::Missing(_) => s.dead = true,
                    SourceError::Failed(_) => {
                        s.failures += 1;
                        s.dead |= s.failures >= MAX_FAILURES;
                    }
                }
                let s = &self.slots[slot];
                debug!(source = ?s.source, unit, cause = %e, dropped = s.dead, "unit not delivered");
                if let (Some(node), Some(p)) = (&self.sub.sources.node, peer) {
                    node.peers.count(p, |st| st.fetch_failures += 1);
                }
                if !self.done.contains_key(&unit) && self.flying.get(&unit).is_none_or(|c| c.is_empty()) {
                    self.flying.remove(&unit);
                    if unit >= self.emit {
                        self.requeue.insert(unit);
                    }
                }
            }
        }
    }

    /// Sends every unit that is ready, in order. `Ok(true)` once everything was sent.
    async fn emit_ready(&mut self, out: &mpsc::Sender<io::Result<Bytes>>) -> Result<bool, String> {
        while let Some(blocks) = self.done.remove(&self.emit) {
            let unit = &self.units[self.emit];
            let mut pieces = Vec::with_capacity(unit.pieces.len());
            let mut blocks = blocks.into_iter();
            for p in &self.pieces[unit.pieces.clone()] {
                let bytes = match p {
                    Piece::Data { bytes, .. } => bytes.clone(),
                    Piece::Block { cid, len, .. } => {
                        let b = blocks.next().ok_or("a unit came back short")?;
                        if b.len() as u64 != *len {
                            self.sub.root_failed(&self.nar, &self.root, &format!("block {cid} is not {len} bytes"));
                            return Err("the NAR's DAG does not match its blocks".into());
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
                return Err("NarHash mismatch".into());
            }
            for piece in pieces {
                self.sent += piece.len() as u64;
                if out.send(Ok(piece)).await.is_err() {
                    return Err("the client went away".into());
                }
            }
        }
        Ok(self.emit == self.units.len())
    }

    /// Brings in fallbacks when no peer is left (or nix waits too long), and gives up when no
    /// source at all has been left for [`NO_SOURCE_WAIT`].
    fn check_sources(&mut self) -> Result<(), String> {
        let live = self.slots.iter().any(|s| !s.dead);
        let head_late = self
            .flying
            .get(&self.emit)
            .and_then(|c| c.iter().map(|(_, t, _)| t.elapsed()).max())
            .is_some_and(|late| late > FALLBACK_AFTER);
        if (!live || head_late) && !self.fallbacks_added {
            self.fallbacks_added = true;
            let n = self.sub.sources.fallbacks.len();
            if n > 0 {
                info!(path = %self.nar.store_path, fallbacks = n, "asking fallbacks for blocks");
            }
            for i in 0..n {
                self.slots.push(Slot::new(Source::Fallback(i)));
            }
        }
        if !live {
            // Peers that connected (or reconnected) since the transfer began.
            for source in self.sub.peer_sources(&self.nar, Some(self.root)) {
                self.add_source(source);
            }
        }
        if self.slots.iter().any(|s| !s.dead) {
            self.no_source_since = None;
            return Ok(());
        }
        let since = *self.no_source_since.get_or_insert_with(Instant::now);
        if since.elapsed() > NO_SOURCE_WAIT {
            return Err("no source left for the NAR's blocks".into());
        }
        Ok(())
    }

    fn add_source(&mut self, source: Source) {
        if !self.slots.iter().any(|s| s.source == source) {
            debug!(path = %self.nar.store_path, source = ?source, "new source joins the transfer");
            self.slots.push(Slot::new(source));
        }
    }

    /// Drops sources whose units stall; asks a second source for the unit nix waits for when late.
    fn check_stalls(&mut self) {
        let mut stalled = Vec::new();
        for (unit, copies) in &self.flying {
            for (slot, started, _) in copies {
                if started.elapsed() > STALLED {
                    stalled.push((*unit, *slot));
                }
            }
        }
        for (unit, slot) in stalled {
            warn!(source = ?self.slots[slot].source, unit, "source stalled; dropping it from the transfer");
            self.slots[slot].dead = true;
            if let Some(node) = &self.sub.sources.node
                && let Some(p) = self.slots[slot].source.peer()
            {
                node.peers.count(p, |st| st.fetch_failures += 1);
            }
            if let Some(copies) = self.flying.get_mut(&unit) {
                copies.retain(|(s, _, h)| {
                    if *s == slot {
                        h.abort();
                    }
                    *s != slot
                });
                if copies.is_empty() {
                    self.flying.remove(&unit);
                    self.requeue.insert(unit);
                }
            }
            self.slots[slot].in_flight = self.slots[slot].in_flight.saturating_sub(1);
        }
        let head = self.emit;
        let Some(copies) = self.flying.get(&head) else { return };
        let busy: Vec<usize> = copies.iter().map(|(s, _, _)| *s).collect();
        let late = copies.iter().all(|(s, started, _)| {
            let usual = self.slots[*s].unit_secs.map(|t| Duration::from_secs_f64(4.0 * t)).unwrap_or_default();
            started.elapsed() > HEDGE_AFTER.max(usual)
        });
        if late && let Some(other) = self.best_slot(&busy) {
            debug!(unit = head, source = ?self.slots[other].source, "unit nix waits for is late; asking a second source");
            self.launch(head, other);
        }
    }

    fn progress(&self) {
        let done: u64 = self.slots.iter().map(|s| s.bytes).sum();
        let sources = self.source_bytes();
        self.sub.activity.transfer_progress(self.id, |v| {
            v.bytes_done = done;
            v.duplicate_bytes = self.duplicate;
            v.secs = self.started.elapsed().as_secs_f64();
            v.sources = sources;
        });
    }

    fn source_bytes(&self) -> Vec<SourceBytes> {
        self.slots
            .iter()
            .filter(|s| s.bytes > 0)
            .map(|s| SourceBytes {
                source: s.source.describe(&self.sub.sources.fallbacks),
                bytes: s.bytes,
                blocks: s.blocks,
            })
            .collect()
    }

    async fn finish(&mut self, out: &mpsc::Sender<io::Result<Bytes>>, outcome: Result<(), String>) {
        let secs = self.started.elapsed().as_secs_f64();
        let mb_per_s = self.sent as f64 / secs.max(1e-6) / 1e6;
        let sources = self.source_bytes();
        let c = &self.sub.activity.counters;
        for s in &self.slots {
            if s.source.is_fallback() { &c.bytes_from_fallbacks } else { &c.bytes_from_peers }
                .fetch_add(s.bytes, Ordering::Relaxed);
        }
        let summary: Vec<String> = sources.iter().map(|s| format!("{}={}", s.source, s.bytes)).collect();
        self.sub.activity.transfer_progress(self.id, |v| {
            v.bytes_done = self.sent;
            v.duplicate_bytes = self.duplicate;
            v.secs = secs;
            v.mb_per_s = mb_per_s;
            v.sources = sources;
        });
        match outcome {
            Ok(()) => {
                info!(path = %self.nar.store_path, bytes = self.sent, secs, mb_per_s, duplicate = self.duplicate,
                    sources = %summary.join(" "), "NAR transfer done");
                self.sub.activity.transfer_ended(self.id, "done".into());
            }
            Err(why) => {
                warn!(path = %self.nar.store_path, bytes = self.sent, %why, sources = %summary.join(" "),
                    "NAR transfer failed; aborting the response");
                let _ = out.send(Err(io::Error::other(why.clone()))).await;
                self.sub.activity.transfer_ended(self.id, format!("failed: {why}"));
            }
        }
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
