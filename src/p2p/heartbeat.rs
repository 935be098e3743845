//! `/peerix/heartbeat/1.0.0`: how two connected peerix nodes keep hearing each other, at half
//! the bytes of libp2p's ping.
//!
//! [`super::liveness`] closes a connection that has been quiet for
//! [`crate::timeouts::SILENT_AFTER`], so that a node that vanished stops being offered (its summary
//! goes with its connection) within seconds. libp2p's ping makes both ends ping every 2 s: two
//! exchanges per connection, ~340 B/s on the wire (a pair of idle daemons on loopback, 3 packets a
//! second), which made pings ~80 % of an idle fleet's traffic (N = 51: 4.1 KB/s a node). Here only
//! the end with the smaller peer id asks, one byte every [`crate::timeouts::HEARTBEAT_EVERY`]; the
//! other answers it, and each end counts the other's byte as hearing from it
//! ([`Peers::beat`]; liveness judges a peer by beats once a heartbeat stream with it is open).
//! libp2p's ping stays, every [`crate::timeouts::PING_INTERVAL`], for IPFS nodes and peerix nodes
//! older than this protocol.
//!
//! The asker does not judge: a beat answered late (behind bulk data on a busy link) is still read,
//! and liveness, which also counts data the peer moves, decides. Neither end's stream keeps a
//! connection open (like ping's): an idle connection between two nodes still closes.

use std::sync::Arc;
use std::time::Instant;

use futures_util::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::P2pError;
use super::peers::Peers;
use crate::timeouts::{HEARTBEAT_EVERY, PRESENCE_OPEN, SILENT_AFTER};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/peerix/heartbeat/1.0.0");

/// Heartbeat streams answered at once: one per connected peer whose id is smaller than ours.
const MAX_STREAMS: usize = 1024;
/// Streams one peer may hold to us (one; a second while the first's connection is replaced).
const PER_PEER: usize = 2;

/// True if this end asks: of two nodes, exactly one does, whoever dialled. (A daemon always asks
/// the tracker's node, which lists [`PROTOCOL`] but is no peerix node: [`answer_only`].)
pub fn asks(local: &PeerId, peer: &PeerId) -> bool {
    local.to_bytes() < peer.to_bytes()
}

/// Beats with `peer` for as long as it is connected: spawned once per connected peer that lists
/// [`PROTOCOL`] ([`Peers::start_beating`]). A stream that ends (its connection replaced, or an
/// answer not back within [`SILENT_AFTER`] three times over, by when liveness has closed a silent
/// connection) is opened again while the peer is connected; the task ends only when it is not
/// ([`Peers::beat_ends`]), so a new connection's identify never finds a task on its way out.
pub async fn beat(mut control: libp2p_stream::Control, peers: Arc<Peers>, peer: PeerId) {
    loop {
        match tokio::time::timeout(PRESENCE_OPEN, control.open_stream(peer, PROTOCOL)).await {
            Ok(Ok(mut stream)) => {
                stream.ignore_for_keep_alive();
                // The peer just agreed to the protocol: heard, and judged by beats from now on (a
                // tracker stopped a second after this open was noticed 5 s later, not after its
                // next two pings, 30 s apart).
                peers.beat(peer);
                let why = ask(&mut stream, &peers, peer).await;
                debug!(%peer, cause = %why, "heartbeat stream ended");
                peers.beat_stopped(peer);
            }
            Ok(Err(e)) => debug!(%peer, cause = %e, "cannot open a heartbeat stream"),
            Err(_) => debug!(%peer, "heartbeat stream not open in time"),
        }
        if peers.beat_ends(peer) {
            return;
        }
        tokio::time::sleep(HEARTBEAT_EVERY).await;
    }
}

async fn ask(stream: &mut Stream, peers: &Peers, peer: PeerId) -> std::io::Error {
    let mut byte = [0u8; 1];
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sent = Instant::now();
        let beat = async {
            stream.write_all(&[1]).await?;
            stream.flush().await?;
            stream.read_exact(&mut byte).await
        };
        match tokio::time::timeout(SILENT_AFTER * 3, beat).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return e,
            Err(_) => return std::io::ErrorKind::TimedOut.into(),
        }
        peers.beat(peer);
        peers.pinged(peer, sent.elapsed());
    }
}

/// Answers every peer's heartbeat until `shutdown`.
pub fn serve(
    control: &mut libp2p_stream::Control,
    peers: Arc<Peers>,
    shutdown: CancellationToken,
) -> Result<(), P2pError> {
    answer_all(control, Some(peers), shutdown)
}

/// The tracker's node answers daemons' heartbeats (they ask it, whatever the ids: it asks no one)
/// so that a daemon notices within seconds that the tracker went silent and holds its presence
/// again; it judges the daemons by its own pings.
pub fn answer_only(control: &mut libp2p_stream::Control, shutdown: CancellationToken) -> Result<(), P2pError> {
    answer_all(control, None, shutdown)
}

fn answer_all(
    control: &mut libp2p_stream::Control,
    peers: Option<Arc<Peers>>,
    shutdown: CancellationToken,
) -> Result<(), P2pError> {
    let slots = Arc::new(Semaphore::new(MAX_STREAMS));
    super::inbound::accept(control, PROTOCOL, slots, PER_PEER, shutdown, move |peer, stream| {
        let peers = peers.clone();
        async move { answer(peer, stream, peers.as_deref()).await }
    })
}

/// Echoes each byte; a stream with no beat for a few of [`SILENT_AFTER`] ends (its asker gone
/// without a close, its connection closed by liveness or soon to be).
async fn answer(peer: PeerId, mut stream: Stream, peers: Option<&Peers>) {
    stream.ignore_for_keep_alive();
    let mut byte = [0u8; 1];
    loop {
        match tokio::time::timeout(SILENT_AFTER * 3, stream.read_exact(&mut byte)).await {
            Ok(Ok(())) => {}
            _ => break,
        }
        if let Some(peers) = peers {
            peers.beat(peer);
        }
        if stream.write_all(&byte).await.is_err() || stream.flush().await.is_err() {
            break;
        }
    }
    // Closed by the asker or broken: its pings judge it again until the next beat.
    if let Some(peers) = peers {
        peers.beat_stopped(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_two_peers_exactly_one_asks() {
        for _ in 0..32 {
            let (a, b) = (PeerId::random(), PeerId::random());
            assert!(asks(&a, &b) != asks(&b, &a));
            assert!(!asks(&a, &a));
        }
    }
}
