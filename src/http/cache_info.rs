//! `GET|HEAD /nix-cache-info`: the first request every nix client sends to a cache URL.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;

pub async fn get(State(app): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/x-nix-cache-info")], app.cache_info.clone())
}

/// `StoreDir` must equal the client's store dir or nix refuses the cache; `WantMassQuery: 1` lets
/// `nix-env -qas` and `--dry-run` ask us; lower `Priority` is preferred (cache.nixos.org is 40).
pub fn render(priority: u32) -> String {
    format!("StoreDir: {}\nWantMassQuery: 1\nPriority: {priority}\n", crate::nix::store_path::STORE_DIR)
}
