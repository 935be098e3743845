//! The parsers of bytes from peers, web clients, Nix and the operator, each behind one entry point
//! that takes arbitrary bytes: the fuzz targets in `fuzz/` call these, and
//! `tests/fuzz_regressions.rs` replays their seed corpora and every crash ever found through the same
//! functions on stable Rust in CI. A parser must turn any input into a value or an error; these
//! functions panic only when that breaks, or when a property of what was parsed does not hold.
//!
//! [`nar_reader`] is a NAR validator written to Nix's rules, for the NAR target and
//! `tests/nar_roundtrip.rs` (our writer's output must pass it, as nix's does). peerix itself never
//! parses a NAR: one from a peer is checked block by block against its CIDs and whole against the
//! NarHash a trusted signature or upstream vouched for, which pins every byte to what nix hashed.

pub mod nar_reader;
mod targets;

pub use targets::*;
