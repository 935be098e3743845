//! Inbound streams of one protocol, handed from `libp2p-stream` to a task of their own.
//!
//! `libp2p-stream` queues at most 256 accepted streams per protocol (our patch, `vendor/README.md`:
//! upstream holds one and dropped the rest while its acceptor was busy, rust-libp2p#5651, so a
//! seeder that a crowd opened lanes to at once lost most of them), and drops the rest; the accept
//! loop does nothing but take a slot and spawn:
//! every protocol we serve (bitswap, narinfo, blocks, have-summaries) goes through [`accept`]. A
//! stream that finds no free slot is dropped at once: the asker sees a closed stream and retries,
//! and a peer opening streams in a loop costs us one spawn each at most. For peerix's own protocols
//! one peer holds at most [`PER_PEER`] streams at once, so it cannot take every slot (our askers
//! keep one to a few long-lived streams per peer: [`super::lanes`]); bitswap keeps its own per-peer
//! share, which also drops a peer that overruns it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::P2pError;

/// Streams of one protocol one peer may hold open at once (a peerix asker keeps ≤ 4 lanes).
pub const PER_PEER: usize = 32;

/// Accepts `protocol` until `shutdown`, running `handle` on its own task for each stream while one
/// of `slots` is free and the peer holds fewer than `per_peer` (a slot is held until the handler
/// returns).
pub(crate) fn accept<F, Fut>(
    control: &mut libp2p_stream::Control,
    protocol: StreamProtocol,
    slots: Arc<Semaphore>,
    per_peer: usize,
    shutdown: CancellationToken,
    handle: F,
) -> Result<(), P2pError>
where
    F: Fn(PeerId, Stream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut incoming = control.accept(protocol.clone()).map_err(|_| P2pError::Protocol)?;
    let held: Arc<std::sync::Mutex<HashMap<PeerId, usize>>> = Arc::default();
    crate::tasks::spawn(module_path!(), async move {
        loop {
            let (peer, stream) = tokio::select! {
                next = incoming.next() => match next { Some(s) => s, None => break },
                _ = shutdown.cancelled() => break,
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                debug!(%peer, %protocol, "too many inbound streams; dropping one");
                continue;
            };
            {
                let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
                let n = held.entry(peer).or_default();
                if *n >= per_peer {
                    debug!(%peer, %protocol, "peer holds too many streams; dropping one");
                    continue;
                }
                *n += 1;
            }
            let work = handle(peer, stream);
            let held = held.clone();
            crate::tasks::spawn(module_path!(), async move {
                work.await;
                drop(permit);
                let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(n) = held.get_mut(&peer) {
                    *n -= 1;
                    if *n == 0 {
                        held.remove(&peer);
                    }
                }
            });
        }
    });
    Ok(())
}
