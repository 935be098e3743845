//! Operator JSON under `/api/`: `GET /api/paths/<hash32>` — what peerix holds for a store path and,
//! for a path it does not share, why. Loopback clients only.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::nix::store_path::StoreHash;

pub async fn path(
    State(app): State<AppState>,
    hash: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(hash) = hash.map_err(|_| ApiError::BadRequest("invalid path"))?;
    let hash = StoreHash::parse(&hash).map_err(|_| ApiError::BadRequest("malformed store path hash"))?;
    let cache = &app.cache;
    let Some(info) = cache.store_db().query_by_hash(&hash)? else {
        return Err(ApiError::NotFound("no such path in the local store"));
    };
    let verdict = cache.gate().verdict(&info).await?;
    let entry = cache.state().path_entry(hash.as_str())?;
    Ok(Json(json!({
        "store_path": info.path.to_string(),
        "nar_hash": info.nar_hash.to_string(),
        "nar_size": info.nar_size,
        "references": info.references.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "origin": entry.as_ref().map(|e| e.origin.clone()).unwrap_or_else(|| "local".into()),
        "gate": { "shared": verdict.allowed(), "verdict": verdict.name(), "reason": verdict.reason() },
        "index": {
            "status": entry.as_ref().and_then(|e| e.status).map(|s| s.as_str()),
            "reason": entry.as_ref().and_then(|e| e.reason.clone()),
            "root_cid": entry.as_ref().and_then(|e| e.root_cid.clone()),
            "chunk_count": entry.as_ref().and_then(|e| e.chunk_count),
        },
    })))
}
