//! The one place where errors become HTTP responses.
//!
//! Bodies are a fixed one-line phrase (`text/plain`), never an internal error's text; every error
//! response carries `Cache-Control: no-store` (a 404 must not be kept by anything between us and nix,
//! which already caches misses for an hour). 5xx are logged at `error`, client mistakes at `debug`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::{debug, error};

use crate::local_cache::CacheError;

#[derive(Debug)]
pub enum ApiError {
    /// Absent, private or gone: the same answer for all three, so the gate leaks nothing.
    NotFound(&'static str),
    BadRequest(&'static str),
    MethodNotAllowed,
    /// `Range` starts past the end; carries the NAR size for `Content-Range: bytes */N`.
    RangeNotSatisfiable(u64),
    Internal(CacheError),
}

impl From<CacheError> for ApiError {
    fn from(e: CacheError) -> Self {
        ApiError::Internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, phrase) = match &self {
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, *what),
            ApiError::BadRequest(why) => (StatusCode::BAD_REQUEST, *why),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            ApiError::RangeNotSatisfiable(_) => (StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        };
        match &self {
            ApiError::Internal(e) => error!(cause = %error_chain(e), "request failed"),
            other => debug!(?other, "client error"),
        }
        let mut resp = (status, format!("{phrase}\n")).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        if let ApiError::RangeNotSatisfiable(size) = self
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            headers.insert(header::CONTENT_RANGE, v);
        }
        resp
    }
}

/// `outer: inner: innermost`, for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
