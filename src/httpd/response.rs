//! Writing a response on an HTTP/1.1 connection ([`super::conn`]): the status line and headers
//! (with `Date`, and `Content-Length` or chunked framing when the handler gave neither), then the
//! body — frames as they come, or a [`FileBody`] by [`super::sendfile`]. A body that fails
//! or does not match its length is an error: the connection is dropped, so the client sees a
//! failed transfer, never a short or wrong one.

use std::io;
use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, Version, header};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::body::FileBody;
use super::sendfile::send_file_body;
use crate::timeouts::HTTP_SEND;

/// Frames up to this size are written together with the response head (one syscall for a narinfo).
const COALESCE: usize = 16 << 10;

/// Writes all of `buf`, each write allowed [`HTTP_SEND`] to make progress.
async fn send(stream: &mut TcpStream, buf: &[u8]) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        match tokio::time::timeout(HTTP_SEND, stream.write(&buf[at..])).await {
            Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => at += n,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(stalled()),
        }
    }
    Ok(())
}

pub(super) fn stalled() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "client took nothing for 60 s")
}

/// Writes a one-line error response and ends the connection.
pub(super) async fn write_refusal(stream: &mut TcpStream, status: StatusCode, why: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\n\
         cache-control: no-store\r\ncontent-length: {}\r\ndate: {}\r\n\r\n{why}\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        why.len() + 1,
        httpdate::fmt_http_date(SystemTime::now()),
    );
    tokio::time::timeout(crate::timeouts::HTTP_REFUSAL_WRITE, async {
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
pub(super) async fn write_response(
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
    } else if version == Version::HTTP_10 {
        // An HTTP/1.0 client that asked for keep-alive closes unless the answer says it too.
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
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
        (Framing::None, _) => send(stream, &out).await?,
        (Framing::Length(n), Some(file)) => send_file_body(stream, out, file, n).await?,
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
            send(stream, &out).await?;
            out.clear();
            send(stream, &data).await?;
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= COALESCE {
            send(stream, &out).await?;
            out.clear();
        }
    }
    if left.is_some_and(|n| n > 0) {
        send(stream, &out).await?;
        return Err(io::Error::other("body shorter than its length"));
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    send(stream, &out).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that stops reading is dropped after [`HTTP_SEND`] (virtual time: the test
    /// takes no minute).
    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_nothing_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let started = tokio::time::Instant::now();
        let err = send(&mut server, &vec![0u8; 64 << 20]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= HTTP_SEND);
        drop(client);
    }
}
