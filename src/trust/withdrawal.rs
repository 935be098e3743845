//! When a new verdict on an indexed path takes it back, or lets it out again. The indexer
//! ([`crate::publish`]) acts on its own scans; an operator's recheck (`POST
//! /api/paths/<hash>/recheck`) asks [`change`], and so does nothing else by comparing strings.

use super::verdict::Verdict;
use crate::store::Status;

/// What a verdict does to an indexed path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Not indexed, or the verdict agrees with the index: nothing to do now (a path under
    /// [`Status::Recheck`] that is still allowed is confirmed by the next scan, not re-chunked).
    None,
    /// Was private or failed, may now be served: index it again.
    Publish,
    /// Was shared (its root announced), may no longer be: withdraw it at once.
    Withdraw,
}

pub fn change(recorded: Option<Status>, verdict: &Verdict) -> Change {
    let Some(recorded) = recorded else { return Change::None };
    match (recorded.is_shared(), verdict.allowed()) {
        (true, false) => Change::Withdraw,
        (false, true) => Change::Publish,
        _ => Change::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_disagreement_changes_anything() {
        let private = Verdict::Private { reason: Verdict::UPSTREAM_LACKS_IT };
        let signed = Verdict::TrustedSignature { key: "k".into() };
        assert_eq!(change(None, &signed), Change::None);
        assert_eq!(change(Some(Status::Published), &private), Change::Withdraw);
        assert_eq!(change(Some(Status::Recheck), &private), Change::Withdraw);
        assert_eq!(change(Some(Status::Recheck), &signed), Change::None);
        assert_eq!(change(Some(Status::Published), &signed), Change::None);
        assert_eq!(change(Some(Status::Private), &signed), Change::Publish);
        assert_eq!(change(Some(Status::Failed), &signed), Change::Publish);
        assert_eq!(change(Some(Status::Private), &private), Change::None);
    }
}
