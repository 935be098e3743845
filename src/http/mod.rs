//! The daemon's HTTP server: the Nix binary-cache API for the local `nix`, the trustless gateway
//! (`/ipfs/{cid}`), a kubo-compatible RPC subset (`/api/v0/*`), and operator routes (`/health`,
//! `/api/status`, `/api/paths/*`, the controls, the dashboard at `/`). `/api/*` and the dashboard
//! answer loopback clients only, whatever `--listen` is.
//!
//! One module per resource; [`router`] builds every route; [`serve`] runs the accept loop, and
//! [`conn`] each connection (HTTP/1.1 written here rather than by hyper, so local NARs go to the
//! socket with `sendfile(2)`). TCP_NODELAY on every connection (narinfos are small writes; Nagle +
//! delayed ACK costs 40 ms each), connection caps ([`connections`]) and graceful shutdown.

mod api;
mod body;
mod cache_info;
pub mod conn;
pub mod connections;
mod controls;
mod dag;
pub(crate) mod dashboard;
mod error;
mod gateway;
mod kubo_rpc;
pub mod metrics;
mod nar;
mod narinfo;
pub mod range;
mod response;
mod sendfile;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

pub use error::{ApiError, error_chain};

use crate::blocks::Blocks;
use crate::identity::Identity;
use crate::local_cache::LocalCache;

/// Backlog of the listening socket: nix opens ~10–25 connections at once for parallel narinfo
/// lookups; Python's default of 5 overflowed and cost a 1 s SYN retry (nix-client-here.md §6).
const LISTEN_BACKLOG: u32 = 1024;
/// How long shutdown waits for in-flight responses (a NAR download) before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub cache: Arc<LocalCache>,
    /// Answers for every path, local or from peers.
    pub substituter: Arc<crate::substitute::Substituter>,
    pub blocks: Arc<Blocks>,
    pub identity: Identity,
    /// The IPFS node, unless `--no-p2p`.
    pub p2p: Option<crate::p2p::Node>,
    pub cache_info: Bytes,
    pub started: Instant,
    pub listen: SocketAddr,
    pub upstream: Option<String>,
    pub serve_private: bool,
    pub signing_key: Option<String>,
    pub metrics: metrics::Metrics,
    pub status_memo: status::Memo,
    /// The indexer's pause switch and scan nudge (the dashboard's controls).
    pub index: crate::index_control::IndexControl,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

pub fn render_cache_info(priority: u32) -> Bytes {
    Bytes::from(cache_info::render(priority))
}

pub fn router(state: AppState) -> Router {
    state.metrics.attach(&state);
    let rpc = Router::new()
        .route("/block/get", post(kubo_rpc::block_get).get(kubo_rpc::method_not_allowed))
        .route("/block/stat", post(kubo_rpc::block_stat).get(kubo_rpc::method_not_allowed))
        .route("/cat", post(kubo_rpc::cat).get(kubo_rpc::method_not_allowed))
        .route("/dag/export", post(kubo_rpc::dag_export).get(kubo_rpc::method_not_allowed))
        .route("/id", post(kubo_rpc::id).get(kubo_rpc::method_not_allowed))
        .route("/routing/findprovs", post(kubo_rpc::findprovs).get(kubo_rpc::method_not_allowed));
    let admin = Router::new()
        .route("/status", get(status::status))
        .route("/paths/{hash}", get(api::path))
        .route("/paths/{hash}/recheck", post(controls::recheck))
        .route("/index/pause", post(controls::pause))
        .route("/index/resume", post(controls::resume))
        .route("/index/scan", post(controls::scan))
        .nest("/v0", rpc)
        .layer(middleware::from_fn_with_state(state.clone(), local_only));
    let dashboard = Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/app.css", get(dashboard::style))
        .route("/favicon.ico", get(dashboard::no_icon))
        .layer(middleware::from_fn_with_state(state.clone(), local_only));
    // Not part of the binary-cache API, readable from other machines (a Prometheus), but never
    // through a name an attacker's DNS controls.
    let operator = Router::new()
        .route("/health", get(status::health))
        .route("/metrics", get(metrics::get))
        .layer(middleware::from_fn(named_directly));
    Router::new()
        .merge(dashboard)
        .merge(operator)
        .route("/nix-cache-info", get(cache_info::get))
        .route("/{file}", get(narinfo::get))
        .route("/nar/{file}", get(nar::get))
        .route("/ipfs/{cid}", get(gateway::get))
        .nest("/api", admin)
        .fallback(|| async { ApiError::NotFound("no such resource") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), metrics::count))
        .with_state(state)
}

/// `/api/*` is for the operator and local tools: refused to anyone not on loopback, even when the
/// cache itself is bound to a LAN address — and to web pages, which reach loopback through the
/// user's browser: a `Host` that is not a loopback name (DNS rebinding: `attacker.example` made to
/// resolve to 127.0.0.1) or a request from another site (a cross-site "simple" POST to
/// `/api/v0/cat` would make the daemon fetch any CID) is refused, as kubo refuses them.
async fn local_only(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let local = req.extensions().get::<ConnectInfo<SocketAddr>>().is_some_and(|c| c.0.ip().is_loopback());
    if !local {
        return ApiError::Forbidden("admin routes answer loopback clients only").into_response();
    }
    let headers = req.headers();
    let header = |name: header::HeaderName| headers.get(name).map(|v| v.to_str().unwrap_or("\u{0}"));
    if let Some(host) = header(header::HOST)
        && !is_local_authority(host, app.listen.port())
    {
        return ApiError::Forbidden("Host is not this machine (DNS rebinding?)").into_response();
    }
    if let Some(origin) = header(header::ORIGIN)
        && !origin.strip_prefix("http://").is_some_and(|authority| is_local_authority(authority, app.listen.port()))
    {
        return ApiError::Forbidden("a request from another site").into_response();
    }
    if header(header::HeaderName::from_static("sec-fetch-site")).is_some_and(|s| s == "cross-site") {
        return ApiError::Forbidden("a request from another site").into_response();
    }
    next.run(req).await
}

/// The request-identity check of every route outside the binary-cache API and the gateway (which
/// serve only public, signed or content-addressed data): the `Host` must name this machine in a
/// way DNS rebinding cannot fake — an IP literal, `localhost`, or the machine's own host name. A
/// page on `attacker.example` made to resolve to 127.0.0.1 sends `Host: attacker.example`.
/// `/api/*` and the dashboard go further ([`local_only`]).
async fn named_directly(req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).map(|v| v.to_str().unwrap_or("\u{0}"));
    if host.is_some_and(|h| !is_direct_authority(h)) {
        return ApiError::Forbidden("Host is not this machine (DNS rebinding?)").into_response();
    }
    next.run(req).await
}

/// True for an IP literal, `localhost`, or this machine's host name, with any port.
fn is_direct_authority(authority: &str) -> bool {
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']')) => h,
        _ => authority,
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>().is_ok()
        || host.eq_ignore_ascii_case("localhost")
        || rustix::system::uname().nodename().to_str().is_ok_and(|me| !me.is_empty() && host.eq_ignore_ascii_case(me))
}

/// True for `localhost`, `127.0.0.1`, `[::1]` (and any 127/8 address), with no port or `port`.
fn is_local_authority(authority: &str, port: u16) -> bool {
    let (host, given) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse::<u16>() {
            Ok(p) => (h, Some(p)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback && given.is_none_or(|p| p == port)
}

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
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Some(client_slot) = clients.admit(peer.ip(), connections::PER_REMOTE_CLIENT) else {
            debug!(%peer, "client over its connection cap");
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(connections::TOO_MANY)).await;
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
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        warn!(open = tracker.len(), "shutdown grace period over; dropping open connections");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_names_dns_cannot_rebind_pass_the_identity_check() {
        for ok in ["127.0.0.1", "127.0.0.1:12304", "[::1]:80", "10.1.2.3:12304", "localhost", "LOCALHOST:1"] {
            assert!(is_direct_authority(ok), "{ok}");
        }
        for bad in ["evil.example", "evil.example:12304", "127.0.0.1.nip.io", "localhost.evil.example", ""] {
            assert!(!is_direct_authority(bad), "{bad}");
        }
    }

    use super::*;
    use crate::store::StateDb;
    use crate::trust::Gate;
    use axum::body::Body;
    use tower::ServiceExt;

    fn app(dir: &std::path::Path) -> Router {
        let state = Arc::new(StateDb::open(&dir.join("state")).unwrap());
        let gate = Gate::new(Vec::new(), None, false, Duration::from_secs(60), state.clone());
        let cache = Arc::new(LocalCache::new(&dir.join("store"), state, gate, None));
        router(AppState::new(Inner {
            blocks: Arc::new(Blocks::new(cache.clone(), 1 << 20)),
            substituter: crate::substitute::Substituter::new(
                cache.clone(),
                None,
                Duration::from_millis(250),
                Vec::new(),
                None,
                crate::substitute::PrefetchLimits::new(0, Duration::from_secs(1)),
            )
            .unwrap(),
            cache,
            identity: Identity::load_or_create(&dir.join("state")).unwrap(),
            p2p: None,
            cache_info: render_cache_info(30),
            started: Instant::now(),
            listen: "127.0.0.1:12304".parse().unwrap(),
            upstream: None,
            serve_private: false,
            signing_key: None,
            metrics: Default::default(),
            status_memo: Default::default(),
            index: Default::default(),
        }))
    }

    async fn status_from(app: &Router, peer: &str, method: &str, uri: &str) -> u16 {
        status_with(app, peer, method, uri, &[]).await
    }

    async fn status_with(app: &Router, peer: &str, method: &str, uri: &str, headers: &[(&str, &str)]) -> u16 {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(Body::empty()).unwrap();
        req.extensions_mut().insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        app.clone().oneshot(req).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn admin_routes_answer_loopback_only() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let absent = format!("/api/paths/{}", "0".repeat(32));
        for (method, uri, ok) in [
            ("GET", "/api/status", 200),
            ("POST", "/api/v0/id", 200),
            ("GET", absent.as_str(), 404),
            ("GET", "/", 200),
            ("GET", "/dashboard/app.js", 200),
        ] {
            assert_eq!(status_from(&app, "192.0.2.7:4000", method, uri).await, 403, "{uri}");
            assert_eq!(status_from(&app, "[2001:db8::1]:4000", method, uri).await, 403, "{uri}");
            assert_eq!(status_from(&app, "127.0.0.1:4000", method, uri).await, ok, "{uri}");
            assert_eq!(status_from(&app, "[::1]:4000", method, uri).await, ok, "{uri}");
        }
        // The binary-cache API and the gateway are for everyone the listener lets in.
        assert_eq!(status_from(&app, "192.0.2.7:4000", "GET", "/nix-cache-info").await, 200);
        assert_eq!(status_from(&app, "192.0.2.7:4000", "GET", "/ipfs/bafkqaaa").await, 200);
    }

    /// A web page reaches loopback through the browser: DNS rebinding (a foreign `Host`) and
    /// cross-site requests (a foreign `Origin`, `Sec-Fetch-Site: cross-site`) are refused on
    /// `/api/*`; the same requests from local tools and same-origin pages are not.
    #[tokio::test]
    async fn web_pages_cannot_use_the_admin_routes() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let me = "127.0.0.1:4000";
        for host in ["127.0.0.1:12304", "localhost:12304", "localhost", "[::1]:12304", "127.0.0.1"] {
            assert_eq!(status_with(&app, me, "GET", "/api/status", &[("host", host)]).await, 200, "{host}");
        }
        for host in ["attacker.example", "attacker.example:12304", "127.0.0.1:9999", "192.0.2.7:12304"] {
            assert_eq!(status_with(&app, me, "GET", "/api/status", &[("host", host)]).await, 403, "{host}");
        }
        let post = |origin: &'static str| [("host", "127.0.0.1:12304"), ("origin", origin)];
        assert_eq!(status_with(&app, me, "POST", "/api/v0/id", &post("http://evil.example")).await, 403);
        assert_eq!(status_with(&app, me, "POST", "/api/v0/id", &post("null")).await, 403);
        assert_eq!(status_with(&app, me, "POST", "/api/v0/id", &post("http://127.0.0.1:12304")).await, 200);
        let cross = [("sec-fetch-site", "cross-site")];
        assert_eq!(status_with(&app, me, "POST", "/api/v0/id", &cross).await, 403);
        // The binary-cache API is not an admin route: nix on another machine may use any name.
        assert_eq!(status_with(&app, me, "GET", "/nix-cache-info", &[("host", "cache.lan")]).await, 200);
        // The dashboard is behind the same checks.
        assert_eq!(status_with(&app, me, "GET", "/", &[("host", "attacker.example")]).await, 403);
        assert_eq!(status_with(&app, me, "GET", "/", &[("host", "localhost:12304")]).await, 200);
    }

    /// A control changes state: beyond the admin checks it needs a JSON request, which a page on
    /// another site cannot send without a CORS preflight (never answered).
    #[tokio::test]
    async fn controls_need_a_same_origin_json_request() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let me = "127.0.0.1:4000";
        let json = ("content-type", "application/json");
        let form = ("content-type", "application/x-www-form-urlencoded");
        let origin = |o: &'static str| ("origin", o);
        for uri in ["/api/index/pause", "/api/index/resume"] {
            assert_eq!(status_with(&app, me, "POST", uri, &[]).await, 403, "{uri}");
            assert_eq!(status_with(&app, me, "POST", uri, &[form]).await, 403, "{uri}");
            assert_eq!(status_with(&app, me, "POST", uri, &[json, origin("http://evil.example")]).await, 403);
            assert_eq!(status_with(&app, "192.0.2.7:4000", "POST", uri, &[json]).await, 403, "{uri}");
            assert_eq!(status_with(&app, me, "GET", uri, &[json]).await, 405, "{uri}");
            assert_eq!(status_with(&app, me, "POST", uri, &[json, origin("http://127.0.0.1:12304")]).await, 200);
        }
        let recheck = |h: &str| format!("/api/paths/{h}/recheck");
        assert_eq!(status_with(&app, me, "POST", &recheck(&"0".repeat(32)), &[json]).await, 404);
        assert_eq!(status_with(&app, me, "POST", &recheck("not-a-hash"), &[json]).await, 400);
        assert_eq!(status_with(&app, me, "POST", &recheck(&"0".repeat(32)), &[form]).await, 403);
    }

    #[tokio::test]
    async fn the_dashboard_forbids_inline_and_foreign_code() {
        let dir = tempfile::tempdir().unwrap();
        let mut req = Request::builder().uri("/").body(Body::empty()).unwrap();
        req.extensions_mut().insert(ConnectInfo("127.0.0.1:4000".parse::<SocketAddr>().unwrap()));
        let resp = app(dir.path()).oneshot(req).await.unwrap();
        let csp = resp.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(resp.headers()["x-frame-options"], "DENY");
    }
}
