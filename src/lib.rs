//! peerix: a peer-to-peer binary cache for Nix.
//!
//! Data flow of this crate (see `ARCHITECTURE.md` in the design docs):
//! `nix` → [`http`] (binary-cache API) → [`local_cache`] → [`nix::store_db`] (Nix's DB, read-only)
//! → [`trust`] (publish gate; [`upstream`] for NarHash checks) → [`nix::nar`] (NAR from disk).
//! [`publish`] indexes gated-in paths as content-defined [`ipld`] blocks; [`blocks`] serves them
//! by CID (gateway, kubo RPC); [`index_control`] lets the operator pause it. [`store`] is peerix's own SQLite state; [`config`] turns flags, env
//! and TOML into a run config; [`identity`] is the node's persistent ed25519 key. [`fuzzing`] holds
//! one entry point per parser of outside bytes, for the fuzz targets and their regression test.
//! [`tracker`] is `peerix tracker` and the daemon's client of it. [`arrivals`] hands the DAGs of
//! NARs streamed to nix from peers to the indexer, so a substituted closure is re-shared without
//! reading it again. [`remote`] makes every HTTP request to another machine (upstream, fallbacks,
//! the tracker) with deadlines and capped reads.

pub mod arrivals;
pub mod blocks;
pub mod config;
pub mod dashboard;
pub mod errors;
pub mod fuzzing;
pub mod http;
pub mod httpd;
pub mod identity;
pub mod index_control;
pub mod ipld;
pub mod local_cache;
pub mod nix;
pub mod p2p;
pub mod publications;
pub mod publish;
pub mod remote;
pub mod store;
pub mod substitute;
pub mod tracker;
pub mod tracker_wire;
pub mod trust;
pub mod upstream;
