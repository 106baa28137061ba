//! Go durations (`time.ParseDuration`), as etcd's duration flags take them: one or more
//! decimal numbers each with a unit (`h`, `m`, `s`, `ms`, `us`/`µs`, `ns`), as in `1h30m`,
//! `1.5h` or `500ms`. One parser for the server, the operator's validation and the bench, so
//! they cannot disagree about what a flag accepts.

use std::time::Duration;

/// Parses a Go duration; `None` if `s` is not one. `0` alone is accepted, as Go does.
pub fn parse(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// A duration flag's value: a Go duration above zero (etcd-server refuses `0s` for its
/// interval flags).
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    match parse(s) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "invalid duration {s:?} (expected e.g. 10m, 5s, 500ms)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let cases = [
            ("1h", Some(3_600_000)),
            ("30m", Some(1_800_000)),
            ("1h30m", Some(5_400_000)),
            ("1.5h", Some(5_400_000)),
            ("500ms", Some(500)),
            ("10s", Some(10_000)),
            ("0", Some(0)),
            ("0s", Some(0)),
            ("", None),
            ("10", None),
            ("1d", None),
            ("h", None),
            ("1x", None),
            ("-1s", None),
        ];
        for (s, ms) in cases {
            assert_eq!(parse(s).map(|d| d.as_millis() as u64), ms, "{s:?}");
        }
    }

    #[test]
    fn intervals_are_above_zero() {
        assert_eq!(parse_interval("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("soon").is_err());
    }
}
