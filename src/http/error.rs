//! The daemon's errors as responses: each says which [`Failure`] it is (the status is chosen there,
//! once for the daemon, the tracker and the server), with a fixed one-line phrase, never an
//! internal error's text. 5xx are logged at `error` with their cause, client mistakes at `debug`.

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use cid::Cid;
use serde_json::json;
use tracing::{debug, error};

use crate::httpd::{Failure, plain};

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

impl ApiError {
    /// Which failure, and the phrase the client sees.
    fn failure(&self) -> (Failure, &'static str) {
        match self {
            ApiError::NotFound(what) => (Failure::NotFound, what),
            ApiError::BadRequest(why) => (Failure::BadRequest, why),
            ApiError::MethodNotAllowed => (Failure::MethodNotAllowed, "method not allowed"),
            ApiError::RangeNotSatisfiable(_) => (Failure::RangeNotSatisfiable, "range not satisfiable"),
            ApiError::Forbidden(why) => (Failure::Forbidden, why),
            ApiError::Internal(_) => (Failure::Internal, "internal error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (failure, phrase) = self.failure();
        match &self {
            ApiError::Internal(e) => error!(cause = %crate::errors::chain(e.as_ref()), "request failed"),
            other => debug!(?other, "client error"),
        }
        let mut resp = plain(failure, phrase);
        let headers = resp.headers_mut();
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
            ApiError::NotFound(what) => RpcError::Unavailable(what.to_owned()),
            // The RPC has no ranges; a bad request is said as the daemon says it.
            other @ (ApiError::BadRequest(_) | ApiError::RangeNotSatisfiable(_)) => {
                RpcError::Client(other.failure().1.to_owned())
            }
        }
    }
}

impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        let (failure, code, message) = match &self {
            RpcError::Client(m) => (Failure::BadRequest, 1, m.clone()),
            RpcError::NotFound(cid) => {
                (Failure::NotFound, 0, format!("block was not found locally (offline): ipld: could not find {cid}"))
            }
            RpcError::Unavailable(why) => (Failure::NotFound, 0, why.clone()),
            RpcError::MethodNotAllowed => (Failure::MethodNotAllowed, 1, "405 - Method Not Allowed".into()),
            RpcError::Forbidden(why) => (Failure::Forbidden, 1, (*why).to_owned()),
            RpcError::Internal(e) => {
                error!(cause = %crate::errors::chain(e.as_ref()), "RPC request failed");
                (Failure::Internal, 0, "internal error".into())
            }
        };
        let body = Json(json!({ "Message": message, "Code": code, "Type": "error" }));
        let mut resp = (failure.status(), body).into_response();
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}
