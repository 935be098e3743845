//! The publish gate (ARCHITECTURE §3): which local store paths may leave this machine.
//!
//! A local path is served — on every interface — only if
//! (a) Nix's DB holds a signature on it that verifies under a trusted key (default `cache.nixos.org-1`),
//! (b) the upstream cache has the same store path with the same NarHash (verdict kept in SQLite:
//!     "same" forever, "absent" re-checked after `negative_ttl`, "unreachable" after 60 s), or
//! (c) the operator opted in with `--serve-private`.
//! Anything else — including an upstream that cannot be reached — is private. Callers see a
//! [`Verdict`]; only [`Verdict::allowed`] ones may be served, and a private path looks exactly like an
//! absent one from outside (404), so the gate leaks nothing about what is in the store.
//!
//! The other direction: a narinfo a *peer* sends is used only if [`Gate::accept_foreign`] says so —
//! it names the path asked for and carries a signature by a trusted key (passed on unchanged, so
//! the local nix checks it again), or upstream has the same path with the same NarHash and NarSize
//! (then upstream's own narinfo fields and Sig lines are what we serve). The serving peer's claim
//! alone is never enough.
//!
//! [`gate`] decides, [`verdict`] names what it decided, [`served`] renders the narinfo we serve
//! for a path — our own or a peer's — and [`withdrawal`] says when a decision takes a published
//! path back.

pub mod gate;
pub mod served;
pub mod verdict;
pub mod withdrawal;

pub use gate::{CACHE_NIXOS_ORG_KEY, Gate};
pub use served::{Served, Source};
pub use verdict::{Acceptance, Refusal, Verdict};
