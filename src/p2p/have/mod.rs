//! `/peerix/have/1.0.0`: every node tells its connected peerix peers which store paths it can
//! serve, so a narinfo lookup asks only peers that may have the path and a miss costs no round trip.
//!
//! Wire: the sender opens one stream per peer and writes frames ([`crate::p2p::frame`]), each a
//! protobuf [`wire::Have`]: a full summary (a [`bloom::Bloom`] of the published store hashes) or a
//! delta (hashes added and removed since generation `base`). Generations count up within an `epoch`
//! (random per process): a receiver applies a delta only on top of the summary it was computed
//! from, and a full summary of a newer generation or another epoch replaces what it had. A stream
//! that breaks is reopened with a full summary.
//!
//! Sender ([`advertise`]): one task. The published set comes from the state DB at start, then from
//! publication events ([`crate::publications`]) — the same events that drive DHT announcements and
//! withdrawals, so a path that is garbage-collected or stops passing the gate leaves every
//! summary within [`SUMMARY_SEND_EVERY`]. Changes are batched and sent at most once per [`SUMMARY_SEND_EVERY`];
//! a batch larger than [`MAX_DELTA`] (or one that overfills the filter) becomes a new full summary.
//! Receiver ([`receive`]): [`apply`] checks every message (sizes, hash count, generation) before
//! it changes anything; a peer's messages are read [`MESSAGE_BURST`] at once and then one per second
//! (throttled, not dropped: a busy receiver reads an honest sender's frames in bunches).

mod advertise;
pub mod bloom;
mod summary;
pub mod wire;

pub use advertise::advertise;
pub use summary::*;
