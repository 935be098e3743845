//! The one place where errors become HTTP responses.
//!
//! Bodies are a fixed one-line phrase (`text/plain`), never an internal error's text; every error
//! response carries `Cache-Control: no-store` (a 404 must not be kept by anything between us and nix,
//! which already caches misses for an hour). 5xx are logged at `error`, client mistakes at `debug`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cid::Cid;
use serde_json::json;
use tracing::{debug, error};

/// A server-side failure; its text is logged, never sent.
pub type Internal = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
pub enum ApiError {
    /// Absent, private or gone: the same answer for all three, so the gate leaks nothing.
    NotFound(&'static str),
    BadRequest(&'static str),
    MethodNotAllowed,
    /// `Range` starts past the end; carries the NAR size for `Content-Range: bytes */N`.
    RangeNotSatisfiable(u64),
    /// An admin route asked from another host, or by a web page (why, in one line).
    Forbidden(&'static str),
    Internal(Internal),
}

impl<E: Into<Internal>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError::Internal(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, phrase) = match &self {
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, *what),
            ApiError::BadRequest(why) => (StatusCode::BAD_REQUEST, *why),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            ApiError::RangeNotSatisfiable(_) => (StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable"),
            ApiError::Forbidden(why) => (StatusCode::FORBIDDEN, *why),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        };
        match &self {
            ApiError::Internal(e) => error!(cause = %crate::errors::chain(e.as_ref()), "request failed"),
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

/// Errors of the kubo-compatible RPC, in kubo's JSON shape `{"Message","Code","Type":"error"}`
/// (Code 1 is kubo's client error, 0 any other).
#[derive(Debug)]
pub enum RpcError {
    Client(String),
    NotFound(Cid),
    /// Not local, and the network could not deliver it (no provider, every one failed): the why.
    Unavailable(String),
    MethodNotAllowed,
    Forbidden(&'static str),
    Internal(Internal),
}

impl From<ApiError> for RpcError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Internal(e) => RpcError::Internal(e),
            ApiError::Forbidden(why) => RpcError::Forbidden(why),
            ApiError::MethodNotAllowed => RpcError::MethodNotAllowed,
            other => RpcError::Client(format!("{other:?}")),
        }
    }
}

impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            RpcError::Client(m) => (StatusCode::BAD_REQUEST, 1, m.clone()),
            RpcError::NotFound(cid) => {
                (StatusCode::NOT_FOUND, 0, format!("block was not found locally (offline): ipld: could not find {cid}"))
            }
            RpcError::Unavailable(why) => (StatusCode::NOT_FOUND, 0, why.clone()),
            RpcError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, 1, "405 - Method Not Allowed".into()),
            RpcError::Forbidden(why) => (StatusCode::FORBIDDEN, 1, (*why).to_owned()),
            RpcError::Internal(e) => {
                error!(cause = %crate::errors::chain(e.as_ref()), "RPC request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, 0, "internal error".into())
            }
        };
        let mut resp = (status, Json(json!({ "Message": message, "Code": code, "Type": "error" }))).into_response();
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}
