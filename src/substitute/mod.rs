//! Substitution: the binary-cache answers for every path, local or not (ARCHITECTURE §4).
//!
//! Data flow of `GET /<hash32>.narinfo`: the local store through the publish gate
//! ([`LocalCache::narinfo`]) → narinfos already accepted from peers ([`accepted`]) → those a peer
//! sent with the answer for a path whose closure holds this one ([`offered`]) → the connected
//! peerix peers whose have-summary matches, asked in parallel under one deadline ([`lookup`]); the
//! first answer the trust rules accept ([`crate::trust::Gate::accept_foreign`]) wins; no match is
//! "not found" without a round trip — unless a tracker is set (`--tracker`): then its providers
//! are asked too, when the peers we know do not have the path. `GET /nar/<NarHash>.nar`: a local
//! NAR ([`LocalNar`]) or an accepted one, whose DAG is planned and streamed from every source that
//! has it ([`transfer`], [`sources`]: peerix peers, bitswap peers, `--fallback` gateways), every
//! block checked against its CID and the whole against the NarHash.
//!
//! [`activity`] keeps what this did (per lookup, per transfer, per source) for operators.

pub mod accepted;
pub mod activity;
mod lookup;
pub mod offered;
mod plan;
pub mod prefetch;
pub mod sources;
mod substituter;
pub mod tracker;
mod transfer;

pub use accepted::AcceptedNar;
pub use prefetch::Limits as PrefetchLimits;
pub use sources::Fallback;
pub use substituter::{Answer, NarSource, Substituter};
pub use transfer::UNIT_BYTES;
