//! Response bodies produced piece by piece from files and SQLite and handed to the connection
//! ([`super::conn`]) through a bounded channel, and [`FileBody`]: a local NAR the connection sends
//! with `sendfile(2)`. A body is a producer (`next piece, or the end`) driven by a small async task:
//! it waits for room in the channel, then produces pieces on a blocking thread until the channel is
//! full again. So a slow or stalled client costs a parked task and ≤ [`PIECES_IN_FLIGHT`] pieces of
//! memory, never a blocking thread (tokio has 512; one per stalled download let slow readers starve the indexer,
//! the gateway and bitswap). An `Err` piece aborts the body, so the client sees a failed transfer
//! rather than a short or wrong one.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;

use crate::nix::nar::OUT_CHUNK;
use crate::nix::nar_layout::Cursor;

/// Pieces buffered between producer and socket (each ≤ 256 KiB).
pub const PIECES_IN_FLIGHT: usize = 4;

/// Returns the body fed by `produce` (`Ok(None)`: the end), called on a blocking thread only while
/// the client keeps up: the thread streams pieces into the channel as long as it has room and is
/// given back the moment it is full; then this task waits for room, holding no thread. Measured
/// against a thread per body (16 clients, loopback, 0.64 CPU-s per GiB): this costs ~0.78 (one
/// blocking call per piece cost about as much; batching pieces per call stalled the socket while the
/// batch was read). An error it returns aborts the body; a client that goes away stops the producer.
pub fn pull(mut produce: impl FnMut() -> io::Result<Option<Bytes>> + Send + 'static) -> Body {
    let (tx, rx) = mpsc::channel(PIECES_IN_FLIGHT);
    crate::tasks::spawn(module_path!(), async move {
        loop {
            // Room for half the pieces (this task is the only sender: it stays free), so a thread
            // is taken once per two pieces at worst while the client drains the other two.
            if tx.reserve_many(PIECES_IN_FLIGHT / 2).await.is_err() {
                return;
            }
            let sender = tx.clone();
            let (back, step) = match crate::tasks::spawn_blocking(module_path!(), move || {
                let step = stream_while_room(&mut produce, &sender);
                (produce, step)
            })
            .await
            {
                Ok(done) => done,
                Err(e) => {
                    let _ = tx.send(Err(io::Error::other(format!("response body failed: {e}")))).await;
                    return;
                }
            };
            produce = back;
            match step {
                Step::Full => {}
                Step::Done => return,
                Step::Failed(e) => {
                    tracing::warn!(cause = %e, "response body aborted");
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    Body::new(ChannelBody { rx })
}

/// Why [`stream_while_room`] gave its thread back.
enum Step {
    /// The channel is full: wait for the client.
    Full,
    /// The body is complete, or the client has gone.
    Done,
    Failed(io::Error),
}

/// Produces pieces into `tx` until it is full, the body ends or production fails.
fn stream_while_room(
    produce: &mut impl FnMut() -> io::Result<Option<Bytes>>,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> Step {
    loop {
        match produce() {
            Ok(Some(piece)) => {
                if tx.try_send(Ok(piece)).is_err() {
                    return Step::Done; // Closed (never full: there was room and we are the only sender).
                }
            }
            Ok(None) => return Step::Done,
            Err(e) => return Step::Failed(e),
        }
        if tx.capacity() == 0 {
            return Step::Full;
        }
    }
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

/// A window of a local NAR in a response's extensions: the connection takes the cursor and sends
/// its file ranges with `sendfile(2)` (nothing of them passes through userspace). The response's
/// body reads the same cursor, only if something polls it instead (a test calling the router
/// directly); it starts on its first poll, so the connection's path reads nothing twice.
#[derive(Clone)]
pub struct FileBody {
    cursor: Arc<Mutex<Option<Cursor>>>,
    on_done: Arc<dyn Fn(u64) + Send + Sync>,
}

impl FileBody {
    /// The extension and the fallback body for `cursor`; `on_done(bytes)` runs once it is sent whole.
    pub fn new(cursor: Cursor, on_done: impl Fn(u64) + Send + Sync + 'static) -> (Self, Body) {
        let file = Self { cursor: Arc::new(Mutex::new(Some(cursor))), on_done: Arc::new(on_done) };
        let fallback = file.clone();
        let body = Body::new(LazyBody::Waiting(Some(Box::new(move || {
            let Some(mut cursor) = fallback.take() else { return Body::empty() };
            let mut sent = 0;
            pull(move || {
                let piece = cursor.next_piece(OUT_CHUNK)?;
                match &piece {
                    Some(p) => sent += p.len() as u64,
                    None => (fallback.on_done)(sent),
                }
                Ok(piece.map(Bytes::from))
            })
        }))));
        (file, body)
    }

    /// The cursor, to the first caller.
    pub fn take(&self) -> Option<Cursor> {
        self.cursor.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub fn finished(&self, bytes: u64) {
        (self.on_done)(bytes)
    }
}

type StartBody = Box<dyn FnOnce() -> Body + Send>;

/// A body made on its first poll.
enum LazyBody {
    Waiting(Option<StartBody>),
    Started(Body),
}

impl http_body::Body for LazyBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let LazyBody::Waiting(start) = this {
            let body = start.take().map_or_else(Body::empty, |start| start());
            *this = LazyBody::Started(body);
        }
        match this {
            LazyBody::Started(body) => Pin::new(body).poll_frame(cx),
            LazyBody::Waiting(_) => Poll::Ready(None),
        }
    }
}
