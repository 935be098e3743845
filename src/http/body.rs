//! Response bodies produced on a blocking thread (file and SQLite reads) and handed to hyper through
//! a bounded channel: the producer waits while the client is slow, so memory per response stays at
//! [`PIECES_IN_FLIGHT`] pieces. An `Err` piece aborts the body, so the client sees a failed
//! transfer rather than a short or wrong one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;

/// Pieces buffered between producer and socket (each ≤ 256 KiB).
pub const PIECES_IN_FLIGHT: usize = 4;

/// Sends pieces from a blocking thread; `Err(BrokenPipe)` once the client has gone.
pub struct Sender(mpsc::Sender<io::Result<Bytes>>);

impl Sender {
    pub fn send(&self, piece: Bytes) -> io::Result<()> {
        self.0.blocking_send(Ok(piece)).map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }

    /// Aborts the body with `e` (ignored if the client has gone).
    pub fn abort(&self, e: io::Error) {
        let _ = self.0.blocking_send(Err(e));
    }
}

/// Runs `produce` on a blocking thread and returns the body it feeds. An error it returns aborts
/// the body (a client that went away is not reported).
pub fn spawn(produce: impl FnOnce(&Sender) -> io::Result<()> + Send + 'static) -> Body {
    let (tx, rx) = mpsc::channel(PIECES_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let tx = Sender(tx);
        match produce(&tx) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            Err(e) => {
                tracing::warn!(cause = %e, "response body aborted");
                tx.abort(e);
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
