//! What the gate says: [`Verdict`] on a local path, [`Acceptance`] or [`Refusal`] of a peer's
//! narinfo.

use crate::nix::narinfo::NarInfo;

/// Why a path may or may not be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed in the Nix DB by this trusted key.
    TrustedSignature { key: String },
    /// Upstream has the same NAR; these are upstream's signatures on it.
    Upstream { sigs: Vec<String> },
    /// `--serve-private` is set.
    ServePrivate,
    /// Not to be served, and why (for operators only; never sent to a client): one of the
    /// reasons below.
    Private { reason: &'static str },
}

impl Verdict {
    pub const NO_UPSTREAM: &str = "no trusted signature and no upstream configured";
    pub const UPSTREAM_LACKS_IT: &str = "no trusted signature and upstream does not have this NAR";
    pub const UPSTREAM_UNREACHABLE: &str = "no trusted signature and upstream could not be reached";
    /// From [`super::Gate::verdict_offline`]: upstream is the only one who could tell, and has not
    /// been asked yet (or its answer is stale).
    pub const NOT_ASKED: &str = "no trusted signature and upstream not asked yet";

    pub fn allowed(&self) -> bool {
        !matches!(self, Verdict::Private { .. })
    }

    /// The verdict's name in the index (`paths.verdict`), `/api/paths` and the logs.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::TrustedSignature { .. } => "signed",
            Verdict::Upstream { .. } => "upstream",
            Verdict::ServePrivate => "serve-private",
            Verdict::Private { .. } => "private",
        }
    }

    /// The reason a private path is private; `None` for one that may be served.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Verdict::Private { reason } => Some(reason),
            _ => None,
        }
    }
}

/// Why a peer's narinfo may be served to the local nix.
#[derive(Debug, Clone)]
pub enum Acceptance {
    /// It carries this trusted key's valid signature: served with its Sig lines unchanged.
    Signed { key: String },
    /// Upstream has the same store path and NAR: served with upstream's fields and Sig lines.
    Upstream(Box<NarInfo>),
}

/// Why a peer's narinfo was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("narinfo is for {found}, not the path asked for")]
    WrongPath { found: String },
    #[error("a signature claims trusted key {key} but does not verify (forged, or the fields were altered)")]
    Forged { key: String },
    #[error("no signature by a trusted key, and upstream {0}")]
    Untrusted(&'static str),
}

impl Refusal {
    /// True if the narinfo could only come from a dishonest (or broken) peer, as opposed to one
    /// that trusts other keys than we do.
    pub fn is_lie(&self) -> bool {
        matches!(self, Refusal::WrongPath { .. } | Refusal::Forged { .. })
    }
}
