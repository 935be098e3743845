//! Response bodies produced piece by piece from files and SQLite and handed to hyper through a
//! bounded channel. A body is a producer (`next piece, or the end`) driven by a small async task:
//! it waits for room in the channel first, then reads one piece on a blocking thread. So a slow or
//! stalled client costs a parked task and ≤ [`PIECES_IN_FLIGHT`] pieces of memory, never a
//! blocking thread (tokio has 512; one per stalled download let slow readers starve the indexer,
//! the gateway and bitswap). An `Err` piece aborts the body, so the client sees a failed transfer
//! rather than a short or wrong one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;

/// Pieces buffered between producer and socket (each ≤ 256 KiB).
pub const PIECES_IN_FLIGHT: usize = 4;

/// Returns the body fed by `produce`, called on a blocking thread once per piece (`Ok(None)`: the
/// end) and only when the client has taken enough of the earlier pieces to leave room for it. An
/// error it returns aborts the body; a client that goes away stops the producer.
pub fn pull(mut produce: impl FnMut() -> io::Result<Option<Bytes>> + Send + 'static) -> Body {
    let (tx, rx) = mpsc::channel(PIECES_IN_FLIGHT);
    tokio::spawn(async move {
        loop {
            let Ok(permit) = tx.reserve().await else { return };
            let (back, piece) = match tokio::task::spawn_blocking(move || {
                let piece = produce();
                (produce, piece)
            })
            .await
            {
                Ok(done) => done,
                Err(e) => {
                    permit.send(Err(io::Error::other(format!("response body failed: {e}"))));
                    return;
                }
            };
            produce = back;
            match piece {
                Ok(Some(bytes)) => permit.send(Ok(bytes)),
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(cause = %e, "response body aborted");
                    permit.send(Err(e));
                    return;
                }
            }
        }
    });
    Body::new(ChannelBody { rx })
}

struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx.poll_recv(cx).map(|piece| piece.map(|r| r.map(Frame::data)))
    }
}
