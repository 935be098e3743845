//! `/peerix/narinfo/1.0.0`: ask a peerix peer for the narinfo of a store hash, and the root CID of
//! the NAR's blocks. One request and one answer per stream, both bounded frames
//! ([`crate::p2p::frame`]).
//!
//! A node answers only for paths that pass its publish gate and whose blocks it has indexed (it
//! must be able to deliver what it names); everything else — absent, private, not yet indexed — is
//! the same empty answer, so the protocol leaks nothing the HTTP API would not. The asker trusts
//! nothing in the answer: [`crate::trust`] checks the narinfo and the transfer checks every block.

use std::sync::Arc;
use std::time::Duration;

use cid::Cid;
use futures_util::AsyncWriteExt;
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{P2pError, frame, peers::Peers};
use crate::local_cache::LocalCache;
use crate::nix::narinfo::MAX_NARINFO_LEN;
use crate::nix::store_path::StoreHash;

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/peerix/narinfo/1.0.0");

/// A request is a 32-character hash in a few bytes of protobuf.
const MAX_REQUEST: usize = 256;
/// A narinfo (≤ 64 KiB) and a CID.
const MAX_RESPONSE: usize = MAX_NARINFO_LEN + 256;
/// Requests served at once; more streams are dropped (the asker's deadline answers for it).
const MAX_STREAMS: usize = 128;
/// A peer that opens a stream and sends nothing holds a slot at most this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

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
    #[error("cannot open a stream")]
    Open(#[from] libp2p_stream::OpenStreamError),
    #[error("stream failed")]
    Io(#[from] std::io::Error),
    #[error("bad frame")]
    Frame(#[from] frame::FrameError),
    #[error("malformed answer")]
    Decode(#[from] prost::DecodeError),
    #[error("answer names no valid root CID")]
    Root,
    #[error("peer closed the stream without answering")]
    NoAnswer,
}

/// Asks `peer` for `hash`: `None` when it does not serve the path. A request the peer dropped
/// unread (its accept queue holds one stream: a burst overflows it) is sent again, twice at most.
pub async fn ask(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    hash: &StoreHash,
) -> Result<Option<Answer>, AskError> {
    let mut attempt = 0;
    loop {
        match ask_once(control, peer, hash).await {
            Err(AskError::NoAnswer) if attempt < 2 => attempt += 1,
            other => return other,
        }
    }
}

async fn ask_once(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    hash: &StoreHash,
) -> Result<Option<Answer>, AskError> {
    let mut stream = control.open_stream(peer, PROTOCOL).await?;
    let request = wire::Request { hash: hash.as_str().to_owned() };
    if frame::write_message(&mut stream, &request).await.is_err() || stream.flush().await.is_err() {
        return Err(AskError::NoAnswer);
    }
    let body = match frame::read(&mut stream, MAX_RESPONSE).await {
        Ok(Some(body)) => body,
        Ok(None) | Err(frame::FrameError::Io(_)) => return Err(AskError::NoAnswer),
        Err(e) => return Err(e.into()),
    };
    let _ = stream.close().await;
    decode_answer(body)
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
    super::inbound::accept(control, PROTOCOL, slots, shutdown, move |peer, stream| {
        let (cache, peers) = (cache.clone(), peers.clone());
        async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, answer(peer, stream, &cache, &peers)).await {
                Ok(Err(e)) => debug!(%peer, cause = %e, "narinfo request failed"),
                Err(_) => debug!(%peer, "narinfo request timed out"),
                Ok(Ok(())) => {}
            }
        }
    })
}

async fn answer(peer: PeerId, mut stream: libp2p::Stream, cache: &LocalCache, peers: &Peers) -> Result<(), AskError> {
    let body = frame::read(&mut stream, MAX_REQUEST).await?.ok_or(AskError::NoAnswer)?;
    let req = <wire::Request as prost::Message>::decode(body)?;
    let mut resp = wire::Response::default();
    if let Ok(hash) = StoreHash::parse(&req.hash)
        && let Some((narinfo, root)) = local_answer(cache, &hash).await
    {
        resp = wire::Response { narinfo, root: root.to_bytes() };
        peers.count(peer, |s| s.narinfos_served += 1);
    }
    debug!(%peer, hash = %req.hash, found = !resp.narinfo.is_empty(), "narinfo request");
    frame::write_message(&mut stream, &resp).await?;
    stream.close().await?;
    Ok(())
}

/// The narinfo we serve for `hash` and its NAR root, if the path passes the gate and is indexed.
async fn local_answer(cache: &LocalCache, hash: &StoreHash) -> Option<(String, Cid)> {
    let narinfo = cache.narinfo(hash).await.ok().flatten()?;
    let root = cache.state().published_root(hash.as_str()).ok().flatten()?;
    Some((String::from_utf8(narinfo.to_vec()).ok()?, root))
}
