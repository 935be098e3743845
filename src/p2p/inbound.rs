//! Inbound streams of one protocol, handed from `libp2p-stream` to a task of their own.
//!
//! `libp2p-stream` queues at most one accepted stream per protocol and drops the rest while its
//! acceptor is busy (rust-libp2p#5651), so the accept loop does nothing but take a slot and spawn:
//! every protocol we serve (bitswap, narinfo, blocks, have-summaries) goes through [`accept`]. A
//! stream that finds no free slot is dropped at once: the asker sees a closed stream and retries,
//! and a peer opening streams in a loop costs us one spawn each at most.

use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::P2pError;

/// Accepts `protocol` until `shutdown`, running `handle` on its own task for each stream while one
/// of `slots` is free (a slot is held until the handler returns).
pub(crate) fn accept<F, Fut>(
    control: &mut libp2p_stream::Control,
    protocol: StreamProtocol,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
    handle: F,
) -> Result<(), P2pError>
where
    F: Fn(PeerId, Stream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut incoming = control.accept(protocol.clone()).map_err(|_| P2pError::Protocol)?;
    tokio::spawn(async move {
        loop {
            let (peer, stream) = tokio::select! {
                next = incoming.next() => match next { Some(s) => s, None => break },
                _ = shutdown.cancelled() => break,
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                debug!(%peer, %protocol, "too many inbound streams; dropping one");
                continue;
            };
            let work = handle(peer, stream);
            tokio::spawn(async move {
                work.await;
                drop(permit);
            });
        }
    });
    Ok(())
}
