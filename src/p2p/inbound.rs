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
use std::sync::{Arc, Mutex};

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
    let held = Arc::new(PerPeer::new(per_peer));
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
            let Some(share) = held.take(peer) else {
                debug!(%peer, %protocol, "peer holds too many streams; dropping one");
                continue;
            };
            let work = handle(peer, stream);
            crate::tasks::spawn(module_path!(), async move {
                work.await;
                drop((permit, share));
            });
        }
    });
    Ok(())
}

/// How many of something (streams, answers in progress) each peer holds, capped per peer: one
/// peer cannot take every slot of a shared pool.
pub(crate) struct PerPeer {
    cap: usize,
    held: Mutex<HashMap<PeerId, usize>>,
}

/// One peer's share, given back on drop.
pub(crate) struct Share {
    of: Arc<PerPeer>,
    peer: PeerId,
}

impl PerPeer {
    pub(crate) fn new(cap: usize) -> Self {
        Self { cap, held: Mutex::default() }
    }

    /// A share for `peer`, or `None` while it holds the cap already.
    pub(crate) fn take(self: &Arc<Self>, peer: PeerId) -> Option<Share> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(peer).or_default();
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(Share { of: self.clone(), peer })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut held = self.of.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_holds_at_most_its_cap_and_gets_shares_back() {
        let pool = Arc::new(PerPeer::new(2));
        let (a, b) = (PeerId::random(), PeerId::random());
        let first = pool.take(a).unwrap();
        let _second = pool.take(a).unwrap();
        assert!(pool.take(a).is_none(), "a third share over the cap");
        assert!(pool.take(b).is_some(), "another peer is not limited by the first");
        drop(first);
        assert!(pool.take(a).is_some(), "a share given back can be taken again");
    }
}
