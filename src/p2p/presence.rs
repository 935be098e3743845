//! The daemon's side of [`crate::tracker_wire::PRESENCE_PROTOCOL`]: one idle stream held open to
//! the tracker's node, reopened with backoff whenever it ends. Without it nothing kept a daemon
//! connected to the tracker's node (its relay refuses reservations when it has no public address,
//! as on a LAN), so the tracker could not tell a departed peer from an idle one and named it as a
//! provider until its record expired (5 min).

use std::sync::Arc;
use std::time::Duration;

use futures_util::AsyncReadExt;
use libp2p::PeerId;
use tracing::debug;

use crate::p2p::peers::{Peers, random_u64};
use crate::timeouts::{FIRST_RETRY, PRESENCE_MAX_BACKOFF, PRESENCE_OPEN};
use crate::tracker_wire::PRESENCE_PROTOCOL;

/// Holds a presence stream to `tracker` for as long as the process runs.
pub async fn hold(mut control: libp2p_stream::Control, peers: Arc<Peers>, tracker: PeerId) {
    let mut backoff = FIRST_RETRY;
    loop {
        match tokio::time::timeout(PRESENCE_OPEN, control.open_stream(tracker, PRESENCE_PROTOCOL)).await {
            Err(_) => debug!(%tracker, "presence stream not open in time; trying again"),
            Ok(Ok(stream)) => {
                debug!(%tracker, "holding a presence stream to the tracker's node");
                backoff = FIRST_RETRY;
                held(stream, &peers, tracker).await;
                debug!(%tracker, "presence stream ended");
            }
            Ok(Err(e)) => debug!(%tracker, cause = %e, "cannot open a presence stream"),
        }
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(PRESENCE_MAX_BACKOFF);
    }
}

/// Returns when `stream` ends: the tracker never writes, so a read returns when the stream or its
/// connection ends — except when we closed that connection ourselves (the tracker went silent):
/// then the read is never woken, and a daemon held a dead stream while its new connection idled
/// out and the tracker counted it gone. So the connection is watched too.
async fn held(mut stream: libp2p::Stream, peers: &Peers, tracker: PeerId) {
    let mut buf = [0u8; 1];
    tokio::select! {
        _ = stream.read(&mut buf) => {}
        _ = peers.connection_down(&tracker) => {}
    }
}

/// Half of `wait` plus a random share of the other half: a fleet whose tracker restarted does not
/// come back in lockstep (the tracker admits 8 pending connections per address).
fn jittered(wait: Duration) -> Duration {
    wait / 2 + wait.mul_f64((random_u64() % 1024) as f64 / 2048.0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn a_wait_is_jittered_between_half_and_all_of_it() {
        let waits: Vec<Duration> = (0..64).map(|_| super::jittered(Duration::from_secs(8))).collect();
        assert!(waits.iter().all(|w| *w >= Duration::from_secs(4) && *w < Duration::from_secs(8)), "{waits:?}");
        assert!(waits.iter().any(|w| *w != waits[0]), "no jitter: {waits:?}");
    }
}
