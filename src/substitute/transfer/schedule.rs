//! The transfer driver's scheduling: which source gets which unit, what happens when a unit comes
//! back (or does not), when fallbacks and new sources join, and when a late unit is asked twice.

use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::driver::{Done, Driver, MAX_FAILURES, MAX_REDIRECTS, MAX_SLOTS, Slot, TransferFailure, WINDOW_BYTES};
use crate::p2p::blocks::IfBusy;
use crate::substitute::sources::{Source, SourceError};
use crate::timeouts::{BLOCKS_ANSWER, DEFERRED_REST, FALLBACK_AFTER, HEDGE_AFTER, NO_SOURCE_WAIT, UNIT_STALLED};

impl Driver {
    /// Hands units to sources with room, the re-queued ones first, within the window.
    pub(super) fn assign(&mut self) {
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
            // Not back to the busy source that sent it elsewhere, while another has room (every
            // new source counts as fast, the busy one too until a unit of it came back).
            let busy: Vec<usize> = self.redirected.get(&unit).map(|r| r.0).into_iter().collect();
            let Some(slot) = self.best_slot(&busy).or_else(|| self.best_slot(&[])) else { return };
            self.take(unit);
            self.launch(unit, slot);
        }
    }

    /// Marks `unit` as handed out (from the re-queue or the front).
    pub(super) fn take(&mut self, unit: usize) {
        if !self.requeue.remove(&unit) {
            self.ahead += self.units[unit].bytes;
            self.next += 1;
        }
    }

    /// The live source with room that is fastest so far (unknown speed counts as fast), not one
    /// of `except` nor one resting after "ask again shortly".
    pub(super) fn best_slot(&self, except: &[usize]) -> Option<usize> {
        let now = Instant::now();
        self.slots
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                !s.dead && s.in_flight < s.cap() && !except.contains(i) && s.resting_until.is_none_or(|t| t <= now)
            })
            .min_by(|(_, a), (_, b)| {
                let speed = |s: &Slot| s.unit_secs.unwrap_or(0.0) * (1 + s.in_flight) as f64;
                speed(a).total_cmp(&speed(b))
            })
            .map(|(i, _)| i)
    }

    pub(super) fn launch(&mut self, unit: usize, slot: usize) {
        let (sub, source, cids, tx) =
            (self.sub.clone(), self.slots[slot].source.clone(), self.units[unit].cids.clone(), self.results.0.clone());
        let if_busy = IfBusy { redirect: self.redirected.get(&unit).is_none_or(|r| r.1 < MAX_REDIRECTS), defer: true };
        let task = crate::tasks::spawn(module_path!(), async move {
            let t = Instant::now();
            let r = sub.sources.fetch(&source, &cids, if_busy).await;
            let _ = tx.send((unit, slot, r, t.elapsed())).await;
        });
        self.slots[slot].in_flight += 1;
        self.flying.entry(unit).or_default().push((slot, Instant::now(), task.abort_handle()));
    }

    pub(super) fn on_done(&mut self, (unit, slot, result, took): Done) {
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
                self.progress.lock().unwrap_or_else(|e| e.into_inner()).last_unit = Some(Instant::now());
                // Checked against their CIDs: other peers may have them from us now.
                self.sub.cache.received.keep(self.units[unit].cids.iter().copied().zip(blocks.iter().cloned()));
                // The other copy of a hedged unit is not needed any more.
                for (_, _, h) in self.flying.remove(&unit).unwrap_or_default() {
                    h.abort();
                }
                let s = &mut self.slots[slot];
                s.failures = 0;
                s.deferring_since = None;
                s.bytes += bytes;
                s.blocks += blocks.len() as u64;
                let secs = took.as_secs_f64();
                s.unit_secs = Some(s.unit_secs.map_or(secs, |old| 0.7 * old + 0.3 * secs));
                if let (Some(node), Some(p)) = (&self.sub.sources.node, peer) {
                    let n = blocks.len() as u64;
                    node.peers().count(p, |st| {
                        st.blocks_received += n;
                        st.bytes_received += bytes;
                    });
                }
                self.done.insert(unit, blocks);
                self.progress();
            }
            Err(SourceError::Busy(others)) => {
                // Busy but answering (its frame counted as an answer): the unit goes to the peers
                // it named, which received it from this source moments ago, and this source keeps
                // its place.
                debug!(source = ?self.slots[slot].source, unit, ?others, "source busy; asking the peers it named");
                let times = self.redirected.get(&unit).map_or(0, |r| r.1);
                self.redirected.insert(unit, (slot, times + 1));
                for p in others {
                    if self.slots.len() < MAX_SLOTS
                        && self.add_source(Source::Peer(p))
                        && let Some(s) = self.slots.last_mut()
                    {
                        s.named = true;
                    }
                }
                self.requeue_if_orphaned(unit);
            }
            Err(SourceError::Deferred) => {
                // Busy but answering (its frame counted as an answer, so the wait for the first
                // bytes goes on): the unit goes back in the queue and the source rests a tick; no
                // failure. A source that only ever defers meets `check_stalls`.
                let s = &mut self.slots[slot];
                s.resting_until = Some(Instant::now() + DEFERRED_REST);
                s.deferring_since.get_or_insert_with(Instant::now);
                self.requeue_if_orphaned(unit);
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
                    SourceError::Missing(_) if !s.named => s.dead = true,
                    SourceError::Missing(_) => {
                        s.failures += 1;
                        s.dead |= s.failures >= MAX_FAILURES;
                    }
                    SourceError::Failed(_) => {
                        s.failures += 1;
                        s.dead |= s.failures >= MAX_FAILURES;
                    }
                    SourceError::Busy(_) | SourceError::Deferred => unreachable!("handled above"),
                }
                let s = &self.slots[slot];
                debug!(source = ?s.source, unit, cause = %e, dropped = s.dead, "unit not delivered");
                if let (Some(node), Some(p)) = (&self.sub.sources.node, peer) {
                    node.peers().count(p, |st| st.fetch_failures += 1);
                }
                self.requeue_if_orphaned(unit);
            }
        }
    }

    /// Back in the queue if no copy of it is in flight and it is still wanted.
    fn requeue_if_orphaned(&mut self, unit: usize) {
        if !self.done.contains_key(&unit) && self.flying.get(&unit).is_none_or(|c| c.is_empty()) {
            self.flying.remove(&unit);
            if unit >= self.emit {
                self.requeue.insert(unit);
            }
        }
    }

    /// Brings in fallbacks when no peer is left (or nix waits too long), and gives up when no
    /// source at all has been left for [`NO_SOURCE_WAIT`].
    pub(super) fn check_sources(&mut self) -> Result<(), TransferFailure> {
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
            return Err(TransferFailure::NoSource);
        }
        Ok(())
    }

    /// Adds `source` unless the transfer has it; true if it was added.
    pub(super) fn add_source(&mut self, source: Source) -> bool {
        if self.slots.iter().any(|s| s.source == source) {
            return false;
        }
        debug!(path = %self.nar.store_path, source = ?source, "new source joins the transfer");
        if let Some(p) = source.peer() {
            self.progress.lock().unwrap_or_else(|e| e.into_inner()).peers.push(p);
        }
        self.slots.push(Slot::new(source));
        true
    }

    /// True if `slot` is the transfer's last live source (peers a busy source named for one unit
    /// do not count: they may hold nothing else) and a peer still connected (its pings
    /// answered: [`crate::p2p::liveness`] closes a silent connection within ~6 s). A seeder under a
    /// crowd queues our unit behind 64 answers for longer than [`UNIT_STALLED`]; dropping it then
    /// left nothing to ask, and the NAR failed (N = 51 flash crowd: 30 of 47 404s were that) —
    /// while waiting costs nothing: the first-byte deadline and the server's answer bound still
    /// hold.
    fn only_hope(&self, slot: usize) -> bool {
        let others = self.slots.iter().enumerate().any(|(i, s)| i != slot && !s.dead && !s.named);
        let connected = match (&self.sub.sources.node, self.slots[slot].source.peer()) {
            (Some(node), Some(p)) => node.peers().is_connected(&p),
            _ => false,
        };
        !others && connected
    }

    /// `slot` is no longer asked (counted as a failure of its peer).
    fn drop_slot(&mut self, slot: usize) {
        self.slots[slot].dead = true;
        if let Some(node) = &self.sub.sources.node
            && let Some(p) = self.slots[slot].source.peer()
        {
            node.peers().count(p, |st| st.fetch_failures += 1);
        }
    }

    /// Drops sources whose units stall; asks a second source for the unit nix waits for when late.
    pub(super) fn check_stalls(&mut self) {
        let mut stalled = Vec::new();
        for (unit, copies) in &self.flying {
            for (slot, started, _) in copies {
                if started.elapsed() > UNIT_STALLED {
                    stalled.push((*unit, *slot));
                }
            }
        }
        for (unit, slot) in stalled {
            if self.only_hope(slot) {
                if !std::mem::replace(&mut self.slots[slot].patient, true) {
                    debug!(source = ?self.slots[slot].source, unit, "only source is slow but connected; waiting on it");
                }
                continue;
            }
            warn!(source = ?self.slots[slot].source, unit, "source stalled; dropping it from the transfer");
            self.drop_slot(slot);
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
        // A source that only says "ask again" is as stalled as one that says nothing — but the
        // last one is waited on as long as a request queued at it could have waited.
        for slot in 0..self.slots.len() {
            let Some(since) = self.slots[slot].deferring_since.filter(|_| !self.slots[slot].dead) else { continue };
            let waited = since.elapsed();
            if waited > UNIT_STALLED && (waited > BLOCKS_ANSWER || !self.only_hope(slot)) {
                warn!(source = ?self.slots[slot].source, ?waited, "source only asks us to ask again; dropping it from the transfer");
                self.drop_slot(slot);
            }
        }
        let head = self.emit;
        let Some(copies) = self.flying.get(&head) else { return };
        // Neither a source working on it nor one that said it is too busy for it: in a crowd
        // every unit is late, and a second copy from the seeder is what it asked us not to take.
        let busy: Vec<usize> =
            copies.iter().map(|(s, _, _)| *s).chain(self.redirected.get(&head).map(|r| r.0)).collect();
        let late = copies.iter().all(|(s, started, _)| {
            let usual = self.slots[*s].unit_secs.map(|t| Duration::from_secs_f64(4.0 * t)).unwrap_or_default();
            started.elapsed() > HEDGE_AFTER.max(usual)
        });
        if late && let Some(other) = self.best_slot(&busy) {
            debug!(unit = head, source = ?self.slots[other].source, "unit nix waits for is late; asking a second source");
            self.launch(head, other);
        }
    }
}
