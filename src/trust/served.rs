//! The narinfo we serve for a path, our own or a peer's: the one place it is rendered. Both get
//! our URL scheme (`nar/<NarHash nix32>.nar`, the NAR uncompressed, so FileHash/FileSize are the
//! NarHash/NarSize) and our signature when the operator gave a key (`--private-key-file`); they
//! differ only in where the other fields and the Sig lines come from.

use super::verdict::{Acceptance, Verdict};
use crate::nix::narinfo::NarInfo;
use crate::nix::signing::SecretKey;
use crate::nix::store_db::PathInfo;

/// Whose narinfo, and why it may be served.
pub enum Source {
    /// A local path the gate let out: Nix DB fields; the DB's Sig lines, plus upstream's when
    /// that is why it is served.
    Own { info: PathInfo, verdict: Verdict },
    /// A peer's narinfo the gate accepted: under a trusted signature the peer's fields and Sig
    /// lines unchanged (nix checks them again); vouched for by upstream, upstream's.
    Peer { narinfo: NarInfo, acceptance: Acceptance },
}

/// Renders served narinfos; holds the operator's signing key, if any.
pub struct Served {
    signer: Option<SecretKey>,
}

impl Served {
    pub fn new(signer: Option<SecretKey>) -> Self {
        Self { signer }
    }

    /// The public half of the signing key, as nix's `trusted-public-keys` takes it: what another
    /// machine must trust.
    pub fn signing_public_key(&self) -> Option<String> {
        self.signer.as_ref().map(|k| k.public().to_string())
    }

    pub fn narinfo(&self, source: Source) -> NarInfo {
        let mut served = match source {
            Source::Own { info, verdict } => {
                let mut sigs = info.sigs;
                if let Verdict::Upstream { sigs: up } = verdict {
                    for s in up {
                        if !sigs.contains(&s) {
                            sigs.push(s);
                        }
                    }
                }
                NarInfo {
                    url: String::new(),
                    compression: String::new(),
                    file_hash: None,
                    file_size: None,
                    store_path: info.path,
                    nar_hash: info.nar_hash,
                    nar_size: info.nar_size,
                    references: info.references,
                    deriver: info.deriver,
                    sigs,
                    ca: info.ca,
                }
            }
            Source::Peer { narinfo, acceptance: Acceptance::Signed { .. } } => narinfo,
            Source::Peer { acceptance: Acceptance::Upstream(up), .. } => *up,
        };
        served.url = format!("nar/{}.nar", served.nar_hash.to_nix32());
        served.compression = "none".into();
        served.file_hash = Some(served.nar_hash.to_string());
        served.file_size = Some(served.nar_size);
        if let Some(key) = &self.signer {
            // Ours replaces an older signature of ours (a key of the same name).
            let prefix = format!("{}:", key.name);
            served.sigs.retain(|s| !s.starts_with(&prefix));
            served.sigs.push(key.sign(&served.fingerprint()));
        }
        served
    }
}
