//! Bitswap 1.2.0 (also accepting 1.1.0, 1.0.0 and `/ipfs/bitswap`) on `libp2p-stream`.
//!
//! Bitswap is message-based, not request/response: wants go out on a stream we open, and blocks
//! and presences come back on a stream the *other* side opens (boxo, Helia). So every inbound stream,
//! whatever it carries, is read here ([`Bitswap::serve_stream`]): wantlists are answered from
//! [`Blocks`] (gated content only), received blocks and presences are handed to the waiting fetches
//! ([`client`]). Outgoing messages go through one writer task per peer ([`outbox`]), which keeps one
//! stream open and merges queued messages.
//!
//! Server rules (boxo/Helia): want-block → the block; want-have → HAVE, or the block itself when it
//! is ≤ 1 KiB; a missing block → DONT_HAVE when the entry asked for it (`sendDontHave`). A HAVE
//! comes from the index (no block is read or hashed for it); blocks are read one response at a time
//! as the peer's queue drains. Limits: 4 MiB per message, 1024 wants answered per message, 256
//! inbound streams at once and 32 per peer, responses cut at 256 KiB of payload, 16 384 wants
//! answered per second per peer ([`budget`]: more wait). A peer that sends a malformed or over-size
//! message, or keeps opening streams beyond its share, is disconnected.

mod budget;
pub mod client;
mod engine;
pub mod message;
mod outbox;
mod writer;

pub use engine::*;
