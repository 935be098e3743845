//! A kubo-compatible RPC subset, so scripts written for kubo work against peerix:
//! `POST /api/v0/block/get?arg=`, `/block/stat`, `/cat?arg=&offset=&length=`, `/dag/export`, `/id`,
//! `/routing/findprovs`.
//! Like kubo: POST only (GET → 405), arguments in the query, errors as
//! `{"Message","Code","Type":"error"}`. Unlike kubo, a client's mistake is a 400 and a missing block
//! a 404, not a 500. Loopback clients only, never web pages (see [`super::router`]); local content
//! is gated. As in kubo, `cat` fetches what is not local from the IPFS network (bitswap; verified and
//! kept in the blockstore, so the gateway serves it afterwards) unless `offline=true`; `block/get`
//! and `block/stat` answer from local blocks only.
//! `peerix fetch` is `cat` through this route.

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
use crate::ipld::walk;

#[derive(Debug, Default, Deserialize)]
pub struct Args {
    arg: Option<String>,
    offset: Option<u64>,
    length: Option<u64>,
    #[serde(default)]
    offline: bool,
}

/// The IPFS node, when the request allows the network and the node runs.
fn network<'a>(app: &'a AppState, args: &Result<Query<Args>, QueryRejection>) -> Option<&'a crate::p2p::Node> {
    let offline = args.as_ref().map(|Query(a)| a.offline).unwrap_or(false);
    app.p2p.as_ref().filter(|_| !offline)
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
    let plan = crate::tasks::spawn_blocking(module_path!(), move || dag::cat_plan(&blocks, cid))
        .await
        .map_err(|e| RpcError::Internal(e.into()))?;
    let pieces = match (plan, network(&app, &args)) {
        (Ok(pieces), _) => pieces,
        (Err(walk::WalkOrFetch::Fetch(e)), Some(node)) if e.kind() == std::io::ErrorKind::NotFound => {
            use futures_util::StreamExt;
            let mut body = Box::pin(window(node.fetch_file(cid), offset.unwrap_or(0), length));
            // The status waits for the first bytes: a CID nobody has is a 404 saying so, not a
            // 200 whose body breaks off.
            let first = match body.next().await {
                Some(Err(e)) => return Err(RpcError::Unavailable(e.to_string())),
                first => first,
            };
            let body = futures_util::stream::iter(first).chain(body);
            let mut resp = Response::new(axum::body::Body::from_stream(body));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return Ok(resp);
        }
        (Err(walk::WalkOrFetch::Fetch(e)), _) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RpcError::NotFound(cid));
        }
        (Err(walk::WalkOrFetch::Fetch(e)), _) => return Err(RpcError::Internal(e.into())),
        // Not the client's mistake, but what it named is no file we will read: said as kubo
        // says "not a file", with the rule or bound the DAG broke.
        (Err(walk::WalkOrFetch::Walk(e)), _) => return Err(RpcError::Client(format!("{cid}: refused the DAG: {e}"))),
    };
    let size = pieces.last().map_or(0, |p| p.offset() + p.len());
    let start = offset.unwrap_or(0).min(size);
    let end = length.map_or(size, |l| start.saturating_add(l).min(size));
    let mut resp = Response::new(dag::cat_body(app.blocks.clone(), pieces, start..end));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp.headers_mut().insert("x-content-length", HeaderValue::from(end - start));
    Ok(resp)
}

/// The bytes `offset .. offset + length` of a stream of pieces.
fn window<E: Send + 'static>(
    pieces: futures_util::stream::BoxStream<'static, Result<bytes::Bytes, E>>,
    offset: u64,
    length: Option<u64>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, E>> + Send + 'static {
    use futures_util::StreamExt;
    let end = length.map_or(u64::MAX, |l| offset.saturating_add(l));
    pieces
        .scan(0u64, move |pos, piece| {
            let out = piece.map(|b| {
                let (start, stop) = (*pos, *pos + b.len() as u64);
                *pos = stop;
                let (from, to) = (offset.max(start), end.min(stop));
                if from < to { b.slice((from - start) as usize..(to - start) as usize) } else { bytes::Bytes::new() }
            });
            let done = *pos >= end;
            futures_util::future::ready(if done && out.as_ref().is_ok_and(|b| b.is_empty()) { None } else { Some(out) })
        })
        .filter(|r| futures_util::future::ready(!r.as_ref().is_ok_and(|b| b.is_empty())))
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
    let (addresses, protocols) = match &app.p2p {
        Some(node) => (
            node.info().await.map(|i| i.listen_addrs).unwrap_or_default(),
            crate::p2p::bitswap::PROTOCOLS.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    Json(json!({
        "ID": app.identity.peer_id(),
        "PublicKey": app.identity.public_key_base64(),
        "Addresses": addresses,
        "AgentVersion": concat!("peerix/", env!("CARGO_PKG_VERSION")),
        "Protocols": protocols,
    }))
}

/// `routing/findprovs`: providers of a CID in the DHT, in kubo's event shape (Type 4 = Provider).
pub async fn findprovs(
    State(app): State<AppState>,
    args: Result<Query<Args>, QueryRejection>,
) -> Result<Response, RpcError> {
    let cid = cid_arg(&args)?;
    let Some(node) = &app.p2p else {
        return Err(RpcError::Client("no IPFS node runs (--no-p2p)".into()));
    };
    let providers = node.providers(&cid).await;
    let responses: Vec<_> = providers.iter().map(|p| json!({ "ID": p.to_string(), "Addrs": [] })).collect();
    Ok(Json(json!({ "Extra": "", "ID": "", "Type": 4, "Responses": responses })).into_response())
}

/// kubo answers GET on the RPC with 405.
pub async fn method_not_allowed() -> RpcError {
    RpcError::MethodNotAllowed
}
