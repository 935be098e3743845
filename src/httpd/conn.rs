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

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version, header};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tracing::{Instrument, debug, debug_span};

use super::Failure;
use super::connections::{BodyBudget, Reserved};
use super::response::{write_refusal, write_response};
use crate::timeouts::{HTTP_HEADER_READ, HTTP_KEEPALIVE_IDLE};

/// A request head at most: nix sends ~300 bytes; hyper's default allowed ~400 KB.
const MAX_HEAD: usize = 64 << 10;
const MAX_HEADERS: usize = 100;
/// A request body at most on the daemon: only the operator controls take one, and it is `{}` (the
/// kubo RPC subset reads its query). The tracker, whose announcements carry path lists, allows
/// more. A larger declared body is refused (413) before any of it is read.
pub const MAX_BODY: usize = 1 << 10;
/// Request-body bytes one client address may have the server hold at once, as a multiple of the
/// largest body: a few requests in flight, never a connection cap's worth.
pub const BODY_BUDGET_BODIES: usize = 4;

/// Why a connection ends before its response: answered with a status, or just closed.
enum Refusal {
    Status(Failure, &'static str),
    Close,
}

/// A request read from the socket, and whether the client wants the connection kept.
struct Incoming {
    req: Request<Body>,
    keep_alive: bool,
    /// The client's body budget this request holds until its response is written.
    reserved: Option<Reserved>,
}

/// What a connection may be made to hold of request bodies.
pub struct BodyLimits {
    /// One body at most.
    pub max_body: usize,
    /// Across the client address's connections.
    pub budget: BodyBudget,
}

impl BodyLimits {
    pub fn new(max_body: usize) -> Self {
        Self { max_body, budget: BodyBudget::new(max_body.saturating_mul(BODY_BUDGET_BODIES)) }
    }
}

/// Serves requests on `stream` until the client closes, an error, or `shutdown` (between requests).
pub async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    shutdown: CancellationToken,
    limits: &BodyLimits,
    open: &super::connections::OpenSlot,
) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut first = true;
    // One timer and one shutdown waiter for the connection's life, re-armed per request: making
    // them afresh per request was a visible share of a narinfo hit's CPU.
    let timer = std::pin::pin!(tokio::time::sleep(HTTP_HEADER_READ));
    let stopping = std::pin::pin!(shutdown.cancelled());
    let evicted = std::pin::pin!(open.evict.cancelled());
    let mut waits = Waits { timer, shutdown: stopping, evicted };
    loop {
        open.waiting.store(true, std::sync::atomic::Ordering::Relaxed);
        let incoming = read_request(&mut stream, &mut buf, peer, first, &mut waits, limits).await;
        open.waiting.store(false, std::sync::atomic::Ordering::Relaxed);
        let incoming = match incoming {
            Ok(Some(r)) => r,
            Ok(None) | Err(Refusal::Close) => return,
            Err(Refusal::Status(failure, why)) => {
                debug!(%peer, ?failure, why, "bad request");
                let _ = write_refusal(&mut stream, failure.status(), why).await;
                return;
            }
        };
        first = false;
        let head_only = incoming.req.method() == Method::HEAD;
        let version = incoming.req.version();
        let _reserved = incoming.reserved;
        // One span per request: with `RUST_LOG=peerix=debug` every line it causes — the lookup,
        // the peers asked, the transfer's units — carries it, and its close gives its duration.
        let span = debug_span!("request", %peer, method = %incoming.req.method(), uri = %incoming.req.uri());
        let resp = match tower::ServiceExt::oneshot(app.clone(), incoming.req).instrument(span).await {
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
    /// This connection was chosen to make room for a new one ([`super::connections::Open`]).
    evicted: Pin<&'a mut WaitForCancellationFuture<'b>>,
}

/// Reads the next request (head and body). `Ok(None)`: the client closed or went idle too long,
/// or the daemon is stopping, between requests.
async fn read_request<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    peer: SocketAddr,
    first: bool,
    waits: &mut Waits<'_, '_>,
    limits: &BodyLimits,
) -> Result<Option<Incoming>, Refusal> {
    let idle_until = Instant::now() + if first { HTTP_HEADER_READ } else { HTTP_KEEPALIVE_IDLE };
    let mut head_until = None;
    loop {
        if !buf.is_empty() {
            let until = *head_until.get_or_insert_with(|| Instant::now() + HTTP_HEADER_READ);
            if let Some(mut incoming) = parse_head(buf, peer)? {
                let mut reserved = limits.budget.start(peer.ip());
                let (version, headers) = (incoming.req.version(), incoming.req.headers());
                let body = read_body(stream, buf, version, headers, until, limits, &mut reserved).await?;
                *incoming.req.body_mut() = Body::from(body);
                incoming.reserved = Some(reserved);
                return Ok(Some(incoming));
            }
            if buf.len() >= MAX_HEAD {
                return Err(Refusal::Status(Failure::HeadTooLarge, "request head too large"));
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
                    Some(_) => Err(Refusal::Status(Failure::Timeout, "request head not received in time")),
                    None => Ok(None),
                };
            }
            _ = waits.shutdown.as_mut(), if buf.is_empty() => return Ok(None),
            // Even mid-head: a head that trickles in holds no slot against a waiting client.
            _ = waits.evicted.as_mut() => return Ok(None),
        }
    }
}

/// Parses a complete head at the front of `buf` (and removes it), or `None` if it is incomplete.
fn parse_head(buf: &mut BytesMut, peer: SocketAddr) -> Result<Option<Incoming>, Refusal> {
    let bad = |why| Refusal::Status(Failure::BadRequest, why);
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::Status(Failure::HeadTooLarge, "too many headers"));
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
    // The target's identity (RFC 9112 §3.2): one Host, required in HTTP/1.1; an absolute-form
    // target (`GET http://evil/api/…`) names the host itself and the Host header is ignored —
    // so the target's authority replaces it, and every Host check sees the host really asked for.
    let mut hosts = headers.get_all(header::HOST).iter();
    let (host, more) = (hosts.next().is_some(), hosts.next().is_some());
    if more {
        return Err(bad("duplicate Host"));
    }
    if let Some(authority) = uri.authority() {
        let value = HeaderValue::from_str(authority.as_str()).map_err(|_| bad("malformed request target"))?;
        headers.insert(header::HOST, value);
    } else if !host && version == Version::HTTP_11 {
        return Err(bad("missing Host"));
    }
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
    Ok(Some(Incoming { req, keep_alive, reserved: None }))
}

/// Reads the request body the headers announce (`Content-Length` or chunked), ≤ `max_body`.
async fn read_body<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    version: Version,
    headers: &HeaderMap,
    until: Instant,
    limits: &BodyLimits,
    reserved: &mut Reserved,
) -> Result<Bytes, Refusal> {
    let max_body = limits.max_body;
    let bad = |why| Refusal::Status(Failure::BadRequest, why);
    let too_large = Refusal::Status(Failure::TooLarge, "request body too large");
    let over_budget = Refusal::Status(Failure::TooMany, "too many request bodies in flight from your address");
    let length = match framing(version, headers)? {
        Framing::Chunked => None,
        Framing::Length(n) => Some(n),
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
        Some(0) => {}
        Some(n) => {
            if !limits.budget.reserve(reserved, n) {
                return Err(over_budget);
            }
            // Read into the connection buffer and handed on as it is: no second copy.
            fill(stream, buf, n, until).await?;
            return Ok(buf.split_to(n).freeze());
        }
        None => loop {
            // chunk-size [; ext] CRLF data CRLF … 0 CRLF [trailers] CRLF
            let line = read_line(stream, buf, until).await?;
            let size = chunk_size(&line).ok_or(bad("malformed chunk size"))?;
            if size == 0 {
                while !read_line(stream, buf, until).await?.is_empty() {}
                break;
            }
            // Checked: a size near usize::MAX must not wrap past the cap (it panicked here).
            if size > max_body.saturating_sub(body.len()) {
                return Err(too_large);
            }
            if !limits.budget.reserve(reserved, size) {
                return Err(over_budget);
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
async fn fill<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    n: usize,
    until: Instant,
) -> Result<(), Refusal> {
    while buf.len() < n {
        match tokio::time::timeout_at(until, stream.read_buf(buf)).await {
            Ok(Ok(read)) if read > 0 => {}
            Ok(_) => return Err(Refusal::Close),
            Err(_) => return Err(Refusal::Status(Failure::Timeout, "request body not received in time")),
        }
    }
    Ok(())
}

/// Reads one CRLF-terminated line (without its CRLF) of a chunked body, ≤ [`MAX_CHUNK_LINE`].
async fn read_line<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut, until: Instant) -> Result<Bytes, Refusal> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            if i > MAX_CHUNK_LINE {
                return Err(Refusal::Status(Failure::BadRequest, "chunk line too long"));
            }
            let line = buf.split_to(i).freeze();
            buf.advance(2);
            return Ok(line);
        }
        if buf.len() > MAX_CHUNK_LINE {
            return Err(Refusal::Status(Failure::BadRequest, "malformed chunked body"));
        }
        let want = buf.len() + 1;
        fill(stream, buf, want, until).await?;
    }
}

/// Reads every request `data` holds, as a connection would (heads, bodies, pipelined requests),
/// until the data ends or a request is refused; returns the requests read and the refusal's
/// status. For the HTTP fuzz target ([`crate::fuzzing::http_requests`]); checks what must hold of
/// each request read.
pub async fn read_all(data: &[u8], max_body: usize) -> (usize, Option<StatusCode>) {
    let (mut client, mut server) = tokio::io::duplex(data.len().max(64) + 64);
    let _ = client.write_all(data).await;
    drop(client.shutdown().await);
    let peer: SocketAddr = ([192, 0, 2, 1], 1).into();
    let limits = BodyLimits::new(max_body);
    let timer = std::pin::pin!(tokio::time::sleep(HTTP_HEADER_READ));
    let never = CancellationToken::new();
    let (stopping, evicted) = (std::pin::pin!(never.cancelled()), std::pin::pin!(never.cancelled()));
    let mut waits = Waits { timer, shutdown: stopping, evicted };
    let mut buf = BytesMut::with_capacity(4096);
    let mut read = 0;
    loop {
        match read_request(&mut server, &mut buf, peer, read == 0, &mut waits, &limits).await {
            Ok(Some(incoming)) => {
                read += 1;
                let version = incoming.req.version();
                assert!(version == Version::HTTP_10 || version == Version::HTTP_11);
                assert!(incoming.req.headers().get_all(header::HOST).iter().count() <= 1, "one Host");
                let body = axum::body::to_bytes(incoming.req.into_body(), usize::MAX).await.unwrap_or_default();
                assert!(body.len() <= max_body, "a body over the cap was read");
            }
            Ok(None) | Err(Refusal::Close) => return (read, None),
            Err(Refusal::Status(failure, _)) => return (read, Some(failure.status())),
        }
    }
}

/// A chunk-size line (or trailer line) longer than this is refused: hyper caps chunk extensions
/// at 16 KiB in all; no route of ours takes a chunked body with extensions at all.
const MAX_CHUNK_LINE: usize = 1024;

/// How a request's body is delimited.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
}

/// The body's framing from the head, refusing every ambiguous form (RFC 9112 §6.1–6.3; the
/// request-smuggling primitives): `Transfer-Encoding` together with `Content-Length`, in an
/// HTTP/1.0 request, repeated, or anything but exactly `chunked`; a `Content-Length` repeated or
/// not plain decimal digits (`+3`, `0x10`, ` 1 2`). nginx answers all of these 400 (a coding it
/// does not know, 501) and closes the connection, as we do.
fn framing(version: Version, headers: &HeaderMap) -> Result<Framing, Refusal> {
    let bad = |why| Refusal::Status(Failure::BadRequest, why);
    let mut te = headers.get_all(header::TRANSFER_ENCODING).iter();
    let mut cl = headers.get_all(header::CONTENT_LENGTH).iter();
    let (te_first, te_more) = (te.next(), te.next().is_some());
    let (cl_first, cl_more) = (cl.next(), cl.next().is_some());
    if cl_more {
        return Err(bad("duplicate Content-Length"));
    }
    match te_first {
        None => {}
        Some(_) if te_more => return Err(bad("duplicate Transfer-Encoding")),
        Some(_) if cl_first.is_some() => return Err(bad("both Content-Length and Transfer-Encoding")),
        Some(_) if version == Version::HTTP_10 => return Err(bad("Transfer-Encoding in an HTTP/1.0 request")),
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"chunked") => return Ok(Framing::Chunked),
        Some(v) if v.as_bytes().split(|&b| b == b',').any(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked")) => {
            return Err(bad("chunked must be the only transfer coding"));
        }
        Some(_) => return Err(Refusal::Status(Failure::NotImplemented, "unsupported transfer coding")),
    }
    let Some(v) = cl_first else { return Ok(Framing::Length(0)) };
    let digits = v.as_bytes();
    // 1-19 decimal digits fit a u64 (and usize here) without overflow.
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad("bad Content-Length"));
    }
    let n = std::str::from_utf8(digits).ok().and_then(|s| s.parse::<usize>().ok()).ok_or(bad("bad Content-Length"))?;
    Ok(Framing::Length(n))
}

/// The size in a chunk-size line (`1a; ext=1`): 1-15 hex digits (so it cannot overflow), no sign.
fn chunk_size(line: &[u8]) -> Option<usize> {
    let size = line.split(|&b| b == b';').next().unwrap_or_default().trim_ascii_end();
    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    usize::from_str_radix(std::str::from_utf8(size).ok()?, 16).ok()
}

#[cfg(test)]
mod framing_tests {
    use super::*;

    fn head(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn refused(version: Version, pairs: &[(&str, &str)]) -> bool {
        matches!(framing(version, &head(pairs)), Err(Refusal::Status(..)))
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let v11 = Version::HTTP_11;
        assert!(refused(v11, &[("content-length", "3"), ("transfer-encoding", "chunked")]));
        assert!(refused(v11, &[("content-length", "3"), ("content-length", "4")]));
        assert!(refused(v11, &[("content-length", "3"), ("content-length", "3")]));
        assert!(refused(v11, &[("content-length", "+3")]));
        assert!(refused(v11, &[("content-length", "-1")]));
        assert!(refused(v11, &[("content-length", "0x10")]));
        assert!(refused(v11, &[("content-length", "99999999999999999999")]));
        assert!(refused(v11, &[("transfer-encoding", "chunked, identity")]));
        assert!(refused(v11, &[("transfer-encoding", "gzip, chunked")]));
        assert!(refused(v11, &[("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")]));
        assert!(refused(Version::HTTP_10, &[("transfer-encoding", "chunked")]));
        assert!(refused(v11, &[("transfer-encoding", "gzip")]));
        assert_eq!(framing(v11, &head(&[("content-length", "12")])).ok(), Some(Framing::Length(12)));
        assert_eq!(framing(v11, &head(&[("transfer-encoding", "Chunked")])).ok(), Some(Framing::Chunked));
        assert_eq!(framing(v11, &head(&[])).ok(), Some(Framing::Length(0)));
    }

    #[test]
    fn chunk_sizes_cannot_overflow() {
        assert_eq!(chunk_size(b"1a"), Some(26));
        assert_eq!(chunk_size(b"1a;ext=1"), Some(26));
        assert_eq!(chunk_size(b"ffffffffffffffff"), None);
        assert_eq!(chunk_size(b"+1"), None);
        assert_eq!(chunk_size(b""), None);
        assert_eq!(chunk_size(b"fffffffffffffff"), Some(0xfff_ffff_ffff_ffff));
    }
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    fn parse(raw: &str) -> Result<Option<Incoming>, Refusal> {
        parse_head(&mut BytesMut::from(raw), "127.0.0.1:1".parse().unwrap())
    }

    #[test]
    fn the_host_is_one_required_and_an_absolute_target_names_it() {
        let r = parse("GET http://evil.example/api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").ok().flatten().unwrap();
        assert_eq!(r.req.headers()[header::HOST], "evil.example");
        assert_eq!(r.req.uri().path(), "/api/status");
        assert!(matches!(parse("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), Err(Refusal::Status(..))));
        assert!(matches!(parse("GET / HTTP/1.1\r\n\r\n"), Err(Refusal::Status(..))));
        assert!(parse("GET / HTTP/1.0\r\n\r\n").ok().flatten().is_some(), "HTTP/1.0 needs no Host");
    }
}
