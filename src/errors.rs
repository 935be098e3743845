//! How an error is written for the operator: one line, `outer: inner: innermost`. Every log line
//! and every message on stderr that reports an error goes through [`chain`]; nothing shown to a
//! client carries it (a client gets one fixed phrase: [`crate::http`]'s error map).

/// `outer: inner: innermost`, for logs.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
