//! The accept loop: binds a listener with a real backlog, admits each connection under the caps of
//! [`super::connections`] and hands it to [`super::conn`]; on shutdown, drains what is in flight
//! for a grace period and drops the rest.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::{conn, connections};
use crate::timeouts::HTTP_SHUTDOWN_GRACE;

/// Backlog of the listening socket: nix opens ~10–25 connections at once for parallel narinfo
/// lookups; Python's default of 5 overflowed and cost a 1 s SYN retry (nix-client-here.md §6).
const LISTEN_BACKLOG: u32 = 1024;

/// Binds `addr` with a real backlog.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `app` on `listener` until `shutdown` fires, then drains open connections; request bodies
/// are refused (413) beyond `max_body` bytes ([`conn::MAX_BODY`] for the daemon).
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken, max_body: usize) {
    let fd_limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
    let slots = Arc::new(Semaphore::new(connections::cap_for(fd_limit)));
    let clients = connections::Clients::default();
    let open = connections::Open::default();
    let limits = Arc::new(conn::BodyLimits::new(max_body));
    let tracker = TaskTracker::new();
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Every slot is taken: close the oldest connection waiting for a request, and
                // take its slot once it has gone (or any slot that frees first).
                open.evict_oldest_waiting();
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                    _ = shutdown.cancelled() => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, keep serving.
                    warn!(cause = %e, "accept failed");
                    tokio::time::sleep(crate::timeouts::HTTP_ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Some(client_slot) = clients.admit(peer.ip(), connections::PER_REMOTE_CLIENT) else {
            debug!(%peer, "client over its connection cap");
            crate::tasks::spawn(module_path!(), async move {
                let mut stream = stream;
                let _ =
                    tokio::time::timeout(crate::timeouts::HTTP_TOO_MANY_WRITE, stream.write_all(connections::TOO_MANY))
                        .await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, shutdown, slot, limits) = (app.clone(), shutdown.clone(), open.register(), limits.clone());
        tracker.spawn(async move {
            conn::serve(stream, peer, app, shutdown, &limits, &slot).await;
            drop((permit, client_slot, slot));
        });
    }
    tracker.close();
    if tokio::time::timeout(HTTP_SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        warn!(open = tracker.len(), "shutdown grace period over; dropping open connections");
    }
}
