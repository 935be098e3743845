//! `/health` (liveness) and `/api/status` (JSON for operators, `peerix status` and the dashboard).

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;

pub async fn health() -> &'static str {
    "ok\n"
}

pub async fn status(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let cache = &app.cache;
    let (valid_paths, nar_bytes) = cache.store_db().counts().map_err(|e| ApiError::Internal(e.into()))?;
    let (known_paths, verdicts) = cache.state().counts().map_err(|e| ApiError::Internal(e.into()))?;
    let c = &cache.counters;
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": app.started.elapsed().as_secs(),
        "listen": app.listen.to_string(),
        "store_root": cache.store_root().display().to_string(),
        "nix_db": {
            "path": cache.store_db().db_path().display().to_string(),
            "present": cache.store_db().exists(),
            "valid_paths": valid_paths,
            "nar_bytes": nar_bytes,
        },
        "state": { "known_paths": known_paths, "upstream_verdicts": verdicts },
        "trust": {
            "trusted_keys": cache.gate().trusted_keys().iter().map(|k| k.name.clone()).collect::<Vec<_>>(),
            "upstream": app.upstream.clone(),
            "serve_private": app.serve_private,
            "signing_key": app.signing_key.clone(),
        },
        "requests": {
            "narinfo_hits": c.narinfo_hits.load(Ordering::Relaxed),
            "narinfo_misses": c.narinfo_misses.load(Ordering::Relaxed),
            "narinfo_private": c.narinfo_denied.load(Ordering::Relaxed),
            "nars_served": c.nars_served.load(Ordering::Relaxed),
            "nar_bytes_served": c.nar_bytes_served.load(Ordering::Relaxed),
        },
    })))
}
