//! `/peerix/narinfo/1.0.0`: ask a peerix peer for the narinfo of a store hash, and the root CID of
//! the NAR's blocks. Requests are pipelined on long-lived streams ([`crate::p2p::lanes`]), each
//! request and answer one bounded frame ([`crate::p2p::frame`]).
//!
//! A node answers only for paths that pass its publish gate and whose blocks it has indexed (it
//! must be able to deliver what it names); everything else — absent, private, not yet indexed — is
//! the same empty answer, so the protocol leaks nothing the HTTP API would not. The asker trusts
//! nothing in the answer: [`crate::trust`] checks the narinfo and the transfer checks every block.
//!
//! An asker may want the path's closure too (`closure`): nix asks the narinfo of a closure's top
//! path, then of its references, level by level, so the answer carries the narinfos of the
//! references the node serves, nearest first, up to [`CLOSURE_PATHS`] paths and
//! [`CLOSURE_BYTES`] — one question per closure instead of one per path, which is what a crowd of
//! 50 nodes realising a 20-path closure from one seeder needs (1 000 questions at once took that
//! seeder 0.75–2 s to answer on its share of 2 cores). The asker judges each when nix asks for it
//! ([`crate::substitute::offered`]). Nodes that predate the field ignore it and answer as before.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use cid::Cid;
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::{OnceCell, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::lanes::{self, LaneError, Lanes};
use super::{P2pError, frame, peers::Peers};
use crate::bounded::Lru;
use crate::local_cache::LocalCache;
use crate::nix::narinfo::{MAX_NARINFO_LEN, NarInfo};
use crate::nix::store_path::StoreHash;
use crate::timeouts::{NARINFO_ANSWER_REUSE, PEER_REQUEST_WAIT};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/peerix/narinfo/1.0.0");

/// A request is a 32-character hash in a few bytes of protobuf.
const MAX_REQUEST: usize = 256;
/// Paths of a closure an answer carries besides the one asked for: a closure realised from one
/// top path is rarely larger (the flash crowd's has 20), and a larger one costs a second question
/// from where this one stops.
pub const CLOSURE_PATHS: usize = 64;
/// Narinfo bytes of a closure an answer carries (a path's is ~0.5–1 KiB).
pub const CLOSURE_BYTES: usize = 128 * 1024;
/// A root node carried in an answer at most: 8 KiB is ~180 links, a NAR of one level of chunks up
/// to ~40 MiB (the chunker's 256 KiB maximum; ~15 MiB at its average).
pub const ROOT_NODE_MAX: usize = 8 * 1024;
/// A narinfo (≤ 64 KiB), a CID and a root node, and a closure's (root nodes count in its bytes).
const MAX_RESPONSE: usize = MAX_NARINFO_LEN + 256 + ROOT_NODE_MAX + CLOSURE_BYTES + CLOSURE_PATHS * 160;
/// Streams (lanes, each carrying requests one after the other) open at once; more are dropped.
const MAX_STREAMS: usize = 512;
/// Answers kept for reuse ([`Answers`]): at most ~130 KiB each with a closure, 8 MiB in all.
const ANSWERS_KEPT: usize = 64;

pub mod wire {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        /// The 32-character nix32 hash part of the store path.
        #[prost(string, tag = "1")]
        pub hash: String,
        /// Also the narinfos of the path's closure (see the module's head).
        #[prost(bool, tag = "2")]
        pub closure: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Response {
        /// The narinfo text; empty when the node does not serve the path.
        #[prost(string, tag = "1")]
        pub narinfo: String,
        /// The NAR's root CID (binary).
        #[prost(bytes = "vec", tag = "2")]
        pub root: Vec<u8>,
        /// With `closure`: paths of the closure this node serves, nearest first.
        #[prost(message, repeated, tag = "3")]
        pub closure: Vec<Related>,
        /// The root's dag-pb node when small ([`super::ROOT_NODE_MAX`]): a NAR of one level of
        /// chunks (up to ~40 MiB) is then planned without a round trip. Empty: ask for it.
        #[prost(bytes = "vec", tag = "4")]
        pub root_node: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Related {
        #[prost(string, tag = "1")]
        pub hash: String,
        #[prost(string, tag = "2")]
        pub narinfo: String,
        #[prost(bytes = "vec", tag = "3")]
        pub root: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub root_node: Vec<u8>,
    }
}

/// A peer's answer, unchecked.
#[derive(Debug, Clone)]
pub struct Answer {
    pub narinfo: String,
    pub root: Cid,
    /// The root's node as sent, unchecked (the asker checks it against `root`).
    pub root_node: Option<bytes::Bytes>,
    /// Paths of its closure the peer serves (asked with `closure`), unchecked too; an entry whose
    /// hash or root does not parse is left out.
    pub closure: Vec<(StoreHash, Answer)>,
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

/// Asks `peer` for `hash` (and its `closure`) on a lane ([`super::lanes`], which sends a request
/// the peer dropped unread again, twice at most: [`crate::timeouts::NARINFO_RETRIES`]): `None` when
/// it does not serve the path.
pub async fn ask(lanes: &Lanes, peer: PeerId, hash: &StoreHash, closure: bool) -> Result<Option<Answer>, AskError> {
    let mut request = Vec::with_capacity(48);
    frame::encode_message(&mut request, &wire::Request { hash: hash.as_str().to_owned(), closure });
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
    let closure = (resp.closure.into_iter().take(CLOSURE_PATHS))
        .filter_map(|r| {
            let hash = StoreHash::parse(&r.hash).ok()?;
            let root = Cid::try_from(r.root.as_slice()).ok()?;
            let root_node = node(r.root_node);
            Some((hash, Answer { narinfo: r.narinfo, root, root_node, closure: Vec::new() }))
        })
        .collect();
    Ok(Some(Answer { narinfo: resp.narinfo, root, root_node: node(resp.root_node), closure }))
}

fn node(bytes: Vec<u8>) -> Option<bytes::Bytes> {
    (!bytes.is_empty() && bytes.len() <= ROOT_NODE_MAX).then(|| bytes.into())
}

/// Serves narinfo requests from the local cache until `shutdown`.
pub fn serve(
    control: &mut libp2p_stream::Control,
    cache: Arc<LocalCache>,
    peers: Arc<Peers>,
    shutdown: CancellationToken,
) -> Result<(), P2pError> {
    let slots = Arc::new(Semaphore::new(MAX_STREAMS));
    let answers = Arc::new(Answers::default());
    super::inbound::accept(control, PROTOCOL, slots, super::inbound::PER_PEER, shutdown, move |peer, stream| {
        let (cache, peers, answers) = (cache.clone(), peers.clone(), answers.clone());
        async move {
            if let Err(e) = answer(peer, stream, &cache, &peers, &answers).await {
                debug!(%peer, cause = %e, "narinfo stream ended");
            }
        }
    })
}

/// Answers the requests of one stream (a lane: many, one after the other).
async fn answer(
    peer: PeerId,
    stream: libp2p::Stream,
    cache: &LocalCache,
    peers: &Peers,
    answers: &Answers,
) -> Result<(), LaneError> {
    lanes::serve_requests(stream, MAX_REQUEST, PEER_REQUEST_WAIT, PEER_REQUEST_WAIT, |body, mut stream| async move {
        peers.heard_from(peer);
        let req = <wire::Request as prost::Message>::decode(body).map_err(|_| LaneError::Malformed)?;
        let (found, shared) = match StoreHash::parse(&req.hash) {
            Ok(hash) => answers.get(cache, hash, req.closure).await,
            Err(_) => (Found::default(), false),
        };
        if found.served {
            peers.count(peer, |s| s.narinfos_served += 1);
        }
        let (hash, asked_closure) = (&req.hash, req.closure);
        debug!(%peer, %hash, found = found.served, asked_closure, closure = found.closure, shared, "narinfo request");
        frame::write(&mut stream, &found.body).await?;
        Ok(stream)
    })
    .await
}

/// One encoded answer.
#[derive(Clone, Default)]
struct Found {
    body: bytes::Bytes,
    served: bool,
    closure: usize,
}

/// Answers given within the last [`NARINFO_ANSWER_REUSE`], by question: a crowd asks a seeder
/// for one closure within the same second, and one lookup (a closure's narinfos found, gated and
/// rendered: 21 for the flash crowd's) serves them all — 50 askers each making the seeder do it
/// again, on its share of 2 cores, took it past a second. Concurrent askers wait for the first.
/// Bounded by entries and by age; an answer at most this old is as fresh as a have-summary.
struct Answers {
    recent: std::sync::Mutex<Lru<Question, Given>>,
}

/// A path's hash, and whether its closure was asked for too.
type Question = (StoreHash, bool);
/// When an answer was first asked for, and the answer (once found).
type Given = (Instant, Arc<OnceCell<Found>>);

impl Default for Answers {
    fn default() -> Self {
        Self { recent: std::sync::Mutex::new(Lru::new(ANSWERS_KEPT)) }
    }
}

impl Answers {
    /// The answer, and whether it was one found for another asker (`true`) or just now.
    async fn get(&self, cache: &LocalCache, hash: StoreHash, closure: bool) -> (Found, bool) {
        let cell = {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.evict_while(|(at, _)| at.elapsed() >= NARINFO_ANSWER_REUSE);
            match recent.peek(&(hash, closure)) {
                Some((_, cell)) => cell.clone(),
                None => {
                    let cell = Arc::new(OnceCell::new());
                    recent.insert((hash, closure), (Instant::now(), cell.clone()));
                    cell
                }
            }
        };
        let found_now = std::sync::atomic::AtomicBool::new(false);
        let found = cell.get_or_init(|| async {
            found_now.store(true, std::sync::atomic::Ordering::Relaxed);
            let Some(local) = local_answer(cache, &hash).await else { return Found::default() };
            let closure = if closure { self::closure(cache, &hash, &local.narinfo).await } else { Vec::new() };
            let n = closure.len();
            let resp =
                wire::Response { narinfo: local.narinfo, root: local.root.to_bytes(), closure, root_node: local.node };
            Found { body: prost::Message::encode_to_vec(&resp).into(), served: true, closure: n }
        });
        (found.await.clone(), !found_now.into_inner())
    }
}

/// The closure of the path whose narinfo is `top` that we serve, breadth first from its
/// references, within [`CLOSURE_PATHS`] and [`CLOSURE_BYTES`]: a reference we do not serve is
/// left out with what only it leads to (the asker looks those up as before).
async fn closure(cache: &LocalCache, top: &StoreHash, narinfo: &str) -> Vec<wire::Related> {
    let mut seen: HashSet<StoreHash> = HashSet::from([*top]);
    let mut queue: VecDeque<StoreHash> = VecDeque::new();
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut enqueue = |text: &str, queue: &mut VecDeque<StoreHash>| {
        let Ok(info) = NarInfo::parse(text) else { return };
        for r in &info.references {
            if seen.len() <= 4 * CLOSURE_PATHS && seen.insert(r.hash()) {
                queue.push_back(r.hash());
            }
        }
    };
    enqueue(narinfo, &mut queue);
    while let Some(hash) = queue.pop_front() {
        let Some(local) = local_answer(cache, &hash).await else { continue };
        let size = local.narinfo.len() + local.node.len();
        if bytes + size > CLOSURE_BYTES {
            break;
        }
        bytes += size;
        enqueue(&local.narinfo, &mut queue);
        let (narinfo, root, root_node) = (local.narinfo, local.root.to_bytes(), local.node);
        out.push(wire::Related { hash: hash.as_str().to_owned(), narinfo, root, root_node });
        if out.len() == CLOSURE_PATHS {
            break;
        }
    }
    out
}

/// What we answer for a path.
struct Local {
    narinfo: String,
    root: Cid,
    /// The root's dag-pb node, when it is one of at most [`ROOT_NODE_MAX`] bytes; else empty.
    node: Vec<u8>,
}

/// The narinfo we serve for `hash`, its NAR root and the root's node, if the path passes the gate
/// and is indexed.
async fn local_answer(cache: &LocalCache, hash: &StoreHash) -> Option<Local> {
    let narinfo = cache.narinfo(hash).await.ok().flatten()?;
    let state = cache.state();
    let root = state.published_root(hash.as_str()).ok().flatten()?;
    let node = match root.codec() == crate::ipld::DAG_PB {
        true => state.local_node(&root).ok().and_then(|n| n.into_iter().next()).map(|(_, data)| data),
        false => None,
    };
    let node = node.filter(|n| n.len() <= ROOT_NODE_MAX).unwrap_or_default();
    Some(Local { narinfo: String::from_utf8(narinfo.to_vec()).ok()?, root, node })
}
