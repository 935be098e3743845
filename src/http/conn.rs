//! One HTTP/1.1 connection: read a request, hand it to the router, write the response, repeat
//! while the client keeps the connection alive.
//!
//! This is the layer hyper filled until local NARs had to go from the page cache to the socket
//! with `sendfile(2)`: hyper writes bodies from byte buffers, so every NAR byte cost a pread into
//! userspace, a channel hop and a copy into the socket — 0.5–0.7 CPU-s per GiB, taken from nix on
//! a 2-core machine. Responses are written by [`super::response`]: a local NAR as its framing
//! bytes and `sendfile` calls, every other body as its frames arrive (with `Content-Length`, or
//! chunked when its length is unknown).
//!
//! What it keeps from hyper's behaviour: keep-alive (HTTP/1.1 default, `Connection: close`,
//! HTTP/1.0 `keep-alive`), pipelined requests, HEAD (headers only), `Expect: 100-continue`, a 30 s
//! limit on reading a request head (harmonia moved from 5 s to 30 s after "a lot of 408s" under
//! parallel nix load), 64 KiB heads at most (431 beyond), request bodies up to 1 MiB
//! (`Content-Length` or chunked; 413 beyond), and an aborted connection — never a short or wrong
//! body — when a body fails or its length does not match `Content-Length`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version, header};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tracing::debug;

use super::response::{write_refusal, write_response};

/// Time to read a request head once its first byte has arrived (and a new connection's first).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a kept-alive connection may sit idle between requests (nginx's `keepalive_timeout`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// A request head at most: nix sends ~300 bytes; hyper's default allowed ~400 KB.
const MAX_HEAD: usize = 64 << 10;
const MAX_HEADERS: usize = 100;
/// A request body at most on the daemon: no route of it takes one (the kubo RPC subset reads its
/// query). The tracker, whose announcements carry path lists, allows more.
pub const MAX_BODY: usize = 1 << 20;

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
pub async fn serve(mut stream: TcpStream, peer: SocketAddr, app: Router, shutdown: CancellationToken, max_body: usize) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut first = true;
    // One timer and one shutdown waiter for the connection's life, re-armed per request: making
    // them afresh per request was a visible share of a narinfo hit's CPU.
    let timer = std::pin::pin!(tokio::time::sleep(HEADER_READ_TIMEOUT));
    let stopping = std::pin::pin!(shutdown.cancelled());
    let mut waits = Waits { timer, shutdown: stopping };
    loop {
        let incoming = match read_request(&mut stream, &mut buf, peer, first, &mut waits, max_body).await {
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

/// What reading a request waits for besides the socket.
struct Waits<'a, 'b> {
    timer: Pin<&'a mut tokio::time::Sleep>,
    shutdown: Pin<&'a mut WaitForCancellationFuture<'b>>,
}

/// Reads the next request (head and body). `Ok(None)`: the client closed or went idle too long,
/// or the daemon is stopping, between requests.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    peer: SocketAddr,
    first: bool,
    waits: &mut Waits<'_, '_>,
    max_body: usize,
) -> Result<Option<Incoming>, Refusal> {
    let idle_until = Instant::now() + if first { HEADER_READ_TIMEOUT } else { IDLE_TIMEOUT };
    let mut head_until = None;
    loop {
        if !buf.is_empty() {
            let until = *head_until.get_or_insert_with(|| Instant::now() + HEADER_READ_TIMEOUT);
            if let Some(mut incoming) = parse_head(buf, peer)? {
                let body = read_body(stream, buf, incoming.req.headers(), until, max_body).await?;
                *incoming.req.body_mut() = Body::from(body);
                return Ok(Some(incoming));
            }
            if buf.len() >= MAX_HEAD {
                return Err(Refusal::Status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"));
            }
        }
        let until = head_until.unwrap_or(idle_until);
        if waits.timer.deadline() != until {
            waits.timer.as_mut().reset(until);
        }
        tokio::select! {
            r = stream.read_buf(buf) => match r {
                Ok(0) if buf.is_empty() => return Ok(None),
                Ok(0) | Err(_) => return Err(Refusal::Close),
                Ok(_) => {}
            },
            _ = waits.timer.as_mut() => {
                return match head_until {
                    Some(_) => Err(Refusal::Status(StatusCode::REQUEST_TIMEOUT, "request head not received in time")),
                    None => Ok(None),
                };
            }
            _ = waits.shutdown.as_mut(), if buf.is_empty() => return Ok(None),
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

/// Reads the request body the headers announce (`Content-Length` or chunked), ≤ `max_body`.
async fn read_body(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    headers: &HeaderMap,
    until: Instant,
    max_body: usize,
) -> Result<Bytes, Refusal> {
    let bad = |why| Refusal::Status(StatusCode::BAD_REQUEST, why);
    let too_large = Refusal::Status(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
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
    if length.is_some_and(|n| n > max_body) {
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
            if body.len() + size > max_body {
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
