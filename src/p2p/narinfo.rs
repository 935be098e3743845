//! `/peerix/narinfo/1.0.0`: ask a peerix peer for the narinfo of a store hash, and the root CID of
//! the NAR's blocks. Requests are pipelined on long-lived streams ([`crate::p2p::lanes`]), each
//! request and answer one bounded frame ([`crate::p2p::frame`]).
//!
//! A node answers only for paths that pass its publish gate and whose blocks it has indexed (it
//! must be able to deliver what it names); everything else — absent, private, not yet indexed — is
//! the same empty answer, so the protocol leaks nothing the HTTP API would not. The asker trusts
//! nothing in the answer: [`crate::trust`] checks the narinfo and the transfer checks every block.

use std::sync::Arc;

use cid::Cid;
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::lanes::{self, LaneError, Lanes};
use super::{P2pError, frame, peers::Peers};
use crate::local_cache::LocalCache;
use crate::nix::narinfo::MAX_NARINFO_LEN;
use crate::nix::store_path::StoreHash;
use crate::timeouts::PEER_REQUEST_WAIT;

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/peerix/narinfo/1.0.0");

/// A request is a 32-character hash in a few bytes of protobuf.
const MAX_REQUEST: usize = 256;
/// A narinfo (≤ 64 KiB) and a CID.
const MAX_RESPONSE: usize = MAX_NARINFO_LEN + 256;
/// Streams (lanes, each carrying requests one after the other) open at once; more are dropped.
const MAX_STREAMS: usize = 512;

pub mod wire {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        /// The 32-character nix32 hash part of the store path.
        #[prost(string, tag = "1")]
        pub hash: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Response {
        /// The narinfo text; empty when the node does not serve the path.
        #[prost(string, tag = "1")]
        pub narinfo: String,
        /// The NAR's root CID (binary).
        #[prost(bytes = "vec", tag = "2")]
        pub root: Vec<u8>,
    }
}

/// A peer's answer, unchecked.
#[derive(Debug, Clone)]
pub struct Answer {
    pub narinfo: String,
    pub root: Cid,
}

#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error(transparent)]
    Lane(#[from] LaneError),
    #[error("malformed answer")]
    Decode(#[from] prost::DecodeError),
    #[error("answer names no valid root CID")]
    Root,
    #[error("peer closed the stream without answering")]
    NoAnswer,
    #[error("no answer within the lookup's deadline")]
    Late,
    #[error("could not connect to the peer")]
    Unreachable,
}

/// Asks `peer` for `hash` on a lane ([`super::lanes`], which sends a request the peer dropped
/// unread again, twice at most: [`crate::timeouts::NARINFO_RETRIES`]): `None` when it does not serve the path.
pub async fn ask(lanes: &Lanes, peer: PeerId, hash: &StoreHash) -> Result<Option<Answer>, AskError> {
    let mut request = Vec::with_capacity(48);
    frame::encode_message(&mut request, &wire::Request { hash: hash.as_str().to_owned() });
    match lanes.request(peer, request.into(), 1, MAX_RESPONSE).await {
        Ok(mut frames) => decode_answer(frames.pop().ok_or(AskError::NoAnswer)?),
        Err(LaneError::Dropped) => Err(AskError::NoAnswer),
        Err(e) => Err(e.into()),
    }
}

/// A peer's answer from its frame: `None` when it does not serve the path.
pub fn decode_answer(body: bytes::Bytes) -> Result<Option<Answer>, AskError> {
    let resp = <wire::Response as prost::Message>::decode(body)?;
    if resp.narinfo.is_empty() {
        return Ok(None);
    }
    let root = Cid::try_from(resp.root.as_slice()).map_err(|_| AskError::Root)?;
    Ok(Some(Answer { narinfo: resp.narinfo, root }))
}

/// Serves narinfo requests from the local cache until `shutdown`.
pub fn serve(
    control: &mut libp2p_stream::Control,
    cache: Arc<LocalCache>,
    peers: Arc<Peers>,
    shutdown: CancellationToken,
) -> Result<(), P2pError> {
    let slots = Arc::new(Semaphore::new(MAX_STREAMS));
    super::inbound::accept(control, PROTOCOL, slots, super::inbound::PER_PEER, shutdown, move |peer, stream| {
        let (cache, peers) = (cache.clone(), peers.clone());
        async move {
            if let Err(e) = answer(peer, stream, &cache, &peers).await {
                debug!(%peer, cause = %e, "narinfo stream ended");
            }
        }
    })
}

/// Answers the requests of one stream (a lane: many, one after the other).
async fn answer(peer: PeerId, stream: libp2p::Stream, cache: &LocalCache, peers: &Peers) -> Result<(), LaneError> {
    lanes::serve_requests(stream, MAX_REQUEST, PEER_REQUEST_WAIT, PEER_REQUEST_WAIT, |body, mut stream| async move {
        let req = <wire::Request as prost::Message>::decode(body).map_err(|_| LaneError::Malformed)?;
        let mut resp = wire::Response::default();
        if let Ok(hash) = StoreHash::parse(&req.hash)
            && let Some((narinfo, root)) = local_answer(cache, &hash).await
        {
            resp = wire::Response { narinfo, root: root.to_bytes() };
            peers.count(peer, |s| s.narinfos_served += 1);
        }
        debug!(%peer, hash = %req.hash, found = !resp.narinfo.is_empty(), "narinfo request");
        frame::write_message(&mut stream, &resp).await?;
        Ok(stream)
    })
    .await
}

/// The narinfo we serve for `hash` and its NAR root, if the path passes the gate and is indexed.
async fn local_answer(cache: &LocalCache, hash: &StoreHash) -> Option<(String, Cid)> {
    let narinfo = cache.narinfo(hash).await.ok().flatten()?;
    let root = cache.state().published_root(hash.as_str()).ok().flatten()?;
    Some((String::from_utf8(narinfo.to_vec()).ok()?, root))
}
