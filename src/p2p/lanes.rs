//! Lanes: long-lived streams that carry a peerix protocol's requests to one peer, pipelined.
//!
//! Opening a stream costs a round trip (multistream-select), and `libp2p-stream` opens one
//! outbound stream per connection at a time: with a stream per request, 25 narinfo lookups to a
//! peer 40 ms away waited 25 × 40 ms for their streams alone, and missed the lookup deadline (the
//! WAN row of `benches/closure.sh` failed). A lane is opened once and then carries request after
//! request: each is written as soon as it is made, the peer answers them in order on the same
//! stream, and a reader hands each answer (a fixed number of frames) to whoever asked. A request
//! then costs one round trip plus its bytes.
//!
//! Up to `max` lanes per peer: a request takes the least loaded one, and a new lane is opened
//! only when every lane has work queued, so the common case is one stream per peer and protocol.
//! Bounds: [`DEPTH`] requests queued on a lane; a lane idle for [`LANE_IDLE`] closes (the server closes
//! its end after longer). An answer whose asker gave up (a deadline, a hedged unit's loser) is still
//! read and dropped, so the lane stays in step; one that does not come within [`LANE_DRAIN`] breaks the
//! lane, since the answers behind it would wait for bytes that may never come: the requests queued
//! on it fail as [`LaneError::Dropped`] and are asked again on a fresh lane. Bulk lanes
//! ([`Lanes::drain_abandoned`]) break at once instead, which ends the stream and so stops the peer
//! sending a unit nobody wants: a seeder serving a crowd is the busiest node and loses most races
//! for a hedged unit, and it sent each such unit whole (N = 100 flash crowd: it uploaded 160 MB,
//! of which the crowd's transfers used 79 MB).
//!
//! The serving side ([`serve_requests`]) answers a stream's requests one after the other until the
//! asker closes it, so a peer that asks once per stream (older peerix) is served the same way.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio::sync::{mpsc, oneshot};

use super::frame::{self, FrameError};
use crate::timeouts::{LANE_DRAIN, LANE_IDLE, LANE_SERVE_IDLE};

/// Requests queued on one lane (written, or waiting to be): a burst beyond this opens another lane
/// or waits for room.
pub const DEPTH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum LaneError {
    #[error("cannot open a stream")]
    Open(#[from] libp2p_stream::OpenStreamError),
    /// The lane ended before any byte of this answer arrived: the peer dropped the request unread
    /// (its stream limit, an older peer that answers once per stream, a lane closing as it was
    /// picked). Worth asking again on a fresh lane; not a fault of the peer.
    #[error("peer dropped the request unanswered")]
    Dropped,
    #[error("stream failed mid-answer")]
    Io(#[from] std::io::Error),
    #[error("bad frame")]
    Frame(#[from] FrameError),
    #[error("malformed message")]
    Malformed,
    #[error("answer not written within {0:?}")]
    Slow(Duration),
}

/// One request: its frame (already encoded), and the answer's shape.
struct Job {
    request: Bytes,
    frames: usize,
    max_frame: usize,
    reply: oneshot::Sender<Result<Vec<Bytes>, LaneError>>,
}

#[derive(Clone)]
struct Lane {
    jobs: mpsc::Sender<Job>,
    /// Requests handed to the lane and not yet answered.
    load: Arc<AtomicUsize>,
}

/// What the lanes of one protocol did, for `/api/status` and `/metrics`: requests far outnumber
/// streams when lanes carry many requests each.
#[derive(Debug, Default, serde::Serialize)]
pub struct LaneCounters {
    pub streams_opened: AtomicU64,
    pub requests: AtomicU64,
    /// Requests asked again because their lane ended before the answer began.
    pub requests_dropped: AtomicU64,
}

/// Told the peer each time a frame of an answer arrives from it.
type OnFrame = Arc<dyn Fn(PeerId) + Send + Sync>;

/// The lanes of one protocol to every peer.
#[derive(Clone)]
pub struct Lanes {
    control: libp2p_stream::Control,
    protocol: StreamProtocol,
    max: usize,
    retries: usize,
    lanes: Arc<Mutex<HashMap<PeerId, Vec<Lane>>>>,
    on_frame: Option<OnFrame>,
    /// How long an answer whose asker gave up is still read before the lane is given up.
    drain: Duration,
    pub counters: Arc<LaneCounters>,
}

impl Lanes {
    /// Up to `max` lanes per peer; a request its lane dropped unanswered is sent again up to
    /// `retries` times, on a fresh lane.
    pub fn new(control: libp2p_stream::Control, protocol: StreamProtocol, max: usize, retries: usize) -> Self {
        let lanes = Arc::default();
        let counters = Arc::default();
        Self { control, protocol, max: max.max(1), retries, lanes, on_frame: None, drain: LANE_DRAIN, counters }
    }

    /// Calls `f` with the peer each time a frame of an answer arrives: a long answer in progress
    /// (a 1 MiB unit from a seeder a crowd shares: ~80 KB/s each at N = 51) shows the peer at
    /// work long before it ends.
    pub fn on_frame(self, f: impl Fn(PeerId) + Send + Sync + 'static) -> Self {
        Self { on_frame: Some(Arc::new(f)), ..self }
    }

    /// An answer whose asker gave up is read for at most `drain` ([`LANE_DRAIN`] unless set) before
    /// its lane is given up; zero for bulk answers: only one already here is taken.
    pub fn drain_abandoned(self, drain: Duration) -> Self {
        Self { drain, ..self }
    }

    /// Lanes of the same protocol, counted together with these but never shared with them: a
    /// request on them does not queue behind this set's requests at the peer.
    pub fn apart(&self, max: usize) -> Self {
        Self { lanes: Arc::default(), max: max.max(1), ..self.clone() }
    }

    /// Sends `request` (one encoded frame) to `peer` and reads the answer's `frames` frames of at
    /// most `max_frame` bytes each. [`LaneError::Dropped`] only once every retry was dropped too.
    pub async fn request(
        &self,
        peer: PeerId,
        request: Bytes,
        frames: usize,
        max_frame: usize,
    ) -> Result<Vec<Bytes>, LaneError> {
        let mut attempt = 0;
        loop {
            match self.request_once(peer, request.clone(), frames, max_frame).await {
                Err(LaneError::Dropped) if attempt < self.retries => attempt += 1,
                answer => return answer,
            }
        }
    }

    async fn request_once(
        &self,
        peer: PeerId,
        request: Bytes,
        frames: usize,
        max_frame: usize,
    ) -> Result<Vec<Bytes>, LaneError> {
        let lane = self.pick(peer);
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        lane.load.fetch_add(1, Ordering::Relaxed);
        let job = Job { request, frames, max_frame, reply };
        let answer = match lane.jobs.send(job).await {
            Ok(()) => answer.await.unwrap_or(Err(LaneError::Dropped)),
            Err(_) => {
                lane.load.fetch_sub(1, Ordering::Relaxed);
                Err(LaneError::Dropped)
            }
        };
        if matches!(answer, Err(LaneError::Dropped)) {
            self.counters.requests_dropped.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }

    /// The least loaded live lane to `peer`, or a new one when every lane has work (up to `max`).
    fn pick(&self, peer: PeerId) -> Lane {
        let mut all = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, lanes| {
            lanes.retain(|l| !l.jobs.is_closed());
            !lanes.is_empty()
        });
        let lanes = all.entry(peer).or_default();
        let best = lanes.iter().min_by_key(|l| l.load.load(Ordering::Relaxed)).cloned();
        match best {
            Some(lane) if lane.load.load(Ordering::Relaxed) == 0 || lanes.len() >= self.max => lane,
            _ => {
                let lane = self.open(peer);
                lanes.push(lane.clone());
                lane
            }
        }
    }

    fn open(&self, peer: PeerId) -> Lane {
        let (jobs, rx) = mpsc::channel(DEPTH);
        let load = Arc::new(AtomicUsize::new(0));
        self.counters.streams_opened.fetch_add(1, Ordering::Relaxed);
        let (control, protocol, on_frame) = (self.control.clone(), self.protocol.clone(), self.on_frame.clone());
        let ends = Ends { load: load.clone(), on_frame, drain: self.drain };
        crate::tasks::spawn(module_path!(), run(control, peer, protocol, rx, ends));
        Lane { jobs, load }
    }
}

/// A job written to the stream, waiting for its answer.
struct Pending {
    frames: usize,
    max_frame: usize,
    reply: oneshot::Sender<Result<Vec<Bytes>, LaneError>>,
}

/// What a lane's task shares with its [`Lanes`]: the load it counts down, who is told of each
/// frame, how long an abandoned answer is read.
struct Ends {
    load: Arc<AtomicUsize>,
    on_frame: Option<OnFrame>,
    drain: Duration,
}

/// One lane: opens the stream, then writes requests as they come and reads answers in order,
/// until either side fails, the lane idles out or an asker gives up on its answer.
async fn run(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    protocol: StreamProtocol,
    mut jobs: mpsc::Receiver<Job>,
    ends: Ends,
) {
    let Ends { load, on_frame, drain } = ends;
    let stream = match control.open_stream(peer, protocol).await {
        Ok(s) => s,
        Err(e) => {
            // Every request queued meanwhile learns why; later ones find the lane closed.
            jobs.close();
            let why = e.to_string();
            while let Some(job) = jobs.recv().await {
                let _ = job.reply.send(Err(LaneError::Io(std::io::Error::other(why.clone()))));
            }
            return;
        }
    };
    let (mut reader, mut writer) = stream.split();
    let (written, mut to_read) = mpsc::channel::<Pending>(DEPTH);
    let write = async {
        loop {
            let job = match tokio::time::timeout(LANE_IDLE, jobs.recv()).await {
                Ok(Some(job)) => job,
                Ok(None) => break,
                Err(_) if load.load(Ordering::Relaxed) == 0 => break,
                Err(_) => continue,
            };
            if writer.write_all(&job.request).await.is_err() || writer.flush().await.is_err() {
                let _ = job.reply.send(Err(LaneError::Dropped));
                break;
            }
            let pending = Pending { frames: job.frames, max_frame: job.max_frame, reply: job.reply };
            if written.send(pending).await.is_err() {
                break;
            }
        }
    };
    let read = async {
        while let Some(mut pending) = to_read.recv().await {
            let frame_read = || {
                if let Some(f) = &on_frame {
                    f(peer)
                }
            };
            let answer = read_answer(&mut reader, pending.frames, pending.max_frame, frame_read);
            tokio::pin!(answer);
            let answer = tokio::select! {
                a = &mut answer => a,
                // The asker gave up (a deadline, or the other copy of a hedged unit won): the answer
                // is still read, so the lane stays in step for the requests behind it — unless it
                // does not come within `drain`, when the lane is given up with it.
                _ = pending.reply.closed() => match tokio::time::timeout(drain, &mut answer).await {
                    Ok(Ok(_)) => {
                        load.fetch_sub(1, Ordering::Relaxed);
                        continue;
                    }
                    _ => break,
                },
            };
            load.fetch_sub(1, Ordering::Relaxed);
            let failed = answer.is_err();
            let _ = pending.reply.send(answer);
            if failed {
                break;
            }
        }
    };
    tokio::select! {
        _ = write => {}
        _ = read => {}
    }
    // Whatever is queued or written and unanswered is dropped with the channels: each asker
    // sees `Dropped` and asks again on a fresh lane.
    jobs.close();
    let _ = writer.close().await;
}

/// The `frames` frames of one answer. `Dropped` when the stream ends before its first byte.
async fn read_answer<R: futures_util::AsyncRead + Unpin>(
    reader: &mut R,
    frames: usize,
    max_frame: usize,
    frame_read: impl Fn(),
) -> Result<Vec<Bytes>, LaneError> {
    let mut out = Vec::with_capacity(frames);
    for _ in 0..frames {
        match frame::read(reader, max_frame).await {
            Ok(Some(body)) => {
                frame_read();
                out.push(body)
            }
            Ok(None) | Err(FrameError::Io(_)) if out.is_empty() => return Err(LaneError::Dropped),
            Ok(None) => return Err(LaneError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// The serving side of a lane: reads requests of at most `max_request` bytes from `stream` and
/// answers each with `answer` (which writes its frames) before reading the next, until the asker
/// closes the stream, sends nothing for [`LANE_SERVE_IDLE`], or an answer fails or takes longer than
/// `answer_within` (a peer that does not read what it asked for). The first request must come
/// within `first_within` (a peer that opens a stream and says nothing holds it no longer).
pub async fn serve_requests<F, Fut>(
    mut stream: Stream,
    max_request: usize,
    first_within: Duration,
    answer_within: Duration,
    mut answer: F,
) -> Result<(), LaneError>
where
    F: FnMut(Bytes, Stream) -> Fut,
    Fut: Future<Output = Result<Stream, LaneError>>,
{
    let mut wait = first_within;
    loop {
        let request = match tokio::time::timeout(wait, frame::read(&mut stream, max_request)).await {
            Ok(Ok(Some(request))) => request,
            Ok(Ok(None)) | Err(_) => break,
            Ok(Err(e)) => return Err(e.into()),
        };
        let answered = async {
            let mut stream = answer(request, stream).await?;
            stream.flush().await?;
            Ok::<_, LaneError>(stream)
        };
        stream = tokio::time::timeout(answer_within, answered).await.map_err(|_| LaneError::Slow(answer_within))??;
        wait = LANE_SERVE_IDLE;
    }
    let _ = stream.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::io::Cursor;

    #[tokio::test]
    async fn an_answer_cut_before_its_first_byte_is_dropped_and_after_it_broken() {
        let frames = std::cell::Cell::new(0);
        let counted = || frames.set(frames.get() + 1);
        let empty: &[u8] = &[];
        assert!(matches!(read_answer(&mut Cursor::new(empty), 2, 64, counted).await, Err(LaneError::Dropped)));
        let mut one = Vec::new();
        frame::write(&mut one, b"first").await.unwrap();
        assert!(matches!(read_answer(&mut Cursor::new(one.clone()), 2, 64, counted).await, Err(LaneError::Io(_))));
        assert_eq!(frames.get(), 1, "each frame that arrives is told, though the answer breaks after it");
        frame::write(&mut one, b"second").await.unwrap();
        let got = read_answer(&mut Cursor::new(one), 2, 64, counted).await.unwrap();
        assert_eq!(got, vec![Bytes::from_static(b"first"), Bytes::from_static(b"second")]);
        assert_eq!(frames.get(), 3);
    }
}
