//! The operator's controls under `/api/` (loopback only, like every admin route), used by the
//! dashboard: pause and resume the indexer, scan now, and check one path against the publish gate
//! again.
//!
//! A control changes state, so it needs more than the `/api` guard's checks of Host, Origin and
//! `Sec-Fetch-Site`: a JSON content type, which a page on another site cannot send without a CORS
//! preflight that we never answer. (curl: `-H 'Content-Type: application/json'`.)

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use serde_json::{Value, json};
use tracing::info;

use super::AppState;
use super::error::ApiError;
use crate::nix::store_path::StoreHash;
use crate::publications::Publication;
use crate::trust::withdrawal::{self, Change};

fn json_request(headers: &HeaderMap) -> Result<(), ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")));
    if json { Ok(()) } else { Err(ApiError::Forbidden("controls need Content-Type: application/json")) }
}

/// `POST /api/index/pause`: paths being chunked finish, no new one starts.
pub async fn pause(State(app): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    json_request(&headers)?;
    app.index.pause();
    info!("indexing paused by the operator");
    Ok(Json(json!({ "paused": true })))
}

/// `POST /api/index/scan`: scan the store now (`peerix publish` beside a running daemon).
pub async fn scan(State(app): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    json_request(&headers)?;
    app.index.scan_now();
    info!("index scan asked for");
    Ok(Json(json!({ "scanning": true })))
}

/// `POST /api/index/resume`.
pub async fn resume(State(app): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    json_request(&headers)?;
    app.index.resume();
    info!("indexing resumed by the operator");
    Ok(Json(json!({ "paused": false })))
}

/// `POST /api/paths/<hash32>/recheck`: the gate's verdict on a local path, asked afresh (upstream
/// is asked again, not its stored answer). If it differs from what the index holds (a path just
/// signed by a trusted key, or one upstream no longer has), the path is forgotten and the indexer
/// scans at once: it then publishes or withdraws it as for any changed path.
pub async fn recheck(
    State(app): State<AppState>,
    headers: HeaderMap,
    hash: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    json_request(&headers)?;
    let Path(hash) = hash.map_err(|_| ApiError::BadRequest("invalid path"))?;
    let hash = StoreHash::parse(&hash).map_err(|_| ApiError::BadRequest("malformed store path hash"))?;
    let cache = app.cache.clone();
    let Some(info) = cache.store_db().query_by_hash(&hash)? else {
        return Err(ApiError::NotFound("no such path in the local store"));
    };
    let (state, path) = (cache.state_arc(), info.path.clone());
    crate::tasks::spawn_blocking(module_path!(), move || state.forget_upstream_verdict(&path)).await??;
    let verdict = cache.gate().verdict(&info).await?;
    let state = cache.state_arc();
    let now = verdict.clone();
    let changed = crate::tasks::spawn_blocking(module_path!(), move || -> Result<bool, ApiError> {
        let recorded = state.path_entry(hash.as_str())?.and_then(|e| e.status);
        match withdrawal::change(recorded, &now) {
            Change::None => return Ok(false),
            // Forgotten, it is indexed again by the scan below (published, or kept private).
            Change::Publish => {
                state.forget_path(hash.as_str())?;
            }
            Change::Withdraw => {
                if let Some(root) = state.forget_path(hash.as_str())? {
                    cache.publish_event(Publication::Withdrawn { hash, root: Some(root) });
                }
            }
        }
        Ok(true)
    })
    .await??;
    app.index.scan_now();
    info!(path = %info.path, verdict = verdict.name(), changed, "path checked again by the operator");
    Ok(Json(json!({
        "store_path": info.path.to_string(),
        "verdict": verdict.name(),
        "shared": verdict.allowed(),
        "reason": verdict.reason(),
        "changed": changed,
    })))
}
