//! One writer task per peer: keeps one outbound bitswap stream open and writes what is queued for
//! the peer, merged into as few messages as possible, reopening the stream if it breaks.
//!
//! Each peer has two bounded queues. Wantlist entries (our wants and cancels) are merged into the
//! next message instead of being queued as messages of their own, so a fetch's window of wants can
//! never overflow a message queue and lose a want — which cost a 5 s attempt timeout each time it
//! happened (a 256-block window did it at once). Their cap, [`MAX_ENTRIES`], is only reached by 256
//! fetches with full 64-block windows from one peer at once. Responses (blocks, presences) are bounded in count
//! and bytes ([`MAX_RESPONSE_BYTES`]): a server task with a response for a peer whose queue is full
//! waits for room ([`Outbox::respond`]), which stops it reading that peer's wants, so one slow peer
//! holds neither the node's memory nor anyone else's answers.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use libp2p::{PeerId, StreamProtocol};
use tokio::sync::Notify;
use tracing::debug;

use super::message::{self, Entry, Message, Wantlist};
use super::{PROTOCOL_1_0_0, PROTOCOLS};
use crate::timeouts::{BITSWAP_OUTBOX_IDLE, BITSWAP_RESPONSE_WAIT};

/// Response messages queued per peer, and the block bytes in them: a slow peer holds at most
/// ~8 MiB of ours (32 responses of 256 KiB, what the outbound stream drains in ~40 ms at the rates
/// measured here).
const MAX_RESPONSES: usize = 128;
const MAX_RESPONSE_BYTES: usize = 8 << 20;
/// Wantlist entries queued per peer.
const MAX_ENTRIES: usize = 16_384;
/// Entries per message: what our own server answers from one message (boxo caps a peer's
/// wantlist at 1024 too).
const ENTRIES_PER_MESSAGE: usize = 1024;
/// Merge queued responses up to this size before writing, as small as the responses themselves
/// (see `RESPONSE_PAYLOAD`). A message stays far under the 4 MiB cap: 256 KiB + one more response
/// (≤ 256 KiB + one block of ≤ 1 MiB) + 1024 entries of ~40 bytes.
const MERGE_LIMIT: usize = 256 << 10;

#[derive(Default)]
struct Queue {
    entries: VecDeque<Entry>,
    responses: VecDeque<Message>,
    /// Block bytes in `responses`.
    response_bytes: usize,
}

#[derive(Default)]
struct PeerQueue {
    queue: Mutex<Queue>,
    /// Something was queued (for the writer).
    ready: Notify,
    /// Responses left the queue (for [`Outbox::respond`] waiting for room).
    room: Notify,
}

type Peers = Arc<Mutex<HashMap<PeerId, Arc<PeerQueue>>>>;

#[derive(Clone)]
pub struct Outbox {
    control: libp2p_stream::Control,
    /// A peer is here exactly while its writer runs; both the writer's exit and a send take this
    /// lock first, so a send never lands in a queue nobody will write.
    peers: Peers,
}

impl Outbox {
    pub fn new(control: libp2p_stream::Control) -> Self {
        Self { control, peers: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// Queues `msg` for `peer`, starting its writer if needed. Never blocks on the network: used
    /// for wantlists, whose entries always fit until [`MAX_ENTRIES`].
    pub fn send(&self, peer: PeerId, msg: Message) {
        if let Pushed::Dropped(dropped) = self.push(peer, msg, false) {
            debug!(%peer, dropped, "bitswap queue full; dropping entries or a response");
        }
    }

    /// Queues a response for `peer`, waiting while its queue is full: the serving task waits, so
    /// we stop reading that peer's wants (boxo's engine does the same) instead of dropping blocks
    /// the peer would wait for until its own timeout. Dropped only if no room comes within
    /// [`BITSWAP_RESPONSE_WAIT`]; then `false` (the peer is not reading: send it nothing more now).
    pub async fn respond(&self, peer: PeerId, msg: Message) -> bool {
        let mut msg = Box::new(msg);
        let deadline = tokio::time::Instant::now() + BITSWAP_RESPONSE_WAIT;
        loop {
            let pq = match self.push(peer, *msg, true) {
                Pushed::Queued => return true,
                Pushed::Dropped(_) => return false,
                Pushed::Full(m, pq) => {
                    msg = m;
                    pq
                }
            };
            let room = pq.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            // Room may have come between the push and `enable`.
            if pq.queue.lock().is_ok_and(|q| q.has_room(block_bytes(&msg))) {
                continue;
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                debug!(%peer, "bitswap response queue stayed full; dropping a response");
                return false;
            }
        }
    }

    /// Pushes `msg` onto `peer`'s queue. With `wait_for_room`, a response that does not fit is
    /// handed back instead of dropped.
    fn push(&self, peer: PeerId, msg: Message, wait_for_room: bool) -> Pushed {
        let Ok(mut peers) = self.peers.lock() else { return Pushed::Dropped(1) };
        let pq = match peers.get(&peer) {
            Some(pq) => pq.clone(),
            None => {
                let pq = Arc::new(PeerQueue::default());
                peers.insert(peer, pq.clone());
                crate::tasks::spawn(
                    module_path!(),
                    write_loop(self.control.clone(), peer, pq.clone(), self.peers.clone()),
                );
                pq
            }
        };
        // Push while still holding `peers`: a writer retires only under that lock, so it cannot
        // leave between our lookup and the push.
        let Ok(mut q) = pq.queue.lock() else { return Pushed::Dropped(1) };
        if wait_for_room && !q.has_room(block_bytes(&msg)) {
            drop(q);
            return Pushed::Full(Box::new(msg), pq);
        }
        let dropped = q.push(msg);
        drop(peers);
        drop(q);
        pq.ready.notify_one();
        if dropped > 0 { Pushed::Dropped(dropped) } else { Pushed::Queued }
    }
}

enum Pushed {
    Queued,
    /// Entries or a response that did not fit and were dropped.
    Dropped(usize),
    /// A response that did not fit, handed back with the queue to wait on.
    Full(Box<Message>, Arc<PeerQueue>),
}

impl Queue {
    /// Queues `msg`'s wantlist entries and its response part; returns how many entries and
    /// responses did not fit.
    fn push(&mut self, msg: Message) -> usize {
        let Message { wantlist, blocks, payload, block_presences, pending_bytes } = msg;
        let mut dropped = 0;
        if let Some(w) = wantlist {
            let room = MAX_ENTRIES.saturating_sub(self.entries.len());
            dropped += w.entries.len().saturating_sub(room);
            self.entries.extend(w.entries.into_iter().take(room));
        }
        if !blocks.is_empty() || !payload.is_empty() || !block_presences.is_empty() {
            let msg = Message { wantlist: None, blocks, payload, block_presences, pending_bytes };
            let bytes = block_bytes(&msg);
            if !self.has_room(bytes) {
                dropped += 1;
            } else {
                self.response_bytes += bytes;
                self.responses.push_back(msg);
            }
        }
        dropped
    }

    /// Whether a response with `bytes` of blocks fits. The first always does (a single block may
    /// be up to 1 MiB).
    fn has_room(&self, bytes: usize) -> bool {
        self.responses.len() < MAX_RESPONSES
            && (self.response_bytes == 0 || self.response_bytes + bytes <= MAX_RESPONSE_BYTES)
    }

    /// The next message to write: pending entries and responses merged up to [`MERGE_LIMIT`].
    fn next_message(&mut self) -> Option<Message> {
        if self.entries.is_empty() && self.responses.is_empty() {
            return None;
        }
        let mut msg = self.responses.pop_front().unwrap_or_default();
        self.response_bytes -= block_bytes(&msg);
        let mut size = prost::Message::encoded_len(&msg);
        while size < MERGE_LIMIT {
            let Some(more) = self.responses.pop_front() else { break };
            self.response_bytes -= block_bytes(&more);
            size += prost::Message::encoded_len(&more);
            msg.payload.extend(more.payload);
            msg.blocks.extend(more.blocks);
            msg.block_presences.extend(more.block_presences);
        }
        if !self.entries.is_empty() {
            let n = self.entries.len().min(ENTRIES_PER_MESSAGE);
            msg.wantlist = Some(Wantlist { entries: self.entries.drain(..n).collect(), full: false });
        }
        Some(msg)
    }
}

fn block_bytes(m: &Message) -> usize {
    m.payload.iter().map(|b| b.data.len()).chain(m.blocks.iter().map(|b| b.len())).sum()
}

async fn open(control: &mut libp2p_stream::Control, peer: PeerId) -> Option<(libp2p::Stream, StreamProtocol)> {
    for protocol in PROTOCOLS {
        match control.open_stream(peer, protocol.clone()).await {
            Ok(s) => return Some((s, protocol)),
            Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => continue,
            Err(e) => {
                debug!(%peer, cause = %e, "cannot open a bitswap stream");
                return None;
            }
        }
    }
    None
}

async fn write_loop(mut control: libp2p_stream::Control, peer: PeerId, pq: Arc<PeerQueue>, peers: Peers) {
    let mut stream: Option<(libp2p::Stream, StreamProtocol)> = None;
    loop {
        let next = pq.queue.lock().ok().and_then(|mut q| q.next_message());
        pq.room.notify_waiters();
        let Some(batch) = next else {
            // `notify_one` keeps a permit when nobody waits, so a send between the check above and
            // this wait is not missed.
            if tokio::time::timeout(BITSWAP_OUTBOX_IDLE, pq.ready.notified()).await.is_err()
                && retire(&peers, peer, &pq, false)
            {
                return;
            }
            continue;
        };
        let mut sent = false;
        for _attempt in 0..2 {
            if stream.is_none() {
                stream = open(&mut control, peer).await;
            }
            let Some((s, protocol)) = stream.as_mut() else { break };
            let v100 = *protocol == PROTOCOL_1_0_0 || protocol.as_ref() == "/ipfs/bitswap";
            // Only the 1.0.0 form needs a copy (its blocks move to another field).
            let wire = if v100 { Cow::Owned(to_v100(batch.clone())) } else { Cow::Borrowed(&batch) };
            match message::write(s, &wire).await {
                Ok(()) => {
                    sent = true;
                    break;
                }
                Err(e) => {
                    debug!(%peer, cause = %e, "bitswap write failed; reopening");
                    stream = None;
                }
            }
        }
        // The peer is gone or speaks no bitswap: drop what is queued and stop, so the next send
        // starts afresh.
        if !sent && stream.is_none() && retire(&peers, peer, &pq, true) {
            return;
        }
    }
}

/// Takes the writer out of `peers` if its queue is empty (or `discard`: emptied). Returns false
/// when something was queued meanwhile and the writer must go on.
fn retire(peers: &Peers, peer: PeerId, pq: &Arc<PeerQueue>, discard: bool) -> bool {
    let Ok(mut peers) = peers.lock() else { return true };
    let Ok(mut q) = pq.queue.lock() else { return true };
    if discard {
        *q = Queue::default();
        pq.room.notify_waiters();
    } else if !q.entries.is_empty() || !q.responses.is_empty() {
        return false;
    }
    if peers.get(&peer).is_some_and(|p| Arc::ptr_eq(p, pq)) {
        peers.remove(&peer);
    }
    true
}

/// Bitswap 1.0.0 carries blocks as bare bytes (field 2) and knows no presences.
fn to_v100(mut m: Message) -> Message {
    m.blocks = m.payload.drain(..).map(|b| b.data).collect();
    m.block_presences.clear();
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::raw_cid;
    use crate::p2p::bitswap::message::{Block, prefix_of};
    use std::time::Duration;

    fn want(i: u32) -> Message {
        let e = Entry {
            block: raw_cid(&i.to_be_bytes()).to_bytes(),
            priority: 1,
            cancel: false,
            want_type: 0,
            send_dont_have: true,
        };
        Message { wantlist: Some(Wantlist { entries: vec![e], full: false }), ..Default::default() }
    }

    fn block(i: u32, len: usize) -> Message {
        let data = bytes::Bytes::from(vec![i as u8; len]);
        let cid = raw_cid(&data);
        Message { payload: vec![Block { prefix: prefix_of(&cid), data }], ..Default::default() }
    }

    #[test]
    fn wants_are_merged_not_dropped_and_responses_are_bounded() {
        let mut q = Queue::default();
        // A window of wants far larger than the response queue: every entry is kept.
        for i in 0..3000 {
            assert_eq!(q.push(want(i)), 0);
        }
        // 81 × 100 KiB fit in 8 MiB; the 82nd does not.
        for i in 0..81 {
            assert_eq!(q.push(block(i, 100 << 10)), 0);
        }
        assert_eq!(q.push(block(9999, 100 << 10)), 1, "a response beyond the byte cap is dropped");
        assert_eq!(q.response_bytes, 81 * (100 << 10));
        let (mut entries, mut blocks, mut messages) = (0, 0, 0);
        while let Some(m) = q.next_message() {
            let n = m.wantlist.as_ref().map_or(0, |w| w.entries.len());
            assert!(n <= ENTRIES_PER_MESSAGE);
            assert!(prost::Message::encoded_len(&m) < message::MAX_MESSAGE);
            entries += n;
            blocks += m.payload.len();
            messages += 1;
        }
        assert_eq!((entries, blocks), (3000, 81));
        // 100 KiB blocks merged up to 256 KiB: three per message.
        assert_eq!(messages, 81 / 3);
        assert!(q.next_message().is_none());
        assert_eq!(q.response_bytes, 0);
        for i in 0..MAX_RESPONSES as u32 {
            assert_eq!(q.push(block(i, 10)), 0);
        }
        assert_eq!(q.push(block(0, 10)), 1, "a response beyond the count cap is dropped");
        while q.next_message().is_some() {}
        let full = (0..MAX_ENTRIES as u32 + 5).map(want).map(|m| q.push(m)).sum::<usize>();
        assert_eq!(full, 5, "entries beyond the cap are counted as dropped");
    }

    /// The server side: a response for a peer whose queue is full waits (which stops reading that
    /// peer's wants) until the writer takes something, instead of being dropped at once.
    #[tokio::test(start_paused = true)]
    async fn a_response_waits_for_room_instead_of_being_dropped() {
        // No swarm polls this control, so the peer's writer takes one message and then waits in
        // `open` for a stream that never comes: nothing drains the queue but this test.
        let behaviour = libp2p_stream::Behaviour::new();
        let outbox = Outbox::new(behaviour.new_control());
        let peer = PeerId::random();
        let pq = || outbox.peers.lock().unwrap().get(&peer).cloned().unwrap();
        let mut i = 0;
        while pq_has_room(&outbox, peer) {
            outbox.respond(peer, block(i, 100 << 10)).await;
            i += 1;
            tokio::task::yield_now().await;
        }
        let queued = pq().queue.lock().unwrap().responses.len();
        assert!(queued >= 80, "the queue filled to its byte cap ({queued} responses)");
        // Full: the next response waits rather than returning (a drop would return at once).
        let waiting = outbox.respond(peer, block(i, 100 << 10));
        tokio::pin!(waiting);
        assert!(tokio::time::timeout(Duration::from_secs(1), &mut waiting).await.is_err());
        // The writer takes a message and says so: the waiting response goes in, nothing is lost.
        let taken = pq().queue.lock().unwrap().next_message().unwrap();
        pq().room.notify_waiters();
        waiting.await;
        let after = pq().queue.lock().unwrap().responses.len();
        assert_eq!(after, queued - taken.payload.len() + 1);
        // Fill it again; then with no room for BITSWAP_RESPONSE_WAIT, a response is dropped and the task
        // goes on.
        while pq_has_room(&outbox, peer) {
            i += 1;
            outbox.respond(peer, block(i, 100 << 10)).await;
        }
        let full = pq().queue.lock().unwrap().responses.len();
        let started = tokio::time::Instant::now();
        outbox.respond(peer, block(i + 1, 100 << 10)).await;
        assert!(started.elapsed() >= BITSWAP_RESPONSE_WAIT);
        assert_eq!(pq().queue.lock().unwrap().responses.len(), full, "the late response was dropped");
        drop(behaviour);
    }

    fn pq_has_room(outbox: &Outbox, peer: PeerId) -> bool {
        let peers = outbox.peers.lock().unwrap();
        peers.get(&peer).is_none_or(|pq| pq.queue.lock().unwrap().has_room(100 << 10))
    }
}
