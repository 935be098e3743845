//! One HTTP/1.1 connection: read a request, hand it to the router, write the response, repeat
//! while the client keeps the connection alive.
//!
//! This is the layer hyper filled until local NARs had to go from the page cache to the socket
//! with `sendfile(2)`: hyper writes bodies from byte buffers, so every NAR byte cost a pread into
//! userspace, a channel hop and a copy into the socket — 0.5–0.7 CPU-s per GiB, taken from nix on
//! a 2-core machine. A response carrying a [`FileBody`] is written here as its framing bytes and
//! `sendfile` calls; every other response body is written as its frames arrive (with
//! `Content-Length`, or chunked when its length is unknown).
//!
//! What it keeps from hyper's behaviour: keep-alive (HTTP/1.1 default, `Connection: close`,
//! HTTP/1.0 `keep-alive`), pipelined requests, HEAD (headers only), `Expect: 100-continue`, a 30 s
//! limit on reading a request head (harmonia moved from 5 s to 30 s after "a lot of 408s" under
//! parallel nix load), 64 KiB heads at most (431 beyond), request bodies up to 1 MiB
//! (`Content-Length` or chunked; 413 beyond), and an aborted connection — never a short or wrong
//! body — when a body fails or its length does not match `Content-Length`.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use bytes::{Buf, Bytes, BytesMut};
use http_body::Body as _;
use http_body_util::BodyExt;
use rustix::event::{PollFd, PollFlags};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::body::FileBody;
use crate::nix::nar_layout::Part;

/// Time to read a request head once its first byte has arrived (and a new connection's first).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a kept-alive connection may sit idle between requests (nginx's `keepalive_timeout`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// A request head at most: nix sends ~300 bytes; hyper's default allowed ~400 KB.
const MAX_HEAD: usize = 64 << 10;
const MAX_HEADERS: usize = 100;
/// A request body at most: no route takes one (the kubo RPC subset reads its query).
const MAX_BODY: usize = 1 << 20;
/// Bytes read into memory per part of a [`FileBody`] (framing and small files).
const COPY_PIECE: usize = 256 << 10;
/// Bytes one `sendfile` call may move (it returns early when the socket buffer fills).
const SENDFILE_CALL: usize = 16 << 20;
/// Frames up to this size are written together with the response head (one syscall for a narinfo).
const COALESCE: usize = 16 << 10;

/// Why a connection ends before its response: answered with a status, or just closed.
enum Refusal {
    Status(StatusCode, &'static str),
    Close,
}

/// A request read from the socket, and whether the client wants the connection kept.
struct Incoming {
    req: Request<Body>,
    keep_alive: bool,
}

/// Serves requests on `stream` until the client closes, an error, or `shutdown` (between requests).
pub async fn serve(mut stream: TcpStream, peer: SocketAddr, app: Router, shutdown: CancellationToken) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut first = true;
    loop {
        let incoming = match read_request(&mut stream, &mut buf, peer, first, &shutdown).await {
            Ok(Some(r)) => r,
            Ok(None) | Err(Refusal::Close) => return,
            Err(Refusal::Status(status, why)) => {
                debug!(%peer, %status, why, "bad request");
                let _ = write_refusal(&mut stream, status, why).await;
                return;
            }
        };
        first = false;
        let head_only = incoming.req.method() == Method::HEAD;
        let version = incoming.req.version();
        let resp = match tower::ServiceExt::oneshot(app.clone(), incoming.req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let keep_alive = incoming.keep_alive && !shutdown.is_cancelled();
        match write_response(&mut stream, resp, head_only, version, keep_alive).await {
            Ok(true) => {}
            Ok(false) => {
                let _ = stream.shutdown().await;
                return;
            }
            Err(e) => {
                debug!(%peer, cause = %e, "response aborted");
                return; // Dropping the socket aborts the body: nix sees a failed transfer.
            }
        }
    }
}

/// Reads the next request (head and body). `Ok(None)`: the client closed or went idle too long,
/// or the daemon is stopping, between requests.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    peer: SocketAddr,
    first: bool,
    shutdown: &CancellationToken,
) -> Result<Option<Incoming>, Refusal> {
    let idle_until = Instant::now() + if first { HEADER_READ_TIMEOUT } else { IDLE_TIMEOUT };
    let mut head_until = None;
    loop {
        if !buf.is_empty() {
            let until = *head_until.get_or_insert_with(|| Instant::now() + HEADER_READ_TIMEOUT);
            if let Some(mut incoming) = parse_head(buf, peer)? {
                let body = read_body(stream, buf, incoming.req.headers(), until).await?;
                *incoming.req.body_mut() = Body::from(body);
                return Ok(Some(incoming));
            }
            if buf.len() >= MAX_HEAD {
                return Err(Refusal::Status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"));
            }
        }
        let until = head_until.unwrap_or(idle_until);
        tokio::select! {
            r = stream.read_buf(buf) => match r {
                Ok(0) if buf.is_empty() => return Ok(None),
                Ok(0) | Err(_) => return Err(Refusal::Close),
                Ok(_) => {}
            },
            _ = tokio::time::sleep_until(until) => {
                return match head_until {
                    Some(_) => Err(Refusal::Status(StatusCode::REQUEST_TIMEOUT, "request head not received in time")),
                    None => Ok(None),
                };
            }
            _ = shutdown.cancelled(), if buf.is_empty() => return Ok(None),
        }
    }
}

/// Parses a complete head at the front of `buf` (and removes it), or `None` if it is incomplete.
fn parse_head(buf: &mut BytesMut, peer: SocketAddr) -> Result<Option<Incoming>, Refusal> {
    let bad = |why| Refusal::Status(StatusCode::BAD_REQUEST, why);
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::Status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too many headers"));
        }
        Err(_) => return Err(bad("malformed request")),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or("").as_bytes()).map_err(|_| bad("malformed method"))?;
    let uri: Uri = parsed.path.unwrap_or("").parse().map_err(|_| bad("malformed request target"))?;
    let version = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("malformed header name"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| bad("malformed header value"))?;
        headers.append(name, value);
    }
    buf.advance(len);
    let connection = |token: &str| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let keep_alive = match version {
        Version::HTTP_10 => connection("keep-alive"),
        _ => !connection("close"),
    };
    let mut req = Request::new(Body::empty());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    req.extensions_mut().insert(ConnectInfo(peer));
    Ok(Some(Incoming { req, keep_alive }))
}

/// Reads the request body the headers announce (`Content-Length` or chunked), ≤ [`MAX_BODY`].
async fn read_body(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    headers: &HeaderMap,
    until: Instant,
) -> Result<Bytes, Refusal> {
    let bad = |why| Refusal::Status(StatusCode::BAD_REQUEST, why);
    let too_large = Refusal::Status(StatusCode::PAYLOAD_TOO_LARGE, "request body over 1 MiB");
    let chunked = match headers.get(header::TRANSFER_ENCODING) {
        None => false,
        Some(te) if te.as_bytes().eq_ignore_ascii_case(b"chunked") => true,
        Some(_) => return Err(Refusal::Status(StatusCode::NOT_IMPLEMENTED, "unsupported transfer coding")),
    };
    let length = match headers.get(header::CONTENT_LENGTH) {
        _ if chunked => None,
        None => Some(0),
        Some(v) => Some(v.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()).ok_or(bad("bad Content-Length"))?),
    };
    if length.is_some_and(|n| n > MAX_BODY) {
        return Err(too_large);
    }
    if length != Some(0)
        && headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.map_err(|_| Refusal::Close)?;
    }
    let mut body = BytesMut::new();
    match length {
        Some(n) => {
            fill(stream, buf, n, until).await?;
            body.extend_from_slice(&buf.split_to(n));
        }
        None => loop {
            // chunk-size [; ext] CRLF data CRLF … 0 CRLF [trailers] CRLF
            let line = read_line(stream, buf, until).await?;
            let size = line.split(|&b| b == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(size)
                .ok()
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                .ok_or(bad("malformed chunk size"))?;
            if size == 0 {
                while !read_line(stream, buf, until).await?.is_empty() {}
                break;
            }
            if body.len() + size > MAX_BODY {
                return Err(too_large);
            }
            fill(stream, buf, size + 2, until).await?;
            body.extend_from_slice(&buf[..size]);
            if &buf[size..size + 2] != b"\r\n" {
                return Err(bad("malformed chunk"));
            }
            buf.advance(size + 2);
        },
    }
    Ok(body.freeze())
}

/// Reads until `buf` holds at least `n` bytes.
async fn fill(stream: &mut TcpStream, buf: &mut BytesMut, n: usize, until: Instant) -> Result<(), Refusal> {
    while buf.len() < n {
        match tokio::time::timeout_at(until, stream.read_buf(buf)).await {
            Ok(Ok(read)) if read > 0 => {}
            Ok(_) => return Err(Refusal::Close),
            Err(_) => return Err(Refusal::Status(StatusCode::REQUEST_TIMEOUT, "request body not received in time")),
        }
    }
    Ok(())
}

/// Reads one CRLF-terminated line (without its CRLF) of a chunked body, ≤ 4 KiB.
async fn read_line(stream: &mut TcpStream, buf: &mut BytesMut, until: Instant) -> Result<Bytes, Refusal> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = buf.split_to(i).freeze();
            buf.advance(2);
            return Ok(line);
        }
        if buf.len() > 4096 {
            return Err(Refusal::Status(StatusCode::BAD_REQUEST, "malformed chunked body"));
        }
        let want = buf.len() + 1;
        fill(stream, buf, want, until).await?;
    }
}

/// Writes a one-line error response and ends the connection.
async fn write_refusal(stream: &mut TcpStream, status: StatusCode, why: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\n\
         cache-control: no-store\r\ncontent-length: {}\r\ndate: {}\r\n\r\n{why}\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        why.len() + 1,
        httpdate::fmt_http_date(SystemTime::now()),
    );
    tokio::time::timeout(Duration::from_secs(5), async {
        stream.write_all(head.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    .unwrap_or(Ok(()))
}

/// The `Date` header's value, formatted once a second per thread (as hyper does): formatting it
/// per response cost a visible share of a narinfo hit.
fn date() -> HeaderValue {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, HeaderValue)> =
            const { std::cell::RefCell::new((0, HeaderValue::from_static(""))) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, value)| {
        if *at != secs {
            *value =
                HeaderValue::from_str(&httpdate::fmt_http_date(now)).unwrap_or_else(|_| HeaderValue::from_static(""));
            *at = secs;
        }
        value.clone()
    })
}

/// How a response body is delimited on the wire.
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// HTTP/1.0 client, unknown length: the end of the body is the end of the connection.
    Close,
}

/// Writes `resp`; returns whether the connection may carry another request.
async fn write_response(
    stream: &mut TcpStream,
    resp: Response<Body>,
    head_only: bool,
    version: Version,
    mut keep_alive: bool,
) -> io::Result<bool> {
    let (mut parts, mut body) = resp.into_parts();
    let file = parts.extensions.remove::<FileBody>().filter(|_| !head_only);
    let status = parts.status;
    let bodiless = head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let framing = match (bodiless, declared, body.size_hint().exact()) {
        (true, _, _) => Framing::None,
        (false, Some(n), _) => Framing::Length(n),
        (false, None, Some(n)) => {
            parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            Framing::Length(n)
        }
        (false, None, None) if version == Version::HTTP_11 => {
            parts.headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            Framing::Chunked
        }
        (false, None, None) => {
            keep_alive = false;
            Framing::Close
        }
    };
    if !keep_alive {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if !parts.headers.contains_key(header::DATE) {
        parts.headers.insert(header::DATE, date());
    }
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    match (framing, file) {
        (Framing::None, _) => stream.write_all(&out).await?,
        (Framing::Length(n), Some(file)) => {
            stream.write_all(&out).await?;
            send_file_body(stream, file, n).await?;
        }
        (framing, _) => write_frames(stream, out, &mut body, framing).await?,
    }
    Ok(keep_alive)
}

/// Writes the head in `out` and the frames of `body` as `framing` says; an error or a length
/// that does not match `Content-Length` is an error (the caller drops the connection).
async fn write_frames(stream: &mut TcpStream, mut out: Vec<u8>, body: &mut Body, framing: Framing) -> io::Result<()> {
    let mut left = match framing {
        Framing::Length(n) => Some(n),
        _ => None,
    };
    let chunked = matches!(framing, Framing::Chunked);
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(f)) => f,
            Some(Err(e)) => return Err(io::Error::other(format!("response body failed: {e}"))),
        };
        let Ok(data) = frame.into_data() else { continue }; // Trailers: not sent.
        if data.is_empty() {
            continue;
        }
        if let Some(left) = &mut left {
            *left =
                left.checked_sub(data.len() as u64).ok_or_else(|| io::Error::other("body longer than its length"))?;
        }
        if chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if out.len() + data.len() <= COALESCE {
            out.extend_from_slice(&data);
        } else {
            stream.write_all(&out).await?;
            out.clear();
            stream.write_all(&data).await?;
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= COALESCE {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
    if left.is_some_and(|n| n > 0) {
        stream.write_all(&out).await?;
        return Err(io::Error::other("body shorter than its length"));
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    stream.write_all(&out).await
}

/// Writes a [`FileBody`] of `len` bytes: copied parts with `write`, file ranges with `sendfile` on
/// a blocking thread (a page-cache miss waits for the disk there, not on an async worker), through
/// a duplicate of the socket's descriptor. The socket is non-blocking, so a `sendfile` returns as
/// soon as its buffer is full and a slow client holds no thread ([`wait_writable`]).
async fn send_file_body(stream: &mut TcpStream, file: FileBody, len: u64) -> io::Result<()> {
    let mut cursor = file.take().ok_or_else(|| io::Error::other("file body already taken"))?;
    if cursor.remaining() != len {
        return Err(io::Error::other("file body length differs from Content-Length"));
    }
    let sock = Arc::new(rustix::io::dup(&*stream)?);
    let mut sent = 0u64;
    loop {
        let (back, part) = tokio::task::spawn_blocking(move || {
            let part = cursor.next_part(COPY_PIECE);
            (cursor, part)
        })
        .await
        .map_err(io::Error::other)?;
        cursor = back;
        match part? {
            None => break,
            Some(Part::Bytes(b)) => {
                stream.write_all(&b).await?;
                sent += b.len() as u64;
            }
            Some(Part::File { file, offset, len }) => {
                send_range(stream, &sock, file, offset, len).await?;
                sent += len;
            }
        }
    }
    file.finished(sent);
    Ok(())
}

/// Sends `len` bytes of `file` from `offset` to `stream` (through `sock`, its duplicate).
async fn send_range(
    stream: &TcpStream,
    sock: &Arc<OwnedFd>,
    file: Arc<std::fs::File>,
    mut offset: u64,
    len: u64,
) -> io::Result<()> {
    let end = offset + len;
    while offset < end {
        let (s, f) = (sock.clone(), file.clone());
        let count = ((end - offset) as usize).min(SENDFILE_CALL);
        let result = tokio::task::spawn_blocking(move || {
            let mut at = offset;
            rustix::fs::sendfile(&*s, &*f, Some(&mut at), count)
        })
        .await
        .map_err(io::Error::other)?;
        match result {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than its NAR entry")),
            Ok(n) => offset += n as u64,
            Err(rustix::io::Errno::AGAIN) => wait_writable(stream).await?,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Waits until the socket has room again after a `sendfile` (on the duplicate descriptor, which
/// tokio does not see) found it full. Tokio's readiness may still say "writable" from before, so
/// it is checked with a zero-timeout `poll` inside `try_io`: "not writable" clears exactly the
/// readiness tokio had seen before the check, and a wake-up arriving after it is kept.
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
