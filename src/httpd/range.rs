//! The `Range` header of a NAR request: one `bytes=` range (nix uses it to resume a download).
//! Anything else — several ranges, other units, syntax we do not understand — is ignored, which
//! RFC 9110 allows (the whole body is sent).

use std::ops::Range;

/// A range that selects no byte of the body: 416.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// One `bytes=` range within `size`; `Ok(None)` for a header we ignore (several ranges, other units,
/// or syntax we do not understand: RFC 9110 lets a server ignore `Range` and send the whole body).
pub fn parse(spec: &str, size: u64) -> Result<Option<Range<u64>>, Unsatisfiable> {
    let Some(set) = spec.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if set.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return Ok(None);
    };
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        // Suffix range: the last N bytes.
        let Ok(n) = last.parse::<u64>() else {
            return Ok(None);
        };
        // A suffix of nothing, or of an empty body, has no first byte (RFC 9110 §14.1.1).
        if n == 0 || size == 0 {
            return Err(Unsatisfiable);
        }
        size.saturating_sub(n)..size
    } else {
        let Ok(start) = first.parse::<u64>() else {
            return Ok(None);
        };
        let end = if last.is_empty() {
            size
        } else {
            let Ok(l) = last.parse::<u64>() else {
                return Ok(None);
            };
            if l < start {
                return Ok(None);
            }
            l.saturating_add(1).min(size)
        };
        if start >= size {
            return Err(Unsatisfiable);
        }
        start..end
    };
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |s: &str| parse(s, 100);
        assert_eq!(r("bytes=0-9").unwrap(), Some(0..10));
        assert_eq!(r("bytes=90-").unwrap(), Some(90..100));
        assert_eq!(r("bytes=-10").unwrap(), Some(90..100));
        assert_eq!(r("bytes=-1000").unwrap(), Some(0..100));
        assert_eq!(r("bytes=95-200").unwrap(), Some(95..100));
        assert_eq!(r("bytes=0-1,5-6").unwrap(), None);
        assert_eq!(r("items=0-1").unwrap(), None);
        assert_eq!(r("bytes=x-1").unwrap(), None);
        assert_eq!(r("bytes=5-1").unwrap(), None);
        assert!(r("bytes=100-").is_err());
        assert!(r("bytes=-0").is_err());
        assert_eq!(parse("bytes=-5", 0), Err(Unsatisfiable));
        assert_eq!(parse("bytes=0-", 0), Err(Unsatisfiable));
    }
}
