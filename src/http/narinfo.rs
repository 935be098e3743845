//! `GET|HEAD /<hash32>.narinfo`: the local path's narinfo, else one accepted from peers
//! ([`crate::substitute`]); a miss answers 404 without a network round trip unless a peer's
//! have-summary matches.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use std::time::Instant;

use super::AppState;
use super::error::ApiError;
use super::metrics::Outcome;
use crate::nix::store_path::StoreHash;
use crate::substitute::Answer;

/// Every single-segment path other than `/nix-cache-info`, `/health` and `/` lands here.
pub async fn get(State(app): State<AppState>, Path(file): Path<String>) -> Result<Response, ApiError> {
    let Some(hash) = file.strip_suffix(".narinfo") else {
        return Err(ApiError::NotFound("no such resource"));
    };
    let hash = StoreHash::parse(hash).map_err(|_| ApiError::BadRequest("malformed store path hash"))?;
    let started = Instant::now();
    let (body, outcome) = match app.substituter.narinfo(&hash).await? {
        Some(Answer::Local(body)) => (body, Outcome::Local),
        Some(Answer::Peer(body)) => (body, Outcome::Peer),
        None => {
            app.metrics.lookup(Outcome::Miss, started);
            return Err(ApiError::NotFound("no such path"));
        }
    };
    app.metrics.lookup(outcome, started);
    Ok(([(header::CONTENT_TYPE, "text/x-nix-narinfo")], body).into_response())
}
