//! One NAR (or a byte range of one) streamed to nix from every source that has it.
//!
//! Plan ([`super::plan`]): the DAG under a candidate root CID, checked against the signed NarSize.
//! Its leaves are cut into units of consecutive blocks ([`UNIT_BYTES`], at most
//! [`crate::p2p::blocks::MAX_CIDS`]), the scheduling grain.
//!
//! Driver: one task per transfer. Sources pull units in order, each at most [`SOURCE_UNITS`] at a
//! time and the whole transfer at most [`WINDOW_BYTES`] ahead of what was sent to nix — so a faster
//! source simply comes back for more, and memory stays bounded. A unit whose source errs, sends a
//! wrong block or does not have it goes back to the front of the queue; a source that fails
//! [`MAX_FAILURES`] times, stalls for [`UNIT_STALLED`], lacks a block or sends a wrong one is dropped for
//! the rest of the transfer; the unit nix waits for is asked of a second source once it is
//! [`HEDGE_AFTER`] (or 4× its source's usual time) late. Fallbacks join when no peer is left or the
//! head unit is late; new sources (DHT providers) join when they are found. With no source at all
//! for [`NO_SOURCE_WAIT`], the transfer fails.
//!
//! Bytes leave in order. The whole NAR is hashed on the way and the last unit is held back until
//! the hash matches the NarHash nix was given: on a mismatch, or any failure, the body is aborted,
//! so nix sees a failed transfer (and tries again or moves on), never a complete wrong NAR.
//! Nothing is written to the blockstore: nix writes the path, and the indexer then publishes it.

mod driver;
mod report;
mod schedule;

pub use driver::UNIT_BYTES;
