//! The pages at `/`: the daemon's dashboard, one self-contained page (HTML, CSS, JS compiled into
//! the binary, no CDN, no build step) that polls `/api/status` and drives the index controls,
//! served to loopback clients only behind the same Host and Origin checks as `/api/*`
//! ([`crate::http`]); and the tracker's page, which reads `/v1/status` and `/v1/peers` (public, as
//! they are) under the same stylesheet and CSP ([`crate::tracker`]).
//!
//! Every string it shows comes from peers or the store (agent strings, addresses, store paths), so
//! the page writes them as DOM text only, and a strict Content-Security-Policy (scripts and styles
//! from this origin only, no inline code, no connections elsewhere) makes a string that slipped
//! through inert.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");
const TRACKER_INDEX: &str = include_str!("tracker.html");
const TRACKER_SCRIPT: &str = include_str!("tracker.js");

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A page asset with the dashboard's headers (CSP, nosniff, no framing).
fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // The page changes with the binary; revalidation is free on loopback.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

pub async fn page() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

pub async fn tracker_page() -> Response {
    asset(TRACKER_INDEX, "text/html; charset=utf-8")
}

pub async fn tracker_script() -> Response {
    asset(TRACKER_SCRIPT, "text/javascript; charset=utf-8")
}

/// The stylesheet, shared by both pages.
pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

/// Browsers ask for `/favicon.ico` on their own; "no content" keeps a 404 out of their console.
pub async fn no_icon() -> axum::http::StatusCode {
    axum::http::StatusCode::NO_CONTENT
}
