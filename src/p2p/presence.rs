//! The daemon's side of [`crate::tracker_wire::PRESENCE_PROTOCOL`]: one idle stream held open to
//! the tracker's node, reopened with backoff whenever it ends. Without it nothing kept a daemon
//! connected to the tracker's node (its relay refuses reservations when it has no public address,
//! as on a LAN), so the tracker could not tell a departed peer from an idle one and named it as a
//! provider until its record expired (5 min).

use futures_util::AsyncReadExt;
use libp2p::PeerId;
use tracing::debug;

use crate::timeouts::{FIRST_RETRY, MAX_BACKOFF};
use crate::tracker_wire::PRESENCE_PROTOCOL;

/// Holds a presence stream to `tracker` for as long as the process runs.
pub async fn hold(mut control: libp2p_stream::Control, tracker: PeerId) {
    let mut backoff = FIRST_RETRY;
    loop {
        match control.open_stream(tracker, PRESENCE_PROTOCOL).await {
            Ok(mut stream) => {
                debug!(%tracker, "holding a presence stream to the tracker's node");
                backoff = FIRST_RETRY;
                // The tracker never writes: this returns when the stream or connection ends.
                let _ = stream.read(&mut [0u8; 1]).await;
                debug!(%tracker, "presence stream ended");
            }
            Err(e) => debug!(%tracker, cause = %e, "cannot open a presence stream"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
