//! The daemon's HTTP server: the Nix binary-cache API for the local `nix`, the trustless gateway
//! (`/ipfs/{cid}`), a kubo-compatible RPC subset (`/api/v0/*`), and operator routes (`/health`,
//! `/api/status`, `/api/paths/*`, the controls, the dashboard at `/`). `/api/*` and the dashboard
//! answer loopback clients only, whatever `--listen` is.
//!
//! One module per resource; [`router`] builds every route and guards the operator's ones;
//! [`AppState`] is what every handler shares; [`ApiError`] is the one place errors become
//! responses. The server underneath, which knows no routes, is [`crate::httpd`].

mod api;
mod cache_info;
mod controls;
mod dag;
mod error;
mod gateway;
mod kubo_rpc;
pub mod metrics;
mod nar;
mod narinfo;
mod router;
mod state;
pub mod status;

pub use error::ApiError;
pub use router::router;
pub use state::{AppState, Inner, render_cache_info};
