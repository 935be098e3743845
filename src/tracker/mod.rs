//! `peerix tracker`: which peer shares which path, for peers that share no LAN (ARCHITECTURE §6).
//!
//! Data flow: a daemon signs an announcement of its addresses and published paths with its libp2p
//! key ([`crate::tracker_wire`]) and POSTs it to `/v1/announce` at start, as deltas after its index
//! changes, and as heartbeats; [`api`] checks it whole and [`db`] applies it in one transaction;
//! records expire by TTL unless refreshed. A daemon looking for a path it does not hold asks
//! `/v1/providers/<hash32>` ([`crate::substitute::tracker`]) under its lookup deadline, dials the
//! providers and asks them for the narinfo as it asks any peer: the tracker is trusted with nothing
//! but addresses.
//! Announcements are rate-limited per peer and per address ([`crate::rate`]); a peer whose connection
//! to the tracker's node broke or went silent is left out of answers ([`presence`]).

pub mod api;
pub mod db;
pub mod node;
pub mod presence;
mod server;

pub use server::{RunError, Tracker, TrackerConfig, router, run};
