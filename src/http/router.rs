//! Every route of the daemon, and the guards in front of the operator's routes: `/api/*` and the
//! dashboard answer loopback clients that name this machine only, whatever `--listen` is.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::error::ApiError;
use super::{AppState, api, cache_info, controls, gateway, kubo_rpc, metrics, nar, narinfo, status};

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
        .route("/", get(crate::dashboard::page))
        .route("/dashboard/app.js", get(crate::dashboard::script))
        .route("/dashboard/app.css", get(crate::dashboard::style))
        .route("/favicon.ico", get(crate::dashboard::no_icon))
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

    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::blocks::Blocks;
    use crate::http::{Inner, render_cache_info};
    use crate::identity::Identity;
    use crate::local_cache::LocalCache;
    use crate::store::StateDb;
    use crate::trust::Gate;
    use axum::body::Body;
    use tower::ServiceExt;

    fn app(dir: &std::path::Path) -> Router {
        let state = Arc::new(StateDb::open(&dir.join("state")).unwrap());
        let gate = Gate::new(Vec::new(), None, false, Duration::from_secs(60), state.clone());
        let cache = Arc::new(LocalCache::new(&dir.join("store"), state, gate, crate::trust::Served::new(None)));
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
