//! `/peerix/blocks/1.0.0`: the bulk path between peerix nodes. A request (pipelined on a
//! long-lived stream: [`crate::p2p::lanes`]) names up to [`MAX_CIDS`] blocks; the answer is one frame per block, in the order asked: `0x00 ‖ bytes` or
//! `0x01` (not here), or, from a busy node to an asker that allows it, `0x03 ‖ Redirect` then
//! `0x03` for each other block: "busy, these peers just received them from me"
//! ([`super::recipients`]; a flash crowd spreads over the nodes that already have a unit instead
//! of queueing at one seeder), or `0x03 ‖ Redirect{}` naming nobody: "busy, ask again shortly",
//! sent at once where the request would otherwise wait in silence for a slot or for a first copy
//! to land (the asker's first-byte wait then knows the seeder is alive). Bitswap stays for every
//! other IPFS node; between peerix nodes this carries a NAR's chunks with no wantlists, presences
//! or per-block messages, and gives the transfer scheduler one request it can time and re-assign
//! as a unit.
//!
//! The server reads each block through [`Blocks`] (the publish gate's one read path: a private
//! path's chunks are as absent as unknown ones; local chunks are checked against their CID before
//! they leave), one block ahead of the socket. The client checks every block against the CID it
//! asked for before anyone sees it ([`fetch`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use futures_util::AsyncWriteExt;
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::inbound::PerPeer;
use super::lanes::{self, LaneError, Lanes};
use super::recipients::{self, Recipients};
use super::{P2pError, frame, peers::Peers};
use crate::blocks::Blocks;
use crate::ipld::{self, MAX_BLOCK};
use crate::timeouts::{BLOCK_WRITE_STALL, BLOCKS_ANSWER, PEER_REQUEST_WAIT};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/peerix/blocks/1.0.0");

/// Blocks one request may name: 64 × ≤ 256 KiB NAR chunks is ≤ 16 MiB, ~1 MiB on average.
pub const MAX_CIDS: usize = 64;
/// A request: 64 CIDs of ≤ 40 bytes plus protobuf framing.
const MAX_REQUEST: usize = 4096;
/// Streams (lanes) open at once; more are dropped (the asker re-assigns the unit).
const MAX_STREAMS: usize = 512;
/// Requests answered at once (each reads up to [`READ_AHEAD`] blocks ahead); the rest wait.
const MAX_ANSWERS: usize = 64;
/// Answers one peer may have in progress at once, so a few peers that ask and never read cannot
/// hold every slot: a peerix asker keeps ≤ 4 lanes to a peer (one request in progress on each),
/// twice that leaves room for lanes it has just replaced. A request over the share ends its lane.
const PEER_ANSWERS: usize = 8;
/// Answers in progress from which a node counts as busy and may name recent recipients instead:
/// one asker holds at most 4 (its lanes), so a lone client never meets this. At 16, a crowd of 19
/// had the seeder serve its tail itself (load dips below 16 as the crowd finishes): 6.2×.
const BUSY_ANSWERS: usize = 8;
/// Copies of one unit a busy node sends at once before an asker that allows it waits for the
/// first to arrive and is sent to its recipient: a crowd of 50 asking for a unit nobody else had
/// got 64 copies of it from the seeder at once (7.7–12.6× the closure uploaded).
const FIRST_COPIES: usize = 2;
/// The longest such a wait; then the copy is sent from here after all. One 1 MiB unit takes
/// 1–4 s under that crowd on 2 cores.
const COPY_WAIT: Duration = Duration::from_secs(3);
/// Blocks smaller than this are copied behind their frame's prefix ([`write_block`]).
const COPY_BELOW: usize = 16 << 10;
/// Blocks read ahead of the socket per request.
const READ_AHEAD: usize = 2;

const HAVE: u8 = 0;
const DONT_HAVE: u8 = 1;
const HAVE_ZSTD: u8 = 2;
const BUSY: u8 = 3;

/// Blocks are asked for compressed from a peer at least this far away (its smallest round trip:
/// [`super::peers::Peers::distance`]): a LAN is under a millisecond, a link across a city or the
/// internet is tens.
pub const COMPRESS_ABOVE_RTT: Duration = Duration::from_millis(5);
/// zstd's fastest level: the link, not the seeder's core, should stay the limit.
const ZSTD_LEVEL: i32 = 1;

pub mod wire {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        /// Binary CIDs.
        #[prost(bytes = "vec", repeated, tag = "1")]
        pub cids: Vec<Vec<u8>>,
        /// Send blocks zstd-compressed where that saves bytes (a slow link).
        #[prost(bool, tag = "2")]
        pub compress: bool,
        /// A busy server may answer with peers to ask instead (older askers never set it).
        #[prost(bool, tag = "3")]
        pub may_redirect: bool,
        /// A busy server may answer "ask again shortly" instead of making the request wait.
        #[prost(bool, tag = "4")]
        pub may_defer: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Redirect {
        /// Binary peer IDs.
        #[prost(bytes = "vec", repeated, tag = "1")]
        pub peers: Vec<Vec<u8>>,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Lane(#[from] LaneError),
    #[error("peer does not have block {0}")]
    Missing(Cid),
    #[error("peer sent bytes that are not block {0}")]
    Mismatch(Cid),
    #[error("peer answered with a malformed frame")]
    Malformed,
    #[error("request names {0} blocks (at most 64)")]
    TooMany(usize),
    #[error("peer is busy and named {} others that have the blocks", .0.len())]
    Busy(Vec<PeerId>),
    #[error("peer is busy and asked us to ask again shortly")]
    Deferred,
}

/// What a busy server may answer in place of the blocks (an older asker allows neither).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfBusy {
    /// Name peers that just received the blocks ([`FetchError::Busy`]).
    pub redirect: bool,
    /// Say "ask again shortly" at once rather than hold the request ([`FetchError::Deferred`]).
    pub defer: bool,
}

/// True if `cids` are DAG nodes only (a transfer's plan: small, from SQLite): they never queue
/// behind a crowd's bulk bytes, at the server (no answer slot) nor at the asker (lanes of their
/// own) — every asker's first step would wait for a slot.
pub fn metadata(cids: &[Cid]) -> bool {
    !cids.is_empty() && cids.iter().all(|c| c.codec() == ipld::DAG_PB)
}

/// Fetches `cids` from `peer` on a lane ([`super::lanes`]), every block checked against its CID;
/// compressed on the wire when `compress`; what a busy peer may answer instead is `if_busy`.
pub async fn fetch(
    lanes: &Lanes,
    peer: PeerId,
    cids: &[Cid],
    compress: bool,
    if_busy: IfBusy,
) -> Result<Vec<Bytes>, FetchError> {
    if cids.len() > MAX_CIDS {
        return Err(FetchError::TooMany(cids.len()));
    }
    let mut request = Vec::with_capacity(16 + cids.len() * 40);
    let cids_bytes = cids.iter().map(|c| c.to_bytes()).collect();
    let ask = wire::Request { cids: cids_bytes, compress, may_redirect: if_busy.redirect, may_defer: if_busy.defer };
    frame::encode_message(&mut request, &ask);
    let frames = lanes.request(peer, request.into(), cids.len(), MAX_BLOCK + 1).await?;
    if let Some(first) = frames.first()
        && first.first() == Some(&BUSY)
    {
        return Err(redirected(&first[1..], if_busy)?);
    }
    let mut out = Vec::with_capacity(cids.len());
    for (cid, body) in cids.iter().zip(frames) {
        let data = unpack(cid, body)?;
        if !ipld::verify(cid, &data) {
            return Err(FetchError::Mismatch(*cid));
        }
        out.push(data);
    }
    Ok(out)
}

/// What a busy server answered: the peers it named, or (naming nobody) "ask again shortly";
/// either one the asker did not allow is malformed.
fn redirected(body: &[u8], allowed: IfBusy) -> Result<FetchError, FetchError> {
    let r = <wire::Redirect as prost::Message>::decode(body).map_err(|_| FetchError::Malformed)?;
    if r.peers.is_empty() {
        return if allowed.defer { Ok(FetchError::Deferred) } else { Err(FetchError::Malformed) };
    }
    let peers: Vec<PeerId> =
        r.peers.iter().take(recipients::NAMED).filter_map(|p| PeerId::from_bytes(p).ok()).collect();
    if !allowed.redirect || peers.is_empty() {
        return Err(FetchError::Malformed);
    }
    Ok(FetchError::Busy(peers))
}

/// The block in one answer frame, unchecked.
fn unpack(cid: &Cid, body: Bytes) -> Result<Bytes, FetchError> {
    match body.first() {
        Some(&HAVE) => Ok(body.slice(1..)),
        // Bounded: a frame that inflates past a block's size is refused, not followed.
        Some(&HAVE_ZSTD) => {
            Ok(zstd::bulk::decompress(&body[1..], MAX_BLOCK).map_err(|_| FetchError::Malformed)?.into())
        }
        Some(&DONT_HAVE) if body.len() == 1 => Err(FetchError::Missing(*cid)),
        _ => Err(FetchError::Malformed),
    }
}

/// Serves block requests from `blocks` until `shutdown`.
pub fn serve(
    control: &mut libp2p_stream::Control,
    blocks: Arc<Blocks>,
    peers: Arc<Peers>,
    shutdown: CancellationToken,
) -> Result<(), P2pError> {
    let slots = Arc::new(Semaphore::new(MAX_STREAMS));
    let work = Answers { slots: Semaphore::new(MAX_ANSWERS), per_peer: Arc::new(PerPeer::new(PEER_ANSWERS)) };
    let work = Arc::new(work);
    let recipients = Arc::new(Recipients::default());
    super::inbound::accept(control, PROTOCOL, slots, super::inbound::PER_PEER, shutdown, move |peer, stream| {
        let (blocks, peers, work, recipients) = (blocks.clone(), peers.clone(), work.clone(), recipients.clone());
        async move {
            let served =
                lanes::serve_requests(stream, MAX_REQUEST, PEER_REQUEST_WAIT, BLOCKS_ANSWER, |body, stream| {
                    answer(peer, body, stream, blocks.clone(), &peers, &work, &recipients)
                });
            if let Err(e) = served.await {
                debug!(%peer, cause = %e, "block stream ended");
            }
        }
    })
}

/// The answers in progress: [`MAX_ANSWERS`] at once, [`PEER_ANSWERS`] of them per peer.
struct Answers {
    slots: Semaphore,
    per_peer: Arc<PerPeer>,
}

/// Answers one request on `stream`: every block asked for, in order — or, when this node is busy
/// ([`BUSY_ANSWERS`]) and the asker allows it, the peers we lately sent the same blocks to.
async fn answer(
    peer: PeerId,
    body: Bytes,
    mut stream: libp2p::Stream,
    blocks: Arc<Blocks>,
    peers: &Peers,
    answers: &Answers,
    recipients: &Recipients,
) -> Result<libp2p::Stream, LaneError> {
    let work = &answers.slots;
    peers.heard_from(peer);
    let req = <wire::Request as prost::Message>::decode(body).map_err(|_| LaneError::Malformed)?;
    if req.cids.len() > MAX_CIDS {
        return Err(LaneError::Malformed);
    }
    let cids: Option<Vec<Cid>> = req.cids.iter().map(|raw| Cid::try_from(raw.as_slice()).ok()).collect();
    let cids = cids.filter(|c| !c.is_empty());
    let metadata = cids.as_ref().is_some_and(|c| metadata(c));
    // Busy: a crowd is here (each asker keeps ≤ 4 requests in flight at a peer, so 19 askers hold
    // ~76 answers and few ever wait for a slot). An asker that allows it is sent to the unit's
    // recent recipients, checked again once a slot is free: in a flash crowd every request comes
    // at once, before anyone holds a unit, and the first recipients appear while the rest wait.
    let busy = || !metadata && MAX_ANSWERS - work.available_permits() >= BUSY_ANSWERS;
    let redirectable = |busy: bool| req.may_redirect && busy && cids.is_some();
    if redirectable(busy())
        && let Some(c) = &cids
    {
        if redirect(&mut stream, peer, c, peers, recipients).await? {
            return Ok(stream);
        }
        // Nobody has the unit yet, and copies of it are on their way: the first to arrive makes
        // a recipient to name, instead of one more copy from here. An asker that allows it asks
        // again shortly rather than wait here in silence.
        if req.may_defer && recipients.under_way(c) >= FIRST_COPIES {
            return defer(stream, peer, c.len(), "copies of the unit are on their way").await;
        }
        recipients.await_copy(c, FIRST_COPIES, COPY_WAIT).await;
        if redirect(&mut stream, peer, c, peers, recipients).await? {
            return Ok(stream);
        }
    }
    // Every slot taken: an asker that allows it is told so at once. Waiting here says nothing
    // for seconds, and an asker whose NAR has no first bytes yet then answers nix 404 (N = 51
    // flash crowd: 10–13 of 50 failed so).
    if req.may_defer
        && !metadata
        && work.available_permits() == 0
        && let Some(c) = &cids
    {
        return defer(stream, peer, c.len(), "every answer slot is taken").await;
    }
    let _share = if metadata {
        None
    } else {
        let Some(share) = answers.per_peer.take(peer) else {
            debug!(%peer, "peer has too many answers in progress; ending its lane");
            return Err(LaneError::Dropped);
        };
        Some(share)
    };
    let waits = !metadata && work.available_permits() == 0;
    if waits {
        debug!(%peer, "every answer slot is taken; the request waits");
    }
    let _permit = if metadata { None } else { Some(work.acquire().await.map_err(|_| LaneError::Dropped)?) };
    if waits
        && redirectable(busy())
        && let Some(c) = &cids
        && redirect(&mut stream, peer, c, peers, recipients).await?
    {
        return Ok(stream);
    }
    let _sending = cids.as_ref().filter(|_| !metadata).and_then(|c| recipients.sending(c));
    let asked = req.cids.len() as u64;
    // One blocking task reads the blocks in order (file reads, SQLite) and hands each over as it is
    // ready, [`READ_AHEAD`] ahead of the socket: one thread handoff per request, not one per block.
    // Compression runs there too, off the async workers.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<(u8, Bytes, usize)>>(READ_AHEAD);
    let compress = req.compress;
    crate::tasks::spawn_blocking(module_path!(), move || {
        for raw in req.cids {
            let block =
                Cid::try_from(raw.as_slice()).ok().and_then(|cid| blocks.get(&cid).ok().flatten()).map(|(d, _)| d);
            let framed = block.map(|data| {
                let len = data.len();
                let packed = compress.then(|| zstd::bulk::compress(&data, ZSTD_LEVEL).ok()).flatten();
                match packed {
                    Some(z) if z.len() < len - len / 10 => (HAVE_ZSTD, Bytes::from(z), len),
                    _ => (HAVE, data, len),
                }
            });
            if tx.blocking_send(framed).is_err() {
                return;
            }
        }
    });
    let (mut sent, mut bytes) = (0u64, 0u64);
    while let Some(block) = rx.recv().await {
        match block {
            Some((status, data, len)) => {
                // A peer that stops reading holds its answer slot this long, not the whole answer's
                // time (16 MiB at a slow link's pace); one block at any link we serve is seconds.
                tokio::time::timeout(BLOCK_WRITE_STALL, write_block(&mut stream, status, &data))
                    .await
                    .map_err(|_| LaneError::Slow(BLOCK_WRITE_STALL))??;
                peers.heard_from(peer);
                sent += 1;
                bytes += len as u64;
            }
            None => frame::write(&mut stream, &[DONT_HAVE]).await?,
        }
    }
    peers.count(peer, |s| {
        s.blocks_sent += sent;
        s.bytes_sent += bytes;
    });
    if sent == asked
        && let Some(c) = &cids
    {
        recipients.sent(peer, c);
    }
    Ok(stream)
}

/// Writes one answer frame: length prefix, status, block. A small block is copied behind its
/// prefix, so the frame is one write (one yamux frame, not two); a big one is written after it
/// as it is: that copy was ~10 % of a seeder's CPU sending 1 GiB on loopback (perf), and yamux
/// cuts a big write into frames of 16 KiB anyway.
async fn write_block(stream: &mut libp2p::Stream, status: u8, data: &[u8]) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(11 + if data.len() < COPY_BELOW { data.len() } else { 0 });
    ipld::put_varint(&mut head, data.len() as u64 + 1);
    head.push(status);
    if data.len() < COPY_BELOW {
        head.extend_from_slice(data);
        return stream.write_all(&head).await;
    }
    stream.write_all(&head).await?;
    stream.write_all(data).await
}

/// Names recent recipients of `cids` (other than `asker`, still connected) in place of the blocks;
/// false if there are none.
async fn redirect(
    stream: &mut libp2p::Stream,
    asker: PeerId,
    cids: &[Cid],
    peers: &Peers,
    recipients: &Recipients,
) -> Result<bool, LaneError> {
    let named = recipients.name(&asker, cids, |p| peers.is_connected(p));
    if named.is_empty() {
        return Ok(false);
    }
    debug!(%asker, blocks = cids.len(), others = ?named, "busy; naming peers that have the blocks");
    busy(stream, &named, cids.len()).await?;
    Ok(true)
}

/// Answers "busy, ask again shortly" (a redirect naming nobody) to a request for `n` blocks.
async fn defer(mut stream: libp2p::Stream, asker: PeerId, n: usize, why: &str) -> Result<libp2p::Stream, LaneError> {
    debug!(%asker, blocks = n, why, "busy; the asker is to ask again shortly");
    busy(&mut stream, &[], n).await?;
    Ok(stream)
}

/// The busy answer to a request for `n` blocks: `named` (maybe nobody), then a bare "busy" for
/// each other block, in one write.
async fn busy(stream: &mut libp2p::Stream, named: &[PeerId], n: usize) -> Result<(), LaneError> {
    let mut first = vec![BUSY];
    prost::Message::encode(&wire::Redirect { peers: named.iter().map(|p| p.to_bytes()).collect() }, &mut first)
        .map_err(|_| LaneError::Malformed)?;
    // Every frame in one write.
    let mut out = Vec::with_capacity(first.len() + 2 * n + 8);
    ipld::put_varint(&mut out, first.len() as u64);
    out.extend_from_slice(&first);
    for _ in 1..n {
        out.extend_from_slice(&[1, BUSY]);
    }
    stream.write_all(&out).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_unpack_and_a_zstd_bomb_is_refused() {
        let cid = ipld::raw_cid(b"x");
        let block = b"text text text text text text text text".repeat(100);
        let mut packed = vec![HAVE_ZSTD];
        packed.extend(zstd::bulk::compress(&block, ZSTD_LEVEL).unwrap());
        assert_eq!(unpack(&cid, packed.into()).unwrap(), &block[..]);
        assert_eq!(unpack(&cid, Bytes::from_static(b"\x00abc")).unwrap(), &b"abc"[..]);
        assert!(matches!(unpack(&cid, Bytes::from_static(b"\x01")), Err(FetchError::Missing(_))));
        assert!(matches!(unpack(&cid, Bytes::from_static(b"\x01x")), Err(FetchError::Malformed)));
        let named = PeerId::random();
        let redirect =
            prost::Message::encode_to_vec(&wire::Redirect { peers: vec![named.to_bytes(), b"junk".to_vec()] });
        let (both, neither) = (IfBusy { redirect: true, defer: true }, IfBusy::default());
        let redirect_only = IfBusy { redirect: true, defer: false };
        assert!(matches!(redirected(&redirect, both), Ok(FetchError::Busy(p)) if p == [named]));
        assert!(matches!(redirected(&redirect, neither), Err(FetchError::Malformed)), "never asked for");
        assert!(matches!(redirected(b"", both), Ok(FetchError::Deferred)));
        assert!(matches!(redirected(b"", redirect_only), Err(FetchError::Malformed)), "names nobody");
        let junk_only = prost::Message::encode_to_vec(&wire::Redirect { peers: vec![b"junk".to_vec()] });
        assert!(matches!(redirected(&junk_only, both), Err(FetchError::Malformed)), "names nobody valid");
        // 64 MiB of zeros compress to a few KiB: inflating stops at a block's size.
        let mut bomb = vec![HAVE_ZSTD];
        bomb.extend(zstd::bulk::compress(&vec![0u8; 64 << 20], 3).unwrap());
        assert!(bomb.len() < 64 << 10);
        assert!(matches!(unpack(&cid, bomb.into()), Err(FetchError::Malformed)));
    }
}
