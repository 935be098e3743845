//! peerix: a peer-to-peer binary cache for Nix.
//!
//! Data flow. `nix` asks [`http`] (the binary-cache API, on the server of [`httpd`]) for a path;
//! [`substitute`] answers from the local store through [`local_cache`] (Nix's DB read-only via
//! [`nix::store_db`], each path judged by the publish gate in [`trust`], which asks [`upstream`]),
//! else from peers found by [`p2p`] (summaries, DHT) or the [`tracker`] ([`substitute::tracker`]),
//! verifying every block by CID and every narinfo by signature or upstream's NarHash. [`publish`]
//! indexes gated-in paths as content-addressed [`ipld`] blocks in [`store`] (our SQLite state), and
//! [`blocks`] serves them by CID to the gateway, the kubo RPC, bitswap and `/peerix/blocks`;
//! [`publications`] tells the announcers what became shareable or stopped being so; [`arrivals`]
//! hands the DAGs of NARs streamed from peers to the indexer, so a substituted closure is re-shared
//! without reading it again, and [`received`] serves their blocks on to other peers until then.
//!
//! Layers, top to bottom. A module imports only from its own layer or below, and the modules of a
//! layer import each other without a cycle; `tests/layers_import_downwards.rs` reads every
//! `crate::` path in `src/` and holds the code to this table (the `cli` and `main` of the binary sit
//! above all of it).
//!
//! | layer | modules |
//! |---|---|
//! | 7 interfaces | [`http`] (daemon routes), [`tracker`] (`peerix tracker`), [`config`] (flags, env, TOML), [`fuzzing`] (one entry per parser of outside bytes) |
//! | 6 substitution | [`substitute`] (answers for paths we lack: lookup, transfer, prefetch, the tracker client) |
//! | 5 network | [`p2p`] (the libp2p node: bitswap, our protocols, summaries, DHT) |
//! | 4 content | [`publish`] (the indexer), [`blocks`] (blocks by CID, behind the gate) |
//! | 3 trust | [`local_cache`] (the local store as a cache), [`trust`] (the publish gate), [`upstream`] (upstream's narinfos), [`arrivals`] (the DAG hand-off), [`received`] (verified blocks served on) |
//! | 2 infrastructure | [`store`] (SQLite state), [`bounded`] (the one cache type), [`rate`] (the one token bucket), [`tasks`] (every spawned task, tracked), [`httpd`] (HTTP/1.1 server, no routes), [`remote`] (HTTP client), [`publications`] (events), [`index_control`] (pause, scan), [`identity`] (node key), [`dashboard`] (pages), [`errors`] (errors for the log) |
//! | 1 formats | [`timeouts`] (every wait, in one table), [`nix`] (Nix's formats), [`ipld`] (NARs as blocks), [`tracker_wire`] (the tracker protocol) |

pub mod arrivals;
pub mod blocks;
pub mod bounded;
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
pub mod rate;
pub mod received;
pub mod remote;
pub mod store;
pub mod substitute;
pub mod tasks;
pub mod timeouts;
pub mod tracker;
pub mod tracker_wire;
pub mod trust;
pub mod upstream;
