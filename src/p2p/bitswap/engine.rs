//! The bitswap engine: [`Bitswap`] answers wants from its inbound streams (paced per peer, gated
//! by [`crate::blocks::Blocks`]) and holds the client side ([`super::client`]) and its stats.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cid::Cid;
use libp2p::{PeerId, StreamProtocol};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::message::{Block, BlockPresence, DONT_HAVE, HAVE, Message, WANT_BLOCK};
use super::{budget, client, message, outbox, writer};
use crate::blocks::Blocks;
use crate::p2p::{Client, P2pError};

pub const PROTOCOL_1_2_0: StreamProtocol = StreamProtocol::new("/ipfs/bitswap/1.2.0");
pub const PROTOCOL_1_1_0: StreamProtocol = StreamProtocol::new("/ipfs/bitswap/1.1.0");
pub const PROTOCOL_1_0_0: StreamProtocol = StreamProtocol::new("/ipfs/bitswap/1.0.0");
pub const PROTOCOL_LEGACY: StreamProtocol = StreamProtocol::new("/ipfs/bitswap");
/// Every version we accept; outbound streams try them in this order.
pub const PROTOCOLS: [StreamProtocol; 4] = [PROTOCOL_1_2_0, PROTOCOL_1_1_0, PROTOCOL_1_0_0, PROTOCOL_LEGACY];

/// Blocks this small are sent in place of a HAVE (boxo `DefaultWantHaveReplaceSize`, Helia likewise).
const REPLACE_HAVE_WITH_BLOCK: u64 = 1024;
/// Wants answered from one message; the rest are ignored (boxo caps queued entries per peer at 1024).
const MAX_WANTS_PER_MESSAGE: usize = 1024;
/// Inbound streams served at once; a further stream is dropped (and the peer retries).
const MAX_INBOUND_STREAMS: usize = 256;
/// Inbound streams one peer may have open at once: boxo keeps one per peer and Helia opens one per
/// message and closes it, so even a busy honest peer stays far below this.
const STREAMS_PER_PEER: usize = 32;
/// Streams refused to one peer (while it holds [`STREAMS_PER_PEER`]) before it is disconnected: a
/// peer that keeps opening streams beyond its share is flooding, not bursting.
const REFUSALS_BEFORE_DROP: u32 = 64;
/// Messages of one stream answered at once.
const MESSAGES_IN_FLIGHT: usize = 4;
/// Payload bytes per response message (then a new one; a message carries at least one block).
/// Small messages let the receiver verify one while the next is on the wire: 2 MiB messages made
/// a 1 GiB fetch ~20 % slower (and ~25 % without storing) than 256 KiB ones; 64 KiB ones were no
/// faster than 256 KiB.
const RESPONSE_PAYLOAD: usize = 256 << 10;

/// Counters for `/api/status`.
#[derive(Default, Serialize)]
pub struct Stats {
    pub blocks_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub blocks_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub unwanted_blocks: AtomicU64,
    /// Inbound streams refused because their peer had [`STREAMS_PER_PEER`] open.
    pub streams_refused: AtomicU64,
    /// Wants that waited because their peer was over its rate ([`budget::WANTS_PER_SECOND`]).
    pub wants_paced: AtomicU64,
    pub peers_dropped: AtomicU64,
    pub provider_lookups: AtomicU64,
}

#[derive(Clone)]
pub struct Bitswap {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) blocks: Arc<Blocks>,
    pub(super) node: Client,
    pub(super) wants: client::Wants,
    pub(super) outbox: outbox::Outbox,
    pub(super) writer: writer::Writer,
    pub(super) stats: Stats,
    /// Open inbound streams and refusals per peer (an entry lives while the peer has a stream).
    pub(super) streams: std::sync::Mutex<HashMap<PeerId, (usize, u32)>>,
    pub(super) budgets: budget::Budgets,
}

impl Bitswap {
    /// Registers every bitswap protocol and starts the accept loops.
    pub fn start(
        control: libp2p_stream::Control,
        blocks: Arc<Blocks>,
        node: Client,
        shutdown: CancellationToken,
    ) -> Result<Self, P2pError> {
        let bitswap = Self {
            inner: Arc::new(Inner {
                blocks: blocks.clone(),
                node,
                wants: client::Wants::default(),
                outbox: outbox::Outbox::new(control.clone()),
                writer: writer::Writer::start(blocks.clone()),
                stats: Stats::default(),
                streams: Default::default(),
                budgets: budget::Budgets::new(budget::WANTS_PER_SECOND),
            }),
        };
        // One budget over every version: a peer cannot double it by speaking two.
        let slots = Arc::new(Semaphore::new(MAX_INBOUND_STREAMS));
        for protocol in PROTOCOLS {
            let (bs, slots) = (bitswap.clone(), slots.clone());
            let mut control = control.clone();
            crate::p2p::inbound::accept(
                &mut control,
                protocol.clone(),
                slots,
                usize::MAX,
                shutdown.clone(),
                move |peer, stream| {
                    let (bs, protocol) = (bs.clone(), protocol.clone());
                    async move { bs.serve_stream(peer, stream, protocol).await }
                },
            )?;
        }
        Ok(bitswap)
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    pub fn blocks(&self) -> &Arc<Blocks> {
        &self.inner.blocks
    }

    /// Reads messages from one inbound stream until it ends. Up to [`MESSAGES_IN_FLIGHT`] are
    /// answered at once (block lookups overlap the next read; bitswap answers need no order).
    async fn serve_stream(&self, peer: PeerId, mut stream: libp2p::Stream, protocol: StreamProtocol) {
        let Some(_open) = self.admit(peer) else { return };
        let in_flight = Arc::new(Semaphore::new(MESSAGES_IN_FLIGHT));
        loop {
            match message::read(&mut stream).await {
                Ok(Some(msg)) => {
                    let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
                    let (bs, protocol) = (self.clone(), protocol.clone());
                    crate::tasks::spawn(module_path!(), async move {
                        bs.on_message(peer, msg, &protocol).await;
                        drop(permit);
                    });
                }
                Ok(None) => break,
                Err(message::WireError::Io(e)) => {
                    debug!(%peer, cause = %e, "bitswap stream ended");
                    break;
                }
                Err(e) => {
                    warn!(%peer, cause = %e, "malformed bitswap message; dropping the peer");
                    self.inner.stats.peers_dropped.fetch_add(1, Ordering::Relaxed);
                    self.inner.node.disconnect(peer);
                    break;
                }
            }
        }
    }

    /// Counts a new stream of `peer` against its share; `None` (the stream is dropped) over it, and
    /// the peer is disconnected once it has been refused [`REFUSALS_BEFORE_DROP`] times.
    fn admit(&self, peer: PeerId) -> Option<OpenStream> {
        let mut streams = self.inner.streams.lock().unwrap_or_else(|e| e.into_inner());
        let (open, refused) = streams.entry(peer).or_default();
        if *open < STREAMS_PER_PEER {
            *open += 1;
            return Some(OpenStream { bitswap: self.clone(), peer });
        }
        *refused += 1;
        self.inner.stats.streams_refused.fetch_add(1, Ordering::Relaxed);
        if *refused == REFUSALS_BEFORE_DROP {
            warn!(%peer, streams = *open, "peer keeps opening bitswap streams beyond its share; dropping it");
            self.inner.stats.peers_dropped.fetch_add(1, Ordering::Relaxed);
            self.inner.node.disconnect(peer);
        }
        None
    }

    async fn on_message(&self, peer: PeerId, msg: Message, protocol: &StreamProtocol) {
        if !msg.payload.is_empty() || !msg.blocks.is_empty() || !msg.block_presences.is_empty() {
            self.inner.wants.receive(peer, &msg, &self.inner.stats);
        }
        let Some(wantlist) = msg.wantlist else { return };
        let wants: Vec<(Cid, i32, bool)> = wantlist
            .entries
            .into_iter()
            .filter(|e| !e.cancel)
            .take(MAX_WANTS_PER_MESSAGE)
            .filter_map(|e| Cid::try_from(e.block.as_slice()).ok().map(|c| (c, e.want_type, e.send_dont_have)))
            .collect();
        if wants.is_empty() {
            return;
        }
        if self.inner.budgets.spend(peer, wants.len()).await {
            self.inner.stats.wants_paced.fetch_add(wants.len() as u64, Ordering::Relaxed);
        }
        // Sizes from the index first: a want-have is answered without reading the block.
        let blocks = self.inner.blocks.clone();
        let cids: Vec<Cid> = wants.iter().map(|w| w.0).collect();
        let sizes = crate::tasks::spawn_blocking(module_path!(), move || {
            cids.iter().map(|c| blocks.size_of(c).ok().flatten()).collect::<Vec<Option<u64>>>()
        })
        .await
        .unwrap_or_default();
        let presences_ok = *protocol == PROTOCOL_1_2_0;
        let mut out = Message::default();
        let mut send = Vec::new();
        for ((cid, want_type, send_dont_have), size) in wants.into_iter().zip(sizes) {
            match size {
                Some(n) if want_type == WANT_BLOCK || n <= REPLACE_HAVE_WITH_BLOCK || !presences_ok => {
                    send.push(Wanted { cid, size: n, send_dont_have: send_dont_have && presences_ok })
                }
                Some(_) => out.block_presences.push(BlockPresence { cid: cid.to_bytes(), r#type: HAVE }),
                None if send_dont_have && presences_ok => {
                    out.block_presences.push(BlockPresence { cid: cid.to_bytes(), r#type: DONT_HAVE })
                }
                None => {}
            }
        }
        // Then the blocks, one response (≤ RESPONSE_PAYLOAD, or one block) read at a time and only
        // once the previous one is queued for the peer: a message of 1024 want-blocks holds at most
        // a response's worth in memory, and a peer that stops reading stops the reads.
        let mut rest = send.as_slice();
        loop {
            let (now, later) = rest.split_at(response_batch(rest));
            rest = later;
            if !now.is_empty() {
                self.read_into(&mut out, now.to_vec()).await;
            }
            let empty = out.payload.is_empty() && out.block_presences.is_empty();
            if !empty && !self.inner.outbox.respond(peer, std::mem::take(&mut out)).await {
                return;
            }
            if rest.is_empty() {
                return;
            }
        }
    }

    /// Reads `wanted` (on a blocking thread) into `out`'s payload; one that has gone since its size
    /// was looked up gets a DONT_HAVE when the peer asked for those.
    async fn read_into(&self, out: &mut Message, wanted: Vec<Wanted>) {
        let blocks = self.inner.blocks.clone();
        let read = crate::tasks::spawn_blocking(module_path!(), move || {
            wanted.into_iter().map(|w| (blocks.get(&w.cid).ok().flatten().map(|(d, _)| d), w)).collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let stats = &self.inner.stats;
        for (data, w) in read {
            match data {
                Some(d) => {
                    stats.blocks_sent.fetch_add(1, Ordering::Relaxed);
                    stats.bytes_sent.fetch_add(d.len() as u64, Ordering::Relaxed);
                    out.payload.push(Block { prefix: message::prefix_of(&w.cid), data: d });
                }
                None if w.send_dont_have => {
                    out.block_presences.push(BlockPresence { cid: w.cid.to_bytes(), r#type: DONT_HAVE })
                }
                None => {}
            }
        }
    }
}

/// One admitted inbound stream; its peer's count goes down when it ends.
struct OpenStream {
    bitswap: Bitswap,
    peer: PeerId,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut streams = self.bitswap.inner.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((open, _)) = streams.get_mut(&self.peer) {
            *open -= 1;
            if *open == 0 {
                streams.remove(&self.peer);
            }
        }
    }
}

/// How many of `wanted` go in the next response: those that fit in [`RESPONSE_PAYLOAD`], at least one.
fn response_batch(wanted: &[Wanted]) -> usize {
    let mut total = 0;
    let fit = wanted
        .iter()
        .take_while(|w| {
            total += w.size;
            total <= RESPONSE_PAYLOAD as u64
        })
        .count();
    fit.max(1).min(wanted.len())
}

/// A block a peer will get, with the size the index gives for it.
#[derive(Clone)]
struct Wanted {
    cid: Cid,
    size: u64,
    send_dont_have: bool,
}
