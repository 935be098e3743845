//! The units of configuration values: durations (`250ms`, `2s`) and sizes (`512M`, `10G`), as
//! flags, environment variables and the TOML file write them.

use std::time::Duration;

use super::ConfigError;

/// `250`, `250ms`, `1s`: milliseconds unless suffixed.
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
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
        .ok_or_else(|| ConfigError::Duration(s.to_owned()))
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

/// `1234`, `64K`, `512M`, `10G`, `1T` (binary units).
pub fn parse_size(s: &str) -> Result<u64, ConfigError> {
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
        .ok_or_else(|| ConfigError::Size(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("64k").unwrap(), 65536);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert!(parse_size("10X").is_err());
        assert!(parse_size("99999999T").is_err());
        assert_eq!(parse_duration("250").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
