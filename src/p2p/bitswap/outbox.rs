//! One writer task per peer: keeps one outbound bitswap stream open, merges messages that queued up
//! while it was writing (up to 1 MiB), and reopens the stream if it breaks. The queue per peer is
//! bounded; a full queue drops the message (the other side re-asks after its timeout) rather than
//! letting one slow peer hold the whole node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::{PeerId, StreamProtocol};
use tokio::sync::mpsc;
use tracing::debug;

use super::message::{self, Message};
use super::{PROTOCOL_1_0_0, PROTOCOLS};

/// Messages queued per peer.
const QUEUE: usize = 128;
/// A writer with nothing to send for this long closes its stream and exits.
const IDLE: Duration = Duration::from_secs(60);
/// Merge queued messages up to this size before writing.
const MERGE_LIMIT: usize = 1 << 20;

#[derive(Clone)]
pub struct Outbox {
    control: libp2p_stream::Control,
    writers: Arc<Mutex<HashMap<PeerId, mpsc::Sender<Message>>>>,
}

impl Outbox {
    pub fn new(control: libp2p_stream::Control) -> Self {
        Self { control, writers: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// Queues `msg` for `peer`, starting its writer if needed. Never blocks.
    pub fn send(&self, peer: PeerId, msg: Message) {
        let Ok(mut writers) = self.writers.lock() else { return };
        let mut msg = Some(msg);
        if let Some(tx) = writers.get(&peer) {
            match tx.try_send(msg.take().unwrap_or_default()) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    debug!(%peer, "bitswap queue full; dropping a message");
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(m)) => msg = Some(m),
            }
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        if let Some(m) = msg {
            let _ = tx.try_send(m);
        }
        writers.insert(peer, tx);
        tokio::spawn(write_loop(self.control.clone(), peer, rx, self.writers.clone()));
    }
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

async fn write_loop(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    mut rx: mpsc::Receiver<Message>,
    writers: Arc<Mutex<HashMap<PeerId, mpsc::Sender<Message>>>>,
) {
    let mut stream: Option<(libp2p::Stream, StreamProtocol)> = None;
    loop {
        let first = match tokio::time::timeout(IDLE, rx.recv()).await {
            Ok(Some(m)) => m,
            _ => break,
        };
        let mut batch = first;
        let mut size = prost::Message::encoded_len(&batch);
        while size < MERGE_LIMIT {
            let Ok(more) = rx.try_recv() else { break };
            size += prost::Message::encoded_len(&more);
            merge(&mut batch, more);
        }
        let mut sent = false;
        for _attempt in 0..2 {
            if stream.is_none() {
                stream = open(&mut control, peer).await;
            }
            let Some((s, protocol)) = stream.as_mut() else { break };
            let wire = if *protocol == PROTOCOL_1_0_0 || protocol.as_ref() == "/ipfs/bitswap" {
                to_v100(batch.clone())
            } else {
                batch.clone()
            };
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
        if !sent && stream.is_none() {
            // The peer is gone or speaks no bitswap: stop, so the next send starts afresh.
            break;
        }
    }
    // Close our end first, so the entry is ours exactly when its sender reports closed (a newer
    // writer for the same peer has an open one).
    rx.close();
    if let Ok(mut w) = writers.lock()
        && w.get(&peer).is_some_and(|tx| tx.is_closed())
    {
        w.remove(&peer);
    }
}

fn merge(into: &mut Message, more: Message) {
    match (&mut into.wantlist, more.wantlist) {
        (Some(a), Some(b)) => {
            a.entries.extend(b.entries);
            a.full |= b.full;
        }
        (None, Some(b)) => into.wantlist = Some(b),
        _ => {}
    }
    into.payload.extend(more.payload);
    into.blocks.extend(more.blocks);
    into.block_presences.extend(more.block_presences);
}

/// Bitswap 1.0.0 carries blocks as bare bytes (field 2) and knows no presences.
fn to_v100(mut m: Message) -> Message {
    m.blocks = m.payload.drain(..).map(|b| b.data).collect();
    m.block_presences.clear();
    m
}
