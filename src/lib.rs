//! peerix: a peer-to-peer binary cache for Nix.
//!
//! Data flow of this crate (see `ARCHITECTURE.md` in the design docs):
//! `nix` → [`http`] (binary-cache API) → [`local_cache`] → [`nix::store_db`] (Nix's DB, read-only)
//! → [`trust`] (publish gate; [`upstream`] for NarHash checks) → [`nix::nar`] (NAR from disk).
//! [`store`] is peerix's own SQLite state; [`config`] turns flags, env and TOML into a run config.

pub mod config;
pub mod http;
pub mod local_cache;
pub mod nix;
pub mod store;
pub mod trust;
pub mod upstream;
