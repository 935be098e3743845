//! Nix's own formats, owned by us and tested against `nix`: nix32, store paths, NAR hashes, the NAR
//! archive (writer), narinfo, signing keys and fingerprints, and the read-only view of
//! Nix's `db.sqlite`. Nothing here knows about HTTP, peers or our state database.

pub mod base32;
pub mod hash;
pub mod nar;
pub mod nar_layout;
pub mod narinfo;
pub mod signing;
pub mod store_db;
pub mod store_path;
