//! The trustless gateway (ipfs/specs `trustless-gateway.md`), read-only and gated:
//! `GET|HEAD /ipfs/{cid}` with `?format=raw` or `Accept: application/vnd.ipld.raw` → one block;
//! `?format=car` or `Accept: application/vnd.ipld.car` → CAR v1 of the DAG (`dag-scope=all|entity|block`,
//! depth-first, no duplicates). `format` wins over `Accept`; neither is a 400. Only what
//! [`crate::blocks`] may serve is reachable, so a private path's blocks are as absent as unknown ones.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use cid::Cid;
use serde::Deserialize;

use super::AppState;
use super::dag::{self, Scope};
use super::error::ApiError;
use crate::blocks::Blocks;

/// Immutable content: a year, as the gateway spec suggests for `/ipfs/` responses.
const IMMUTABLE: &str = "public, max-age=29030400, immutable";

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    format: Option<String>,
    #[serde(rename = "dag-scope")]
    dag_scope: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Raw,
    Car,
}

fn wanted_format(params: &Params, headers: &HeaderMap) -> Result<Option<Format>, ApiError> {
    match params.format.as_deref() {
        Some("raw") => return Ok(Some(Format::Raw)),
        Some("car") => return Ok(Some(Format::Car)),
        Some(_) => return Err(ApiError::BadRequest("format must be raw or car")),
        None => {}
    }
    let accept = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    if accept.contains("application/vnd.ipld.raw") {
        Ok(Some(Format::Raw))
    } else if accept.contains("application/vnd.ipld.car") {
        Ok(Some(Format::Car))
    } else {
        Ok(None)
    }
}

/// Parses a CID (v0 or v1, any multibase).
pub fn parse_cid(s: &str) -> Result<Cid, ApiError> {
    s.parse::<Cid>().map_err(|_| ApiError::BadRequest("invalid CID"))
}

/// A block from the blockstore, read on a blocking thread.
pub async fn block(blocks: &Arc<Blocks>, cid: Cid) -> Result<Option<bytes::Bytes>, ApiError> {
    let blocks = blocks.clone();
    let got = crate::tasks::spawn_blocking(module_path!(), move || blocks.get(&cid)).await??;
    Ok(got.map(|(data, _)| data))
}

pub async fn get(
    State(app): State<AppState>,
    method: Method,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<Params>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(cid) = path.map_err(|_| ApiError::BadRequest("invalid path"))?;
    let Query(params) = params.map_err(|_| ApiError::BadRequest("invalid query string"))?;
    let cid = parse_cid(&cid)?;
    let format = match wanted_format(&params, &headers)? {
        Some(f) => f,
        // The gateway probe: `GET /ipfs/bafkqaaa` answers 200 whatever it asks for.
        None if crate::ipld::inline_block(&cid).is_some() => Format::Raw,
        None => return Err(ApiError::BadRequest("ask for ?format=raw or ?format=car (or the matching Accept)")),
    };
    let scope = match params.dag_scope.as_deref() {
        None | Some("all") | Some("entity") => Scope::All,
        Some("block") => Scope::Block,
        Some(_) => return Err(ApiError::BadRequest("dag-scope must be all, entity or block")),
    };
    let Some(root) = block(&app.blocks, cid).await? else {
        return Err(ApiError::NotFound("block not found"));
    };
    let mut resp = match format {
        Format::Raw => {
            let mut r = root.into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.ipld.raw"));
            set(h, header::CONTENT_DISPOSITION, format!("attachment; filename=\"{cid}.bin\""));
            set(h, header::ETAG, format!("\"{cid}.raw\""));
            r
        }
        Format::Car => {
            let body = if method == Method::HEAD {
                axum::body::Body::empty()
            } else {
                dag::car_body(app.blocks.clone(), cid, scope)
            };
            let mut r = Response::new(body);
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/vnd.ipld.car; version=1; order=dfs; dups=n"),
            );
            set(h, header::CONTENT_DISPOSITION, format!("attachment; filename=\"{cid}.car\""));
            let scope = if scope == Scope::All { "all" } else { "block" };
            set(h, header::ETAG, format!("\"{cid}.car.{scope}.dfs.n\""));
            r
        }
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    Ok(resp)
}

fn set(h: &mut HeaderMap, name: header::HeaderName, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(name, v);
    }
}
