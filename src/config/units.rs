//! The units of configuration values: durations (`250ms`, `2s`) and sizes (`512M`, `10G`), as
//! flags, environment variables and the TOML file write them.

use std::time::Duration;

use super::ConfigError;

/// `250`, `250ms`, `1s`: milliseconds unless suffixed.
pub fn parse_duration(key: &'static str, s: &str) -> Result<Duration, ConfigError> {
    let t = s.trim();
    let (digits, unit) = if let Some(d) = t.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = t.strip_suffix('s') {
        (d, 1000)
    } else {
        (t, 1)
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|ms| *ms > 0 && *ms <= 3_600_000)
        .map(Duration::from_millis)
        .ok_or_else(|| ConfigError::Duration { key, value: s.to_owned() })
}

/// `value` if `range` holds it, else an error naming the key and what is allowed.
pub fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    allowed: &'static str,
) -> Result<T, ConfigError> {
    match range.contains(&value) {
        true => Ok(value),
        false => Err(ConfigError::Range { key, value: value.to_string(), allowed }),
    }
}

/// `value` as an http(s) URL with a host (`key` names the flag in the error): `http://`, `http:v1`
/// or a URL with spaces in it is refused at start, not found out by the first request.
pub fn http_url(key: &'static str, value: &str) -> Result<String, ConfigError> {
    let refuse = |why: &'static str| ConfigError::Url { key, value: value.to_owned(), why };
    if value.chars().any(char::is_whitespace) {
        return Err(refuse("it contains white space"));
    }
    let url = reqwest::Url::parse(value).map_err(|_| refuse("it is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || !value.contains("://") {
        return Err(refuse("it must begin with http:// or https://"));
    }
    match url.host_str() {
        Some(h) if !h.is_empty() => Ok(value.to_owned()),
        _ => Err(refuse("it names no host")),
    }
}

/// `bytes` as [`parse_size`] reads it back, in the largest binary unit that is exact (`10G`, `64M`).
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes != 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// `d` as [`parse_duration`] reads it back: whole seconds as `30s`, the rest in `ms`.
pub fn format_duration(d: Duration) -> String {
    match d.as_millis() {
        ms if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// `1234`, `64K`, `512M`, `10G`, `1T` (binary units).
pub fn parse_size(key: &'static str, s: &str) -> Result<u64, ConfigError> {
    let t = s.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 10),
        Some((i, 'M' | 'm')) => (&t[..i], 20),
        Some((i, 'G' | 'g')) => (&t[..i], 30),
        Some((i, 'T' | 't')) => (&t[..i], 40),
        _ => (t, 0),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| ConfigError::Size { key, value: s.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_are_written_as_they_are_read() {
        for (bytes, text) in [(10u64 << 30, "10G"), (64 << 20, "64M"), (16 << 10, "16K"), (1000, "1000"), (0, "0")] {
            assert_eq!(format_size(bytes), text);
            assert_eq!(parse_size("k", text).unwrap(), bytes);
        }
        for (d, text) in [(Duration::from_secs(30), "30s"), (Duration::from_millis(250), "250ms")] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration("k", text).unwrap(), d);
        }
    }

    #[test]
    fn urls_need_a_scheme_a_host_and_no_spaces() {
        for ok in ["http://127.0.0.1:12305", "https://cache.nixos.org", "http://[::1]:80/x", "http://tracker.lan"] {
            assert_eq!(http_url("tracker", ok).unwrap(), ok);
        }
        for bad in ["v1", "http://", "http:v1", "ftp://host", "http://a b", "http://:80/path", "", "127.0.0.1:12305"] {
            assert!(http_url("tracker", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("k", "10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("k", "64k").unwrap(), 65536);
        assert_eq!(parse_size("k", "123").unwrap(), 123);
        assert!(parse_size("k", "10X").is_err());
        assert!(parse_size("k", "99999999T").is_err());
        assert_eq!(parse_duration("k", "250").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("k", "250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("k", "2s").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("k", "0").is_err());
        assert!(parse_duration("k", "soon").is_err());
    }
}
