//! A kubo-compatible RPC subset, so scripts written for kubo work against peerix:
//! `POST /api/v0/block/get?arg=`, `/block/stat`, `/cat?arg=&offset=&length=`, `/dag/export`, `/id`.
//! Like kubo: POST only (GET → 405), arguments in the query, errors as
//! `{"Message","Code","Type":"error"}`. Unlike kubo, a client's mistake is a 400 and a missing block
//! a 404, not a 500. Loopback clients only (see [`super::loopback_only`]); gated content only.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use cid::Cid;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::dag::{self, Scope};
use super::error::RpcError;
use super::gateway;
use crate::blocks::Blocks;

#[derive(Debug, Default, Deserialize)]
pub struct Args {
    arg: Option<String>,
    offset: Option<u64>,
    length: Option<u64>,
}

/// `arg` as a CID: `<cid>` or `/ipfs/<cid>` (sub-paths are not supported).
fn cid_arg(args: &Result<Query<Args>, QueryRejection>) -> Result<Cid, RpcError> {
    let Ok(Query(args)) = args else { return Err(RpcError::Client("invalid query string".into())) };
    let arg = args.arg.as_deref().ok_or_else(|| RpcError::Client("argument \"cid\" is required".into()))?;
    let s = arg.strip_prefix("/ipfs/").unwrap_or(arg);
    if s.contains('/') {
        return Err(RpcError::Client("paths inside a DAG are not supported".into()));
    }
    s.parse().map_err(|_| RpcError::Client(format!("invalid CID {s:?}")))
}

async fn fetch(blocks: &Arc<Blocks>, cid: Cid) -> Result<bytes::Bytes, RpcError> {
    gateway::block(blocks, cid).await.map_err(RpcError::from)?.ok_or(RpcError::NotFound(cid))
}

pub async fn block_get(
    State(app): State<AppState>,
    args: Result<Query<Args>, QueryRejection>,
) -> Result<Response, RpcError> {
    let cid = cid_arg(&args)?;
    let data = fetch(&app.blocks, cid).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}

pub async fn block_stat(
    State(app): State<AppState>,
    args: Result<Query<Args>, QueryRejection>,
) -> Result<Response, RpcError> {
    let cid = cid_arg(&args)?;
    let data = fetch(&app.blocks, cid).await?;
    Ok(Json(json!({ "Key": cid.to_string(), "Size": data.len() })).into_response())
}

pub async fn cat(State(app): State<AppState>, args: Result<Query<Args>, QueryRejection>) -> Result<Response, RpcError> {
    let cid = cid_arg(&args)?;
    let (offset, length) = args.as_ref().map(|Query(a)| (a.offset, a.length)).unwrap_or_default();
    let blocks = app.blocks.clone();
    let size = tokio::task::spawn_blocking(move || dag::file_size(&blocks, &cid))
        .await
        .map_err(|e| RpcError::Internal(e.into()))?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RpcError::NotFound(cid),
            _ => RpcError::Client(format!("{cid} is not a file")),
        })?;
    let start = offset.unwrap_or(0).min(size);
    let end = length.map_or(size, |l| start.saturating_add(l).min(size));
    let mut resp = Response::new(dag::cat_body(app.blocks.clone(), cid, start..end));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp.headers_mut().insert("x-content-length", HeaderValue::from(end - start));
    Ok(resp)
}

pub async fn dag_export(
    State(app): State<AppState>,
    args: Result<Query<Args>, QueryRejection>,
) -> Result<Response, RpcError> {
    let cid = cid_arg(&args)?;
    fetch(&app.blocks, cid).await?;
    let mut resp = Response::new(dag::car_body(app.blocks.clone(), cid, Scope::All));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.ipld.car"));
    Ok(resp)
}

pub async fn id(State(app): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({
        "ID": app.identity.peer_id(),
        "PublicKey": app.identity.public_key_base64(),
        "Addresses": [],
        "AgentVersion": concat!("peerix/", env!("CARGO_PKG_VERSION")),
        "Protocols": [],
    }))
}

/// kubo answers GET on the RPC with 405.
pub async fn method_not_allowed() -> RpcError {
    RpcError::MethodNotAllowed
}
