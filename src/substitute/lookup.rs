//! Narinfo lookups among peers (ARCHITECTURE §4): for a path that is not local, ask — [`FANOUT`]
//! at a time, in parallel, under one deadline (`--lookup-timeout`) — the connected peerix peers
//! whose have-summary matches; the first answer [`crate::trust::Gate::accept_foreign`] accepts wins
//! and is answered at once. Answers still on their way keep arriving until the deadline and add
//! their root CIDs and their peers to the accepted entry (votes on the root). The transfer that
//! follows fetches from every peer whose summary matches, not only from those asked.
//!
//! When no summary matches, the answer is "not found" without any network round trip: that is
//! what makes a miss (nix asks every substituter about every path of a closure) cost almost
//! nothing. Concurrent lookups of one path share one round of questions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::Substituter;
use super::accepted::AcceptedNar;
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StoreHash;
use crate::p2p::narinfo::{Answer, AskError};
use crate::timeouts::MAX_LOOKUP_STRETCH;
use crate::trust::{Refusal, Source};

/// Peers a lookup asks at once: one honest answer is all it needs, and asking every peer of a
/// LAN about every path of a closure would multiply the load by the number of peers.
const FANOUT: usize = 3;
/// Providers from the tracker a lookup dials and asks at most.
const TRACKED_PEERS: usize = 6;
/// The least a holder the tracker names gets to answer (see `ask_peers`).
const TRACKED_HOLDER_WAIT: Duration = Duration::from_secs(1);
/// Deadlines a peer gets that has not let us down since its last answer (see `ask_peers`).
const BENEFIT_OF_DOUBT: u32 = 3;

/// A lookup in flight, shared by everyone asking for the same path.
pub(super) type Pending = Shared<BoxFuture<'static, Option<Arc<AcceptedNar>>>>;

/// One peer's answer, as the lookup sees it.
type Reply = (PeerId, Result<Option<Answer>, AskError>, Duration);

/// The turn to ask for a closure (`true` when this lookup got it), given back when dropped.
struct ClosureTurn<'a>(bool, &'a std::sync::atomic::AtomicBool);

impl<'a> ClosureTurn<'a> {
    fn take(flag: &'a std::sync::atomic::AtomicBool) -> Self {
        Self(!flag.swap(true, std::sync::atomic::Ordering::AcqRel), flag)
    }
}

impl Drop for ClosureTurn<'_> {
    fn drop(&mut self) {
        if self.0 {
            self.1.store(false, std::sync::atomic::Ordering::Release);
        }
    }
}

impl Substituter {
    /// The accepted narinfo for a path we do not hold, if a peer has one we trust.
    pub(super) async fn lookup(self: &Arc<Self>, hash: StoreHash) -> Option<Arc<AcceptedNar>> {
        // A narinfo nix asks again is answered from memory — while a peer that vouched for it is
        // still connected. Once every one has left, the path is looked up afresh (a 404 without a
        // round trip when no summary lists it), so nix is not sent after a NAR nobody can deliver.
        if let Some(hit) = self.accepted.get(&hash) {
            if self.vouched(&hit) {
                // Asked again (a realisation after a dry run): its NAR is likely wanted next.
                self.prefetch(&hit);
                return Some(hit);
            }
            debug!(%hash, "no live source left for an accepted narinfo; looking it up again");
        }
        if let Some(hit) = self.from_offer(hash).await {
            return Some(hit);
        }
        let node = self.sources.node.as_ref()?;
        let peers = node.peers().matching(&hash);
        if peers.is_empty() && self.tracker.is_none() {
            self.activity.counters.misses_unasked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        let pending = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            inflight
                .entry(hash)
                .or_insert_with(|| {
                    // A task of its own, so a caller that goes away (nix closed the connection)
                    // does not stop the lookup others wait for. It leaves the map when done; it
                    // cannot do so before it is in it, since this lock is held until then.
                    let me = self.clone();
                    let task = crate::tasks::spawn(module_path!(), async move {
                        let found = me.clone().ask_peers(hash, peers).await;
                        me.inflight.lock().unwrap_or_else(|e| e.into_inner()).remove(&hash);
                        found
                    });
                    async move { task.await.ok().flatten() }.boxed().shared()
                })
                .clone()
        };
        pending.await
    }

    /// The narinfo a peer sent with its answer for a path whose closure holds `hash`
    /// ([`super::offered`]), judged as that answer would be now; `None` when there is none, or it
    /// is not trusted or no longer deliverable (then the path is looked up as any other).
    async fn from_offer(self: &Arc<Self>, hash: StoreHash) -> Option<Arc<AcceptedNar>> {
        let (peer, answer) = self.offered.take(&hash)?;
        let started = Instant::now();
        let nar = self.judge(&hash, (peer, Ok(Some(answer)), Duration::ZERO), None).await?;
        if !self.deliverable(&nar) {
            return None;
        }
        let micros = started.elapsed().as_micros() as u64;
        debug!(%hash, %peer, micros, "narinfo from the closure a peer sent");
        self.activity.counters.closure_hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.activity.lookup(hash.as_str(), Some(peer.to_string()), 0, micros);
        self.accepted.insert(nar.clone());
        self.prefetch(&nar);
        Some(nar)
    }

    /// Sends the narinfo request for `hash` (and its `closure`) to `peer` (connecting to it at
    /// `dial` first: a provider the tracker named); the reply arrives on `tx` by `deadline`.
    fn ask(
        &self,
        hash: StoreHash,
        (peer, dial): (PeerId, Option<Vec<Multiaddr>>),
        closure: bool,
        deadline: tokio::time::Instant,
        tx: &mpsc::Sender<Reply>,
    ) {
        let Some(node) = self.sources.node.as_ref() else { return };
        let (tx, node) = (tx.clone(), node.clone());
        node.peers().count(peer, |s| s.lookups_asked += 1);
        node.peers().asking(peer, true);
        crate::tasks::spawn(module_path!(), async move {
            let t = Instant::now();
            let answer = async {
                if let Some(addrs) = dial
                    && !tokio::time::timeout_at(deadline, node.connect(peer, addrs)).await.unwrap_or(false)
                {
                    return Err(AskError::Unreachable);
                }
                match tokio::time::timeout_at(deadline, node.ask_narinfo(peer, &hash, closure)).await {
                    Ok(a) => a,
                    Err(_) => Err(AskError::Late),
                }
            }
            .await;
            node.peers().asking(peer, false);
            if answer.is_ok() {
                node.peers().answered(peer);
            }
            let _ = tx.send((peer, answer, t.elapsed())).await;
        });
    }

    /// Asks the matching peers (honest ones first) [`FANOUT`] at a time: the next ones when these
    /// have all answered without a trusted narinfo, or after a fifth of the deadline. The first
    /// trusted answer wins; later replies of peers already asked add their roots in the background.
    ///
    /// With a tracker, its providers are asked for at once and, when the matching peers are done
    /// without an answer or late, dialled and asked in turn, with a deadline of their own (a late
    /// peer the tracker names too keeps its request and gets that deadline).
    ///
    /// A peer still owing an answer at the deadline that answered other requests of ours within
    /// it is busy, not gone — a seeder a crowd asked ~400 narinfos at once answered them in
    /// 0.2–0.4 s, past the 250 ms deadline, and every node's nix failed with "don't know how to
    /// build" — so the deadline moves on by its length while such answers keep coming, up to
    /// [`MAX_LOOKUP_STRETCH`]. Without recent answers a peer that has not let us down since its
    /// last answer gets [`BENEFIT_OF_DOUBT`] deadlines; a silent one then costs one each time.
    #[tracing::instrument(name = "ask_peers", level = "debug", skip_all, fields(peers = peers.len()))]
    async fn ask_peers(self: Arc<Self>, hash: StoreHash, peers: Vec<PeerId>) -> Option<Arc<AcceptedNar>> {
        let started = Instant::now();
        let timeout = self.lookup_timeout_for(&peers);
        let mut deadline = tokio::time::Instant::now() + timeout;
        let last = tokio::time::Instant::now() + timeout.max(MAX_LOOKUP_STRETCH);
        let mut doubt_until = (tokio::time::Instant::now() + timeout * BENEFIT_OF_DOUBT).min(last);
        let wave = timeout / 5;
        let mut seen: std::collections::HashSet<PeerId> = peers.iter().copied().collect();
        let mut queue: std::collections::VecDeque<(PeerId, Option<Vec<Multiaddr>>)> =
            peers.into_iter().map(|p| (p, None)).collect();
        let mut tracked = self.tracker.clone().map(|t| {
            tokio_util::task::AbortOnDropHandle::new(crate::tasks::spawn(module_path!(), async move {
                t.providers(&hash).await
            }))
        });
        let (tx, mut rx) = mpsc::channel::<Reply>(queue.len().max(FANOUT) + TRACKED_PEERS);
        let mut flying: Vec<PeerId> = Vec::new();
        let mut asked = 0usize;
        let mut next_wave = tokio::time::Instant::now();
        // One peer of one lookup at a time is asked for the closure too: nix asks a closure's
        // narinfos many at once, and each asking for up to 64 had two seeders of a 320-path
        // closure look up ~40 000 narinfos for ~600 questions (loopback: 0.36× nginx, was 0.57–0.68×).
        // The first answer's closure covers most of what nix asks next.
        let turn = ClosureTurn::take(&self.closure_asked);
        let mut closure_left = turn.0;
        let mut summaries_late = false;
        loop {
            let now = tokio::time::Instant::now();
            if ((flying.is_empty() && queue.is_empty()) || summaries_late)
                && let Some(providers) = tracked.take()
            {
                // The same benefit of the doubt as a peer's: 50 nodes asked one tracker for 20
                // paths each at once (N = 51 on 2 cores) and it answered past 250 ms — every
                // lookup that needed it failed, though it never fails to answer.
                let (tracker, relaxed) = (self.tracker.as_ref(), std::sync::atomic::Ordering::Relaxed);
                let patient = tracker.is_some_and(|t| !t.let_down.load(relaxed));
                let wait = if patient { deadline.max(doubt_until) } else { deadline };
                let found = tokio::time::timeout_at(wait, providers).await.ok().and_then(Result::ok);
                if let Some(t) = tracker {
                    t.let_down.store(found.is_none(), relaxed);
                }
                let mut holders = false;
                for (peer, addrs) in found.unwrap_or_default().into_iter().take(TRACKED_PEERS) {
                    holders = true;
                    if seen.insert(peer) {
                        queue.push_back((peer, Some(addrs)));
                    }
                }
                // The tracker lists exactly who holds the path and is present (no false positives,
                // unlike a summary), so its holders get a deadline of their own, of at least
                // [`TRACKED_HOLDER_WAIT`]: a miss never comes here, and a holder that left is
                // unlisted within seconds. In a crowd of 19 on one seeder its first answers to a
                // node asking this way came 0.3 s after the ask, past a 250 ms deadline. The
                // benefit of the doubt counts from here too: a crowd of 50 asking one seeder at
                // once on 2 cores got answers 0.1–1.1 s after asking. A holder already asked (its
                // summary matched) gets the same: the tracker just confirmed it.
                if holders {
                    let now = tokio::time::Instant::now();
                    let own = timeout.max(TRACKED_HOLDER_WAIT);
                    deadline = deadline.max(now + own).min(last);
                    doubt_until = doubt_until.max(now + own * BENEFIT_OF_DOUBT).min(last);
                }
            }
            if (flying.is_empty() || now >= next_wave) && !queue.is_empty() {
                for (peer, dial) in (0..FANOUT).map_while(|_| queue.pop_front()) {
                    let closure = std::mem::take(&mut closure_left);
                    self.ask(hash, (peer, dial), closure, last, &tx);
                    flying.push(peer);
                    asked += 1;
                }
                next_wave = now + wave;
            }
            if flying.is_empty() {
                break;
            }
            let reply = match tokio::time::timeout_at(next_wave.min(deadline), rx.recv()).await {
                Ok(Some(reply)) => reply,
                Ok(None) => break,
                Err(_) if tokio::time::Instant::now() < deadline => continue,
                // An answer that landed as the deadline fired still counts.
                Err(_) if let Ok(reply) = rx.try_recv() => reply,
                Err(_) => match self.sources.node.as_ref() {
                    Some(node) if deadline < last && node.peers().answering(&flying, timeout) => {
                        deadline = (deadline + timeout).min(last);
                        continue;
                    }
                    // No answer lately to judge by: a crowd's node asks its seeder 20 narinfos at
                    // once, and the seeder (answering ~400) sent the first back 0.3–0.7 s later —
                    // past 250 ms. A peer that lets this pass too is let down and judged by its
                    // answers until it answers again (a silent one costs one deadline).
                    Some(node) if deadline < doubt_until && node.peers().not_let_down(&flying) => {
                        deadline = doubt_until;
                        continue;
                    }
                    Some(node) => {
                        for p in &flying {
                            node.peers().let_down(*p);
                        }
                        // The tracker is still to be heard: a crowd member whose one summary
                        // match had let it down before gave up here without ever hearing the
                        // holder the tracker named (N = 51 flash crowd: 3 of 50 nix failed on the
                        // top path's narinfo 0.8 s into a 3 s lookup). Its holders get their own
                        // deadline, a late peer it names too.
                        if tracked.is_some() {
                            summaries_late = true;
                            continue;
                        }
                        break;
                    }
                    None => break,
                },
            };
            flying.retain(|p| *p != reply.0);
            let peer = reply.0;
            let Some(accepted) = self.judge(&hash, reply, None).await else { continue };
            info!(%hash, %peer, micros = started.elapsed().as_micros() as u64, "narinfo from peer");
            self.activity.lookup(hash.as_str(), Some(peer.to_string()), asked, started.elapsed().as_micros() as u64);
            self.accepted.insert(accepted.clone());
            self.prefetch(&accepted);
            drop(tx);
            let (me, nar) = (self.clone(), accepted.clone());
            crate::tasks::spawn(module_path!(), async move {
                while let Ok(Some(reply)) = tokio::time::timeout_at(last, rx.recv()).await {
                    me.judge(&hash, reply, Some(&nar)).await;
                }
            });
            return Some(accepted);
        }
        debug!(%hash, asked, "no peer had a trusted narinfo in time");
        self.activity.lookup(hash.as_str(), None, asked, started.elapsed().as_micros() as u64);
        None
    }

    /// The lookup's deadline: `--lookup-timeout`, or longer when the peers whose summary lists the
    /// path are far or busy ([`crate::p2p::peers::Peers::answer_time`]), at most
    /// [`MAX_LOOKUP_STRETCH`]. Over a 40 ms link a lookup takes a lane's opening and a request
    /// (two round trips) plus its place in the lane's queue, and a fixed 250 ms made hits answer 404
    /// (nix caches that for an hour: "don't know how to build"). A summary match is nearly always
    /// a hit, so waiting for it is what nix wants; a path no summary lists costs no round trip.
    fn lookup_timeout_for(&self, peers: &[PeerId]) -> Duration {
        let Some(node) = &self.sources.node else { return self.lookup_timeout };
        let stretched = node.peers().answer_time(peers).min(MAX_LOOKUP_STRETCH);
        self.lookup_timeout.max(stretched)
    }

    /// Asks the peers whose summary matches for `nar` again, adding the roots they name: for a
    /// transfer whose known roots all proved wrong. Waits for every answer (or the deadline).
    pub(super) async fn more_roots(&self, nar: &AcceptedNar) {
        let Some(node) = self.sources.node.as_ref() else { return };
        let peers = node.peers().matching(&nar.hash);
        let deadline = tokio::time::Instant::now() + self.lookup_timeout_for(&peers);
        let (tx, mut rx) = mpsc::channel::<Reply>(peers.len().max(1));
        for peer in peers {
            self.ask(nar.hash, (peer, None), false, deadline, &tx);
        }
        drop(tx);
        while let Ok(Some(reply)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            self.judge(&nar.hash, reply, Some(nar)).await;
        }
    }

    /// Checks one answer. With `into`, an accepted answer for the same NAR adds its root to it;
    /// without, it becomes a new accepted entry.
    async fn judge(
        &self,
        hash: &StoreHash,
        (peer, answer, took): Reply,
        into: Option<&AcceptedNar>,
    ) -> Option<Arc<AcceptedNar>> {
        let node = self.sources.node.as_ref()?;
        let peers = node.peers();
        let mut answer = match answer {
            Ok(Some(a)) => a,
            Ok(None) => {
                peers.count(peer, |s| s.lookups_not_found += 1);
                return None;
            }
            Err(e) => {
                debug!(%hash, %peer, cause = %e, "narinfo request failed");
                peers.count(peer, |s| s.lookups_failed += 1);
                return None;
            }
        };
        let info = match NarInfo::parse(&answer.narinfo) {
            Ok(i) => i,
            Err(e) => return self.refused(hash, peer, &Refusal::Untrusted("sent a malformed narinfo"), &e),
        };
        let acceptance = match self.cache.gate().accept_foreign(hash, &info).await {
            Ok(a) => a,
            Err(refusal) => return self.refused(hash, peer, &refusal, &refusal),
        };
        peers.count(peer, |s| s.lookups_answered += 1);
        debug!(%hash, %peer, ms = took.as_millis() as u64, root = %answer.root, "trusted narinfo");
        let add_root = |nar: &AcceptedNar, answer: &mut Answer| {
            nar.add_root(answer.root, Some(peer));
            node.watch_namer(peer);
            if let Some(root_node) = answer.root_node.take() {
                nar.add_root_node(&answer.root, root_node);
            }
        };
        if let Some(nar) = into {
            if nar.nar_hash == info.nar_hash {
                add_root(nar, &mut answer);
            }
            return None;
        }
        let served = self.cache.served().narinfo(Source::Peer { narinfo: info, acceptance });
        let nar = Arc::new(AcceptedNar::new(&served, Bytes::from(served.render())));
        add_root(&nar, &mut answer);
        // The rest of the closure, from a peer that just proved honest for this path: each is
        // judged when nix asks for it.
        self.offered.keep(peer, std::mem::take(&mut answer.closure));
        Some(nar)
    }

    fn refused(
        &self,
        hash: &StoreHash,
        peer: PeerId,
        refusal: &Refusal,
        cause: &dyn std::fmt::Display,
    ) -> Option<Arc<AcceptedNar>> {
        let peers = self.sources.node.as_ref()?.peers();
        peers.count(peer, |s| s.untrusted_answers += 1);
        if refusal.is_lie() {
            peers.caught_lying(peer);
            info!(%hash, %peer, %cause, "refused a dishonest narinfo");
        } else {
            debug!(%hash, %peer, %cause, "refused an untrusted narinfo");
        }
        None
    }
}
