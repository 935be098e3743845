//! What went wrong, in HTTP's words: the one place a failure becomes a status code. The daemon's
//! errors ([`crate::http::ApiError`], the kubo RPC's `RpcError`), the tracker's and this server's
//! own refusals before routing each say which [`Failure`] they are; [`plain`] writes the body every
//! text error shares: one line, `Cache-Control: no-store` (a 404 must not be kept by anything
//! between us and nix, which already caches misses for an hour).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A client's mistake in what it sent.
    BadRequest,
    /// Not for this client: an admin route from another host or a web page; a peer not allowed.
    Forbidden,
    /// Absent, private or gone: the same answer for all three, so the gate leaks nothing.
    NotFound,
    MethodNotAllowed,
    /// The client did not send its request in time.
    Timeout,
    /// The request conflicts with the server's state (a tracker wanting a full announcement).
    Conflict,
    /// A request or body over its cap.
    TooLarge,
    /// A request head (line or headers) over its cap.
    HeadTooLarge,
    RangeNotSatisfiable,
    /// Over a rate or in-flight limit: come back later.
    TooMany,
    /// A request we do not implement (an unknown transfer coding).
    NotImplemented,
    /// A part of the server is degraded (`/health`).
    Unavailable,
    /// Our fault: logged with its cause, never described to the client.
    Internal,
}

impl Failure {
    pub fn status(self) -> StatusCode {
        match self {
            Failure::BadRequest => StatusCode::BAD_REQUEST,
            Failure::Forbidden => StatusCode::FORBIDDEN,
            Failure::NotFound => StatusCode::NOT_FOUND,
            Failure::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Failure::Timeout => StatusCode::REQUEST_TIMEOUT,
            Failure::Conflict => StatusCode::CONFLICT,
            Failure::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Failure::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Failure::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            Failure::TooMany => StatusCode::TOO_MANY_REQUESTS,
            Failure::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            Failure::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A `text/plain` error response: `phrase` on one line (newlines in it become spaces), no-store.
pub fn plain(failure: Failure, phrase: &str) -> Response {
    let mut resp = (failure.status(), format!("{}\n", phrase.replace('\n', " "))).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}
