//! HTTP to remote services — the upstream cache, `--fallback` gateways and kubo RPC APIs, the
//! tracker — made in one place: every client has a connect timeout and a whole-request deadline
//! (body included), and every answer is read with a size cap. Whatever a remote sends or withholds,
//! it can hold one request for its deadline and [`read_capped`]'s cap of memory, no more (a hostile
//! tracker streaming 1 GiB took the daemon to 2.3 GiB RSS when answers were read whole).

use crate::timeouts::HTTP_CONNECT;
use std::time::Duration;

/// Idle pooled connections kept per host (the tracker and upstream are asked in bursts).
const IDLE_PER_HOST: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot set up an HTTP client: {0}")]
    Setup(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("malformed answer: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl From<reqwest::Error> for RemoteError {
    fn from(e: reqwest::Error) -> Self {
        // One line: reqwest's chain ("error sending request for url (…): … : connection refused").
        RemoteError::Request(crate::errors::chain(&e))
    }
}

/// A client whose every request (connect, send, the whole body) ends within `deadline`.
pub fn client(deadline: Duration) -> Result<reqwest::Client, RemoteError> {
    reqwest::Client::builder()
        .connect_timeout(HTTP_CONNECT.min(deadline))
        .timeout(deadline)
        .pool_max_idle_per_host(IDLE_PER_HOST)
        .user_agent(concat!("peerix/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| RemoteError::Setup(crate::errors::chain(&e)))
}

/// A client for a body streamed as long as it keeps coming (`peerix fetch` of a NAR): a connect
/// timeout, no whole-request deadline.
pub fn streaming_client() -> Result<reqwest::Client, RemoteError> {
    reqwest::Client::builder()
        .connect_timeout(HTTP_CONNECT)
        .user_agent(concat!("peerix/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| RemoteError::Setup(crate::errors::chain(&e)))
}

/// The body of `resp`, refused as soon as it is known to exceed `cap` bytes (by its
/// `Content-Length`, or while it arrives): never more than `cap` bytes are held.
pub async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, RemoteError> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(RemoteError::TooLarge(cap));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if chunk.len() > cap - body.len() {
            return Err(RemoteError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers 200 and then streams `body_len` bytes (chunked, no length), or
    /// nothing at all after the head when `stall`.
    async fn server(body_len: usize, stall: bool) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        crate::tasks::spawn(module_path!(), async move {
            while let Ok((mut s, _)) = l.accept().await {
                crate::tasks::spawn(module_path!(), async move {
                    let mut buf = [0u8; 2048];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").await;
                    if stall {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                    let piece = vec![b'x'; 64 << 10];
                    let mut sent = 0;
                    while sent < body_len {
                        let n = piece.len().min(body_len - sent);
                        let head = format!("{n:x}\r\n");
                        if s.write_all(head.as_bytes()).await.is_err()
                            || s.write_all(&piece[..n]).await.is_err()
                            || s.write_all(b"\r\n").await.is_err()
                        {
                            return;
                        }
                        sent += n;
                    }
                    let _ = s.write_all(b"0\r\n\r\n").await;
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn a_huge_answer_is_cut_at_the_cap_and_a_stalled_one_at_the_deadline() {
        let c = client(Duration::from_millis(500)).unwrap();
        let small = server(1000, false).await;
        let body = read_capped(c.get(&small).send().await.unwrap(), 4096).await.unwrap();
        assert_eq!(body.len(), 1000);

        let huge = server(1 << 30, false).await;
        let e = read_capped(c.get(&huge).send().await.unwrap(), 1 << 20).await.unwrap_err();
        assert!(matches!(e, RemoteError::TooLarge(_)), "{e}");

        let stalled = server(0, true).await;
        let t0 = std::time::Instant::now();
        let r = match c.get(&stalled).send().await {
            Ok(resp) => read_capped(resp, 1 << 20).await.map(|_| ()),
            Err(e) => Err(e.into()),
        };
        assert!(matches!(r, Err(RemoteError::Request(_))), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(3), "the deadline held: {:?}", t0.elapsed());
    }
}
