//! Sending a [`FileBody`] — a window of a local, uncompressed NAR — after its response head
//! ([`super::response`]): file ranges go page cache → socket by `sendfile(2)`; the head, the NAR
//! framing and small files are written from memory. The socket is non-blocking: every turn sends
//! until the body is done or the socket's buffer is full, then waits for room holding no thread —
//! a slow client costs only this small state.
//!
//! Where a turn runs: anything that may read the disk (the cursor's framing and small files, a file
//! range whose pages are not all in the page cache) on a blocking thread, never on an async worker;
//! it keeps the socket busy for as long as the client keeps up. A file range whose next pages are
//! cached (probed with `RWF_NOWAIT` reads) is resumed right on the worker that saw the socket
//! drain, as nginx does. Why: a hop per 2 MiB `sendfile` cost four futex calls and a wake-up each
//! (strace: 280 futex calls for a 128 MiB NAR, nginx none); with 16 Python readers on 2 cores, one
//! hop per "socket has room" still cost 3–7 % of the throughput against nginx.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::event::{PollFd, PollFlags};
use rustix::io::{Errno, ReadWriteFlags};
use rustix::net::SendFlags;
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::body::FileBody;
use super::response::stalled;
use crate::nix::nar_layout::{Cursor, Part};
use crate::timeouts::HTTP_SEND;

/// Bytes read into memory per part (framing and small files).
const COPY_PIECE: usize = 256 << 10;
/// Bytes one `sendfile` call may move. nginx's `sendfile_max_chunk` default (2 MiB) did better
/// here than 16 MiB calls: 1.9 against 1.6 GB/s to one curl, 0.43 against 0.54 CPU-s per GiB.
const SENDFILE_CALL: usize = 2 << 20;
/// Distance between two probes of the page cache: a 2 MiB call costs 9 one-byte reads. Pages are
/// evicted a folio (4 KiB up to 2 MiB) at a time, so a hole between two probes can be missed; the
/// call that meets it waits for the disk on the worker — what nginx's worker risks on every call.
const PROBE_STRIDE: u64 = 256 << 10;

/// Writes `head`, then the [`FileBody`] of `len` bytes; an error leaves the connection to be dropped.
pub(super) async fn send_file_body(stream: &TcpStream, head: Vec<u8>, file: FileBody, len: u64) -> io::Result<()> {
    let cursor = file.take().ok_or_else(|| io::Error::other("file body already taken"))?;
    if cursor.remaining() != len {
        return Err(io::Error::other("file body length differs from Content-Length"));
    }
    // Corked, the head and the NAR's first framing leave in the first full segment, not in two
    // small ones (nginx's `tcp_nopush`); uncorking pushes the last partial segment at once.
    let _ = rustix::net::sockopt::set_tcp_cork(stream, true);
    let head_len = head.len() as u64;
    let sender = Sender::new(stream, head, cursor)?.run(stream, Turn::Uncached).await?;
    let _ = rustix::net::sockopt::set_tcp_cork(stream, false);
    file.finished(sender.written - head_len);
    Ok(())
}

/// How a turn ended.
enum Turn {
    /// The whole body is sent.
    Done,
    /// The socket is full: wait for room.
    Full,
    /// What comes next may read the disk: continue on a blocking thread.
    Uncached,
}

/// Where a body's sending stands between two turns.
struct Sender {
    /// A duplicate of the connection's socket (tokio keeps the original; same non-blocking file).
    sock: OwnedFd,
    cursor: Cursor,
    /// The part the socket had no room for (first: the response head).
    pending: Option<Pending>,
    /// Bytes written, head included.
    written: u64,
}

enum Pending {
    Bytes { buf: Vec<u8>, at: usize },
    File { file: Arc<File>, at: u64, end: u64 },
}

impl Sender {
    fn new(stream: &TcpStream, head: Vec<u8>, cursor: Cursor) -> io::Result<Self> {
        Ok(Self {
            sock: rustix::io::dup(stream)?,
            cursor,
            pending: Some(Pending::Bytes { buf: head, at: 0 }),
            written: 0,
        })
    }

    /// Sends the rest of the body on `stream` (whose duplicate `self.sock` is), from `turn`.
    async fn run(mut self, stream: &TcpStream, mut turn: Turn) -> io::Result<Self> {
        loop {
            turn = match turn {
                Turn::Done => return Ok(self),
                Turn::Full => {
                    tokio::time::timeout(HTTP_SEND, wait_writable(stream)).await.map_err(|_| stalled())??;
                    self.send_cached()?
                }
                Turn::Uncached => {
                    let (back, turn) = crate::tasks::spawn_blocking(module_path!(), move || {
                        let turn = self.send_until_full();
                        (self, turn)
                    })
                    .await
                    .map_err(io::Error::other)?;
                    self = back;
                    turn?
                }
            };
        }
    }

    /// On a blocking thread: sends until the body is complete or the socket is full.
    fn send_until_full(&mut self) -> io::Result<Turn> {
        loop {
            let rest = match self.pending.take() {
                Some(Pending::Bytes { buf, at }) => self.send_bytes(buf, at)?,
                Some(Pending::File { file, at, end }) => self.send_range(&file, at, end, end)?,
                None => match self.cursor.next_part(COPY_PIECE)? {
                    None => return Ok(Turn::Done),
                    Some(Part::Bytes(buf)) => self.send_bytes(buf, 0)?,
                    Some(Part::File { file, offset, len }) => {
                        self.send_range(&file, offset, offset + len, offset + len)?
                    }
                },
            };
            if rest.is_some() {
                self.pending = rest;
                return Ok(Turn::Full);
            }
        }
    }

    /// On an async worker: continues the pending file range while the pages it sends next are in
    /// the page cache, so no call here waits for the disk (short of pages evicted between the probe
    /// and the `sendfile`: that one call then waits, as nginx's worker would).
    fn send_cached(&mut self) -> io::Result<Turn> {
        loop {
            // Anything but a file range (bytes the socket had no room for) goes back untouched.
            let (file, at, end) = match self.pending.take() {
                Some(Pending::File { file, at, end }) => (file, at, end),
                other => {
                    self.pending = other;
                    return Ok(Turn::Uncached);
                }
            };
            let stop = end.min(at + SENDFILE_CALL as u64);
            if !cached(&file, at, stop) {
                self.pending = Some(Pending::File { file, at, end });
                return Ok(Turn::Uncached);
            }
            if let Some(rest) = self.send_range(&file, at, stop, end)? {
                self.pending = Some(rest);
                return Ok(Turn::Full);
            }
            if stop < end {
                self.pending = Some(Pending::File { file, at: stop, end });
            }
        }
    }

    /// Writes `buf[at..]`: `None` when all of it is sent, else what the full socket left.
    fn send_bytes(&mut self, buf: Vec<u8>, mut at: usize) -> io::Result<Option<Pending>> {
        while at < buf.len() {
            match rustix::net::send(&self.sock, &buf[at..], SendFlags::NOSIGNAL) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    at += n;
                    self.written += n as u64;
                }
                Err(Errno::AGAIN) => return Ok(Some(Pending::Bytes { buf, at })),
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Sends `file[at..stop]` of a range that ends at `end`: `None` when it reached `stop`, else
    /// the rest of the range the full socket left.
    fn send_range(&mut self, file: &Arc<File>, mut at: u64, stop: u64, end: u64) -> io::Result<Option<Pending>> {
        while at < stop {
            let count = ((stop - at) as usize).min(SENDFILE_CALL);
            match rustix::fs::sendfile(&self.sock, &**file, Some(&mut at), count) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than its NAR entry")),
                Ok(n) => self.written += n as u64,
                Err(Errno::AGAIN) => return Ok(Some(Pending::File { file: file.clone(), at, end })),
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }
}

/// True if the pages of `file[from..to]` are in the page cache, as far as reads of one byte every
/// [`PROBE_STRIDE`] that may not wait for the disk (`RWF_NOWAIT`) can tell. A file system without
/// `RWF_NOWAIT` answers "no": its ranges are all sent from blocking threads.
fn cached(file: &File, from: u64, to: u64) -> bool {
    let mut byte = [0u8; 1];
    let mut at = from;
    while at < to {
        let probe = at.min(to - 1);
        match rustix::io::preadv2(file, &mut [io::IoSliceMut::new(&mut byte)], probe, ReadWriteFlags::NOWAIT) {
            Ok(1) => {}
            _ => return false,
        }
        if at == to - 1 {
            break;
        }
        at = (at + PROBE_STRIDE).min(to - 1);
    }
    true
}

/// Waits until the socket has room again after a write on the duplicate descriptor (which tokio
/// does not see) found it full. Tokio's readiness may still say "writable" from before, so it is
/// checked with a zero-timeout `poll` inside `try_io`: "not writable" clears exactly the readiness
/// tokio had seen before the check, and a wake-up arriving after it is kept.
async fn wait_writable(stream: &TcpStream) -> io::Result<()> {
    loop {
        stream.writable().await?;
        let checked = stream.try_io(Interest::WRITABLE, || {
            let mut fds = [PollFd::new(stream, PollFlags::OUT)];
            rustix::event::poll(&mut fds, Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 }))?;
            match fds[0].revents().intersects(PollFlags::OUT | PollFlags::ERR | PollFlags::HUP) {
                true => Ok(()),
                false => Err(io::ErrorKind::WouldBlock.into()),
            }
        });
        match checked {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::nix::nar_layout::NarLayout;

    /// A socket that fills mid-part (framing, a small file, a `sendfile` range) is resumed at the
    /// exact byte where it stopped: the reader gets the head and the NAR whole, nothing twice.
    #[tokio::test]
    async fn a_body_resumes_exactly_where_a_full_socket_stopped_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("out");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a"), b"small file\n").unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        std::fs::write(root.join("big"), &big).unwrap();
        std::fs::write(root.join("sub/mid"), vec![7u8; 70_000]).unwrap();
        std::os::unix::fs::symlink("a", root.join("link")).unwrap();
        let layout = NarLayout::of(&root).unwrap();
        let size = layout.size();
        let mut expected = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        layout.reader().read_to_end(&mut expected).unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        // Small buffers (the kernel doubles them), but not so small that delayed ACKs pace the test.
        rustix::net::sockopt::set_socket_send_buffer_size(&server, 16 << 10).unwrap();
        rustix::net::sockopt::set_socket_recv_buffer_size(&client, 64 << 10).unwrap();
        let mut sender = Sender::new(&server, expected[..19].to_vec(), layout.into_cursor(0..size)).unwrap();

        // Nobody reads yet: the first turn must stop at a full socket, part-way.
        let turn = sender.send_until_full().unwrap();
        assert!(matches!(turn, Turn::Full), "a 3 MB body fit the socket's buffers");
        assert!(sender.written > 0 && sender.written < expected.len() as u64);

        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut client = client;
            let mut piece = [0u8; 1000]; // Small reads: the socket fills and drains again.
            while let Ok(n @ 1..) = client.read(&mut piece) {
                got.extend_from_slice(&piece[..n]);
            }
            got
        });
        let sender = sender.run(&server, turn).await.unwrap();
        assert_eq!(sender.written, expected.len() as u64);
        drop(sender);
        drop(server);
        let got = reader.join().unwrap();
        assert!(got == expected, "body differs: {} bytes, {} expected", got.len(), expected.len());
    }

    /// A range just written is found cached; dropped from the page cache, it is not (so it is
    /// sent from a blocking thread, not from an async worker).
    #[test]
    fn the_page_cache_probe_tells_cached_from_evicted_ranges() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![1u8; 4 << 20]).unwrap();
        let file = File::open(&path).unwrap();
        file.sync_all().unwrap();
        assert!(cached(&file, 0, 4 << 20));
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        assert!(!cached(&file, 0, 4 << 20), "evicted pages reported cached");
        assert!(!cached(&file, (3 << 20) + 5, (3 << 20) + 6), "one evicted byte reported cached");
        std::io::Read::read_to_end(&mut &file, &mut Vec::new()).unwrap();
        assert!(cached(&file, 0, 4 << 20));
    }

    /// A socket that fills inside an in-memory part (here a 1 MB head) is resumed from that part
    /// after it drains, not from the next one: the body arrives whole, with nothing skipped.
    #[tokio::test]
    async fn a_stop_inside_bytes_resumes_those_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("out");
        std::fs::write(&root, vec![3u8; 200_000]).unwrap();
        let layout = NarLayout::of(&root).unwrap();
        let size = layout.size();
        let head: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut expected = head.clone();
        layout.reader().read_to_end(&mut expected).unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        rustix::net::sockopt::set_socket_send_buffer_size(&server, 16 << 10).unwrap();
        rustix::net::sockopt::set_socket_recv_buffer_size(&client, 64 << 10).unwrap();
        let mut sender = Sender::new(&server, head, layout.into_cursor(0..size)).unwrap();
        let turn = sender.send_until_full().unwrap();
        assert!(matches!(turn, Turn::Full) && matches!(sender.pending, Some(Pending::Bytes { .. })));

        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut &client, &mut got).unwrap();
            got
        });
        let sender = sender.run(&server, turn).await.unwrap();
        assert_eq!(sender.written, expected.len() as u64);
        drop(sender);
        drop(server);
        let got = reader.join().unwrap();
        assert!(got == expected, "body differs: {} bytes, {} expected", got.len(), expected.len());
    }

    /// A cached range is sent from the worker in 2 MiB calls up to its end, byte-exact; an
    /// evicted one is left to a blocking thread untouched.
    #[tokio::test]
    async fn a_cached_range_goes_out_from_the_worker_and_an_evicted_one_does_not() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(3 << 20) + 12_345u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        let (from, end) = (1000, data.len() as u64);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        // Room for the whole range: one turn must cross the 2 MiB call boundary on its own.
        rustix::net::sockopt::set_socket_send_buffer_size(&server, 4 << 20).unwrap();
        let empty = NarLayout::of(dir.path()).unwrap();
        let mut sender = Sender::new(&server, Vec::new(), empty.into_cursor(0..0)).unwrap();

        // The kernel may keep a page DONTNEED asked it to drop (one still under writeback, or
        // busy): ask until the sender's first probe finds the range's first page evicted (a CI
        // run once found it still cached after one request).
        file.sync_all().unwrap();
        for _ in 0..50 {
            rustix::fs::fadvise(&*file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
            if !cached(&file, from, from + 1) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        sender.pending = Some(Pending::File { file: file.clone(), at: from, end });
        assert!(matches!(sender.send_cached().unwrap(), Turn::Uncached));
        assert_eq!(sender.written, 0, "an evicted range was sent from the worker");

        std::io::Read::read_to_end(&mut &*file, &mut Vec::new()).unwrap();
        assert!(matches!(sender.send_cached().unwrap(), Turn::Uncached));
        assert!(sender.pending.is_none());
        assert_eq!(sender.written, end - from);
        drop(sender);
        drop(server);
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut &client, &mut got).unwrap();
        assert!(got == data[from as usize..], "sent bytes differ from the file's");
    }
}
