//! `/peerix/heartbeat/1.0.0`: how two connected peerix nodes keep hearing each other, at half
//! the bytes of libp2p's ping.
//!
//! [`super::liveness`] closes a connection that has been quiet for
//! [`crate::timeouts::SILENT_AFTER`], so that a node that vanished stops being offered (its summary
//! goes with its connection) within seconds. libp2p's ping makes both ends ping every 2 s: two
//! exchanges per connection, ~340 B/s on the wire (a pair of idle daemons on loopback, 3 packets a
//! second), which made pings ~80 % of an idle fleet's traffic (N = 51: 4.1 KB/s a node). Here one
//! end asks, one byte every [`crate::timeouts::HEARTBEAT_EVERY`]; the other answers it, and each
//! end counts the other's byte as hearing from it ([`Peers::beat`]; liveness judges a peer by
//! beats once a heartbeat stream with it is open).
//! libp2p's ping stays, every [`crate::timeouts::PING_INTERVAL`], for IPFS nodes, peerix nodes
//! older than this protocol, and every peer we do not watch.
//!
//! Only peers whose leaving changes what we offer are watched (`Peer::watched`: we hold their
//! summary, keep them, they named a path we accepted lately, or the tracker's node): on a fleet of
//! 100 the DHT's walks hold ~40 connections a node open, and a heartbeat on each of them was most
//! of a node's control traffic at rest. The watcher asks, whatever the ids; when both ends watch,
//! the smaller id asks and the other stops asking once it sees that ([`Peers::asked_by`]).
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

/// Heartbeat streams answered at once: one per connected peer that watches us.
const MAX_STREAMS: usize = 1024;
/// Streams one peer may hold to us (one; a second while the first's connection is replaced).
const PER_PEER: usize = 2;

/// Starts a heartbeat task with every connected peer that became watched since it connected,
/// every [`HEARTBEAT_EVERY`] until `shutdown` (a peer watched from identify on, or the moment it
/// names a path, is started at once: [`start`]).
async fn keep(control: libp2p_stream::Control, peers: Arc<Peers>, local: PeerId, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        for peer in peers.start_due(&local) {
            spawn(&control, &peers, peer, local);
        }
    }
}

/// Starts a heartbeat task with `peer` if we should ask it and none runs.
pub fn start(control: &libp2p_stream::Control, peers: &Arc<Peers>, peer: PeerId, local: PeerId) {
    if peers.start_beating(peer, &local) {
        spawn(control, peers, peer, local);
    }
}

fn spawn(control: &libp2p_stream::Control, peers: &Arc<Peers>, peer: PeerId, local: PeerId) {
    crate::tasks::spawn(module_path!(), beat(control.clone(), peers.clone(), peer, local));
}

/// Beats with `peer` while we should ask it ([`Peers::asks`]: connected and watched). A stream
/// that ends (its connection replaced, or an answer not back within [`SILENT_AFTER`] three times
/// over, by when liveness has closed a silent connection) is opened again while that holds; the
/// task ends only when it does not ([`Peers::beat_ends`]), so a new connection's identify never
/// finds a task on its way out.
async fn beat(mut control: libp2p_stream::Control, peers: Arc<Peers>, peer: PeerId, local: PeerId) {
    loop {
        match tokio::time::timeout(PRESENCE_OPEN, control.open_stream(peer, PROTOCOL)).await {
            Ok(Ok(mut stream)) => {
                stream.ignore_for_keep_alive();
                // The peer just agreed to the protocol: heard, and judged by beats from now on (a
                // tracker stopped a second after this open was noticed 5 s later, not after its
                // next two pings, 30 s apart).
                peers.beat(peer);
                let on = peers.connection(&peer);
                match ask(&mut stream, &peers, peer, &local).await {
                    // Its own beats judge it (it asks us), or it no longer needs judging quickly:
                    // the verdict stands. (Reset here, a peer that asked us and was stopped a
                    // moment later was judged by its pings: offered 61 s after it left.)
                    None => debug!(%peer, "heartbeat stream closed: not ours to ask"),
                    Some(why) => {
                        debug!(%peer, cause = %why, "heartbeat stream ended");
                        peers.beat_stopped(peer, on);
                    }
                }
            }
            Ok(Err(e)) => debug!(%peer, cause = %e, "cannot open a heartbeat stream"),
            Err(_) => debug!(%peer, "heartbeat stream not open in time"),
        }
        if peers.beat_ends(peer, &local) {
            return;
        }
        tokio::time::sleep(HEARTBEAT_EVERY).await;
    }
}

/// Asks `peer` for a beat every [`HEARTBEAT_EVERY`] until the stream fails (`Some`) or we should
/// no longer ask ([`Peers::asks`]: it asks us, or we no longer watch it; `None`).
async fn ask(stream: &mut Stream, peers: &Peers, peer: PeerId, local: &PeerId) -> Option<std::io::Error> {
    let mut byte = [0u8; 1];
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !peers.asks(&peer, local) {
            let _ = stream.close().await;
            return None;
        }
        let sent = Instant::now();
        let beat = async {
            stream.write_all(&[1]).await?;
            stream.flush().await?;
            stream.read_exact(&mut byte).await
        };
        match tokio::time::timeout(SILENT_AFTER * 3, beat).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Some(e),
            Err(_) => return Some(std::io::ErrorKind::TimedOut.into()),
        }
        peers.beat(peer);
        peers.pinged(peer, sent.elapsed());
    }
}

/// Answers every peer's heartbeat, and asks the peers we watch ([`keep`]), until `shutdown`.
pub fn serve(
    control: &mut libp2p_stream::Control,
    peers: Arc<Peers>,
    local: PeerId,
    shutdown: CancellationToken,
) -> Result<(), P2pError> {
    answer_all(control, peers.clone(), shutdown.clone())?;
    crate::tasks::spawn(module_path!(), keep(control.clone(), peers, local, shutdown));
    Ok(())
}

/// The tracker's node answers daemons' heartbeats (they ask it, whatever the ids: it asks no one)
/// and judges them by those beats, as a daemon judges its peers: each side notices within seconds
/// that the other went silent (the daemon holds its presence again; the tracker leaves its paths
/// out of answers) on one exchange every 2 s.
pub fn answer_only(
    control: &mut libp2p_stream::Control,
    peers: Arc<Peers>,
    shutdown: CancellationToken,
) -> Result<(), P2pError> {
    answer_all(control, peers, shutdown)
}

fn answer_all(
    control: &mut libp2p_stream::Control,
    peers: Arc<Peers>,
    shutdown: CancellationToken,
) -> Result<(), P2pError> {
    let slots = Arc::new(Semaphore::new(MAX_STREAMS));
    super::inbound::accept(control, PROTOCOL, slots, PER_PEER, shutdown, move |peer, stream| {
        let peers = peers.clone();
        async move { answer(peer, stream, &peers).await }
    })
}

/// Echoes each byte; a stream with no beat for a few of [`SILENT_AFTER`] ends (its asker gone
/// without a close, its connection closed by liveness or soon to be).
async fn answer(peer: PeerId, mut stream: Stream, peers: &Peers) {
    stream.ignore_for_keep_alive();
    let on = peers.connection(&peer);
    peers.asked_by(peer, true, on);
    let mut byte = [0u8; 1];
    loop {
        match tokio::time::timeout(SILENT_AFTER * 3, stream.read_exact(&mut byte)).await {
            Ok(Ok(())) => {}
            _ => break,
        }
        peers.beat(peer);
        if stream.write_all(&byte).await.is_err() || stream.flush().await.is_err() {
            break;
        }
    }
    // Closed by the asker or broken: its pings judge it again until the next beat, or until we
    // ask it ourselves (`keep`, if we watch it).
    peers.asked_by(peer, false, on);
}
