//! The fetching side of bitswap: wants waiting for blocks, and sessions that fetch a whole DAG.
//!
//! A want is registered before it is sent; a received block is accepted only if the CID computed
//! from its bytes (sha2-256 over the data, per the prefix it came with) is one we want, so a wrong
//! block can never be delivered — it is counted and dropped. A [`Session`] remembers which peers
//! answered, asks them directly (want-block), and falls back to asking every connected peer
//! (want-have, `sendDontHave`) and then the DHT's providers when they do not have a block or time out.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use libp2p::PeerId;
use libp2p::kad::RecordKey;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

use super::message::{self, DONT_HAVE, Entry, HAVE, Message, WANT_BLOCK, WANT_HAVE, Wantlist};
use super::{Bitswap, Stats};
use crate::ipld::{self, walk};
use crate::timeouts::{BITSWAP_ATTEMPT, BITSWAP_BLOCK_DEADLINE, BITSWAP_NO_PROVIDER_WAIT};

/// Connected peers asked at once when the session knows nobody who has the block.
const BROADCAST_PEERS: usize = 16;
/// Blocks in flight in a DAG fetch: 64 × ≤ 256 KiB keeps a LAN busy with ≤ 16 MiB buffered.
pub const WINDOW: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no peer delivered block {0} within 60 s")]
    Timeout(Cid),
    #[error("no provider for block {0}: no connected peer has it and the DHT names none")]
    NoProvider(Cid),
    #[error("refused the DAG: {0}")]
    Dag(#[from] walk::WalkError),
    #[error("cannot store a received block")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Receives the block and the peer that sent it.
type BlockRx = oneshot::Receiver<(PeerId, Bytes)>;
/// Receives (peer, has it) presences.
type PresenceRx = mpsc::Receiver<(PeerId, bool)>;

struct Waiter {
    block: Vec<oneshot::Sender<(PeerId, Bytes)>>,
    presence: Vec<mpsc::Sender<(PeerId, bool)>>,
}

/// Blocks and presences we are waiting for.
#[derive(Default)]
pub struct Wants {
    map: Mutex<HashMap<Cid, Waiter>>,
}

impl Wants {
    fn register(&self, cid: Cid) -> (BlockRx, PresenceRx) {
        let (btx, brx) = oneshot::channel();
        let (ptx, prx) = mpsc::channel(BROADCAST_PEERS * 2);
        if let Ok(mut m) = self.map.lock() {
            let w = m.entry(cid).or_insert_with(|| Waiter { block: Vec::new(), presence: Vec::new() });
            w.block.push(btx);
            w.presence.push(ptx);
        }
        (brx, prx)
    }

    fn forget(&self, cid: &Cid) {
        if let Ok(mut m) = self.map.lock()
            && let Some(w) = m.get_mut(cid)
        {
            w.block.retain(|s| !s.is_closed());
            w.presence.retain(|s| !s.is_closed());
            if w.block.is_empty() {
                m.remove(cid);
            }
        }
    }

    /// Delivers what `peer` sent: blocks we want (verified by construction), and presences.
    pub(super) fn receive(&self, peer: PeerId, msg: &Message, stats: &Stats) {
        // Hash before taking the lock: sha2-256 runs at ~1.5 GB/s here, so a 4 MiB message (the
        // cap) is ~2.7 ms of hashing that every other message being received would wait out.
        let payload: Vec<Option<Cid>> = msg.payload.iter().map(|b| message::cid_of(&b.prefix, &b.data)).collect();
        // Bitswap 1.0.0: no prefix; a block is one of ours if its sha2-256 matches a wanted CID.
        let bare: Vec<Cid> = msg.blocks.iter().map(|data| ipld::raw_cid(data)).collect();
        let Ok(mut m) = self.map.lock() else { return };
        for (b, cid) in msg.payload.iter().zip(payload) {
            deliver(&mut m, peer, cid, &b.data, stats);
        }
        for (data, digest) in msg.blocks.iter().zip(bare) {
            let cid = m.keys().find(|c| c.hash().digest() == digest.hash().digest()).copied();
            deliver(&mut m, peer, cid, data, stats);
        }
        for p in &msg.block_presences {
            let Ok(cid) = Cid::try_from(p.cid.as_slice()) else { continue };
            if let Some(w) = m.get(&cid) {
                let have = p.r#type == HAVE;
                if have || p.r#type == DONT_HAVE {
                    for tx in &w.presence {
                        let _ = tx.try_send((peer, have));
                    }
                }
            }
        }
    }
}

/// Hands a received block to its waiters, or counts and drops it when nobody wants that CID
/// (including when the bytes do not hash to the CID that was asked for).
fn deliver(m: &mut HashMap<Cid, Waiter>, peer: PeerId, cid: Option<Cid>, data: &Bytes, stats: &Stats) {
    match cid.and_then(|c| m.remove(&c)) {
        Some(w) => {
            stats.blocks_received.fetch_add(1, Ordering::Relaxed);
            stats.bytes_received.fetch_add(data.len() as u64, Ordering::Relaxed);
            for tx in w.block {
                let _ = tx.send((peer, data.clone()));
            }
        }
        None => {
            stats.unwanted_blocks.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "dropping a block nobody asked for (or one that does not match its CID)");
        }
    }
}

/// Peers that have served this DAG so far, best first.
#[derive(Default)]
pub struct Session {
    good: Mutex<Vec<PeerId>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Session {
    fn pick(&self) -> Option<PeerId> {
        let good = self.good.lock().ok()?;
        if good.is_empty() {
            return None;
        }
        Some(good[self.next.fetch_add(1, Ordering::Relaxed) % good.len()])
    }

    fn served(&self, peer: PeerId) {
        if let Ok(mut g) = self.good.lock()
            && !g.contains(&peer)
        {
            g.push(peer);
        }
    }

    fn failed(&self, peer: PeerId) {
        if let Ok(mut g) = self.good.lock() {
            g.retain(|p| *p != peer);
        }
    }
}

fn want(cid: &Cid, want_type: i32, cancel: bool) -> Message {
    Message {
        wantlist: Some(Wantlist {
            entries: vec![Entry { block: cid.to_bytes(), priority: 1, cancel, want_type, send_dont_have: !cancel }],
            full: false,
        }),
        ..Default::default()
    }
}

/// Why a block asked of one peer did not come.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WantError {
    #[error("peer does not have the block")]
    DontHave,
    #[error("peer did not answer in time")]
    Timeout,
}

impl Bitswap {
    /// One block from one peer (want-block, `sendDontHave`), verified by construction and not
    /// stored: for transfers that hand the bytes on (a NAR streamed to nix). A timeout cancels the
    /// want on the peer.
    pub async fn want_from(&self, peer: PeerId, cid: Cid, timeout: Duration) -> Result<Bytes, WantError> {
        let (mut block_rx, mut presence_rx) = self.inner.wants.register(cid);
        self.inner.outbox.send(peer, want(&cid, WANT_BLOCK, false));
        let end = tokio::time::Instant::now() + timeout;
        let result = loop {
            tokio::select! {
                block = &mut block_rx => break block.map(|(_, data)| data).map_err(|_| WantError::Timeout),
                Some((from, have)) = presence_rx.recv() => {
                    if from == peer && !have {
                        break Err(WantError::DontHave);
                    }
                }
                _ = tokio::time::sleep_until(end) => break Err(WantError::Timeout),
            }
        };
        drop((block_rx, presence_rx));
        self.inner.wants.forget(&cid);
        if result.is_err() {
            self.inner.outbox.send(peer, want(&cid, WANT_BLOCK, true));
        }
        result
    }

    /// One block: from the local blockstore if it is there, else from peers. Stored on arrival.
    pub async fn get(&self, cid: Cid, session: &Session) -> Result<Bytes, FetchError> {
        let blocks = self.inner.blocks.clone();
        if let Ok(Ok(Some((data, _)))) = crate::tasks::spawn_blocking(module_path!(), move || blocks.get(&cid)).await {
            return Ok(data);
        }
        let (mut block_rx, mut presence_rx) = self.inner.wants.register(cid);
        let result = self.chase(cid, session, &mut block_rx, &mut presence_rx).await;
        // Our receivers go first, so `forget` sees them closed and drops the waiter (a want that
        // timed out must not stay registered).
        drop((block_rx, presence_rx));
        self.inner.wants.forget(&cid);
        let (peer, data) = result?;
        session.served(peer);
        // Keep it (verified: its CID was computed from these bytes) without holding up the caller.
        self.inner.writer.put(cid, data.clone()).await;
        Ok(data)
    }

    /// Waits until every block fetched so far is in the blockstore.
    pub async fn flush(&self) {
        self.inner.writer.flush().await
    }

    async fn chase(
        &self,
        cid: Cid,
        session: &Session,
        block_rx: &mut BlockRx,
        presence_rx: &mut PresenceRx,
    ) -> Result<(PeerId, Bytes), FetchError> {
        let started = Instant::now();
        let deadline = started + BITSWAP_BLOCK_DEADLINE;
        let mut asked_block: HashSet<PeerId> = HashSet::new();
        let mut dont_have: HashSet<PeerId> = HashSet::new();
        let mut asked_dht = false;
        let mut timed_out = false;
        while Instant::now() < deadline {
            // Whom to ask this round: a peer that served this session, else everyone connected.
            let mut targets = Vec::new();
            if let Some(p) = session.pick().filter(|p| !dont_have.contains(p)) {
                self.inner.outbox.send(p, want(&cid, WANT_BLOCK, false));
                asked_block.insert(p);
                targets.push(p);
            } else {
                let peers = self.inner.node.connected_peers().await;
                for p in peers.into_iter().filter(|p| !dont_have.contains(p)).take(BROADCAST_PEERS) {
                    self.inner.outbox.send(p, want(&cid, WANT_HAVE, false));
                    targets.push(p);
                }
            }
            // The DHT when nobody is connected, and also once the peers asked first stayed silent
            // for a round: a connected peer that never answers must not keep the providers unasked
            // until the deadline (seen: Helia re-dialling after it hung up, silent for 60 s).
            if (targets.is_empty() || timed_out) && !asked_dht {
                asked_dht = true;
                self.inner.stats.provider_lookups.fetch_add(1, Ordering::Relaxed);
                let providers = self.inner.node.get_providers(RecordKey::new(&cid.hash().to_bytes())).await;
                info!(%cid, providers = providers.len(), "looked up providers in the DHT");
                for p in providers.into_iter().filter(|p| *p != self.inner.node.peer_id()) {
                    self.inner.outbox.send(p, want(&cid, WANT_BLOCK, false));
                    asked_block.insert(p);
                    targets.push(p);
                }
            }
            if targets.is_empty() {
                if asked_dht && started.elapsed() >= BITSWAP_NO_PROVIDER_WAIT {
                    return Err(FetchError::NoProvider(cid));
                }
                // Nobody to ask yet: wait for a peer to connect (or the deadline).
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            let attempt_end = tokio::time::Instant::now() + BITSWAP_ATTEMPT;
            let mut pending: HashSet<PeerId> = targets.iter().copied().collect();
            loop {
                tokio::select! {
                    block = &mut *block_rx => {
                        let (from, data) = block.map_err(|_| FetchError::Timeout(cid))?;
                        // Cancel the want everywhere else.
                        for p in asked_block.iter().chain(targets.iter()).collect::<HashSet<_>>() {
                            if *p != from {
                                self.inner.outbox.send(*p, want(&cid, WANT_BLOCK, true));
                            }
                        }
                        return Ok((from, data));
                    }
                    Some((peer, have)) = presence_rx.recv() => {
                        pending.remove(&peer);
                        if have && !asked_block.contains(&peer) {
                            self.inner.outbox.send(peer, want(&cid, WANT_BLOCK, false));
                            asked_block.insert(peer);
                        } else if !have {
                            dont_have.insert(peer);
                            session.failed(peer);
                            if pending.is_empty() && asked_block.iter().all(|p| dont_have.contains(p)) {
                                break;
                            }
                        }
                    }
                    _ = tokio::time::sleep_until(attempt_end) => {
                        timed_out = true;
                        for p in &targets {
                            if !dont_have.contains(p) {
                                session.failed(*p);
                            }
                        }
                        break;
                    }
                }
            }
        }
        Err(FetchError::Timeout(cid))
    }

    /// The bytes of the UnixFS file (or raw block) under `root`, in order, with [`WINDOW`] blocks in
    /// flight. The DAG is planned by the one bounded walk ([`walk`]); every block is verified and
    /// stored as it arrives.
    pub fn fetch_file(&self, root: Cid) -> BoxStream<'static, Result<Bytes, FetchError>> {
        let bs = self.clone();
        let session = Arc::new(Session::default());
        let plan = {
            let (bs, session) = (bs.clone(), session.clone());
            async move {
                let plan = bs.plan(root, &session).await;
                if plan.is_err() {
                    // The blocks fetched before the DAG was refused are verified blocks all the
                    // same: stored before the error is told, as a finished fetch's are.
                    bs.flush().await;
                }
                plan
            }
        };
        futures_util::stream::once(plan)
            .flat_map(move |plan| match plan {
                Err(e) => futures_util::stream::iter([Err(e)]).boxed(),
                Ok(pieces) => {
                    let (bs, session) = (bs.clone(), session.clone());
                    let flusher = bs.clone();
                    // After the last piece: wait until every block is stored, yielding nothing.
                    let flushed = futures_util::stream::once(async move {
                        flusher.flush().await;
                        Ok(Bytes::new())
                    })
                    .filter(|r: &Result<Bytes, FetchError>| futures_util::future::ready(r.is_err()));
                    futures_util::stream::iter(pieces)
                        .map(move |piece| {
                            let (bs, session) = (bs.clone(), session.clone());
                            async move {
                                match piece {
                                    walk::Piece::Data { bytes, .. } => Ok(bytes),
                                    walk::Piece::Block { cid, len, .. } => {
                                        let data = bs.get(cid, &session).await?;
                                        if data.len() as u64 != len {
                                            return Err(FetchError::Dag(walk::WalkError::Size {
                                                cid,
                                                expected: len,
                                                found: data.len() as u64,
                                            }));
                                        }
                                        Ok(data)
                                    }
                                }
                            }
                        })
                        .buffered(WINDOW)
                        .chain(flushed)
                        .boxed()
                }
            })
            .boxed()
    }

    /// Walks the DAG's interior nodes level by level, each level fetched [`WINDOW`] at a time.
    /// A CID a level names several times is fetched once: a DAG that repeats one node 8 000
    /// times costs one want, not 8 000 (its walk still counts every naming against its bounds).
    async fn plan(&self, root: Cid, session: &Arc<Session>) -> Result<Vec<walk::Piece>, FetchError> {
        let mut walk = walk::Walk::new(root, None, walk::Limits::generic())?;
        while !walk.is_done() {
            let wanted = walk.wanted();
            let mut distinct = HashSet::new();
            let once: Vec<Cid> = wanted.iter().copied().filter(|c| distinct.insert(*c)).collect();
            let fetched: HashMap<Cid, Bytes> = futures_util::stream::iter(once)
                .map(|c| {
                    let session = session.clone();
                    async move { self.get(c, &session).await.map(|b| (c, b)) }
                })
                .buffered(WINDOW)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_, _>>()?;
            let blocks: Vec<Bytes> = wanted.iter().filter_map(|c| fetched.get(c).cloned()).collect();
            walk.feed(&blocks)?;
        }
        Ok(walk.pieces())
    }
}
