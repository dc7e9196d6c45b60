//! Durations as the environment writes them: whole numbers, each with its unit (`250ms`,
//! `30s`, `5m`, `12h`, `30d`, `1m30s`). A bare number is refused: `30` could be seconds or
//! milliseconds, and guessing wrong is off by a factor of a thousand.

use std::fmt;
use std::time::Duration;

/// The units, longest name first so that `ms` is not read as `m` followed by garbage.
const UNITS: &[(&str, Duration)] = &[
    ("ms", Duration::from_millis(1)),
    ("s", Duration::from_secs(1)),
    ("m", Duration::from_secs(60)),
    ("h", Duration::from_secs(3600)),
    ("d", Duration::from_secs(86_400)),
];

/// A duration such as `250ms`, `30s`, `5m`, `12h`, `30d` or `1m30s`; `0` alone is zero.
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{s:?} has no unit: add one, as in {s}ms, {s}s or {s}m (units: ms, s, m, h, d)"
        ));
    }
    let invalid = || format!("expected a duration such as 250ms, 30s, 5m, 12h or 30d, got {s:?}");
    let mut rest = s;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let number: u32 = number.parse().map_err(|_| invalid())?;
        let letters = tail
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(letters);
        let (_, size) = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .ok_or_else(invalid)?;
        total = size
            .checked_mul(number)
            .and_then(|term| total.checked_add(term))
            .ok_or_else(invalid)?;
        rest = tail;
    }
    if s.is_empty() {
        return Err(invalid());
    }
    Ok(total)
}

/// A [`duration`] greater than zero (a timeout, an interval).
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        Duration::ZERO => Err("must be greater than 0".into()),
        d => Ok(d),
    }
}

/// A [`positive_duration`] of at most a day: a bound that keeps every deadline computed
/// from it representable, and far above any sensible timeout.
pub fn duration_up_to_a_day(s: &str) -> Result<Duration, String> {
    match positive_duration(s)? {
        d if d > Duration::from_secs(86_400) => Err("must be at most 1d".into()),
        d => Ok(d),
    }
}

/// A duration written as the environment writes it (`30s`, `250ms`, `1m30s`), for
/// messages that name a configured value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written(pub Duration);

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut millis = self.0.as_millis();
        if millis == 0 {
            return f.write_str("0");
        }
        for (name, size) in UNITS.iter().rev() {
            let size = size.as_millis();
            if millis >= size {
                write!(f, "{}{name}", millis / size)?;
                millis %= size;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_numbers_with_units() {
        for (text, expected) in [
            ("250ms", Duration::from_millis(250)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("12h", Duration::from_secs(12 * 3600)),
            ("30d", Duration::from_secs(30 * 86_400)),
            ("1m30s", Duration::from_secs(90)),
            (" 2s ", Duration::from_secs(2)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(duration(text), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn a_bare_number_is_refused_with_a_hint_to_add_a_unit() {
        let error = duration("5000").err().unwrap_or_default();
        assert!(
            error.contains("no unit") && error.contains("5000ms"),
            "{error}"
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "", "s", "1.5h", "-3s", "7 days", "3w", "30sec", "1m 30s", "1h30",
        ] {
            let error = duration(bad).err().unwrap_or_default();
            assert!(error.contains("expected a duration"), "{bad:?}: {error}");
        }
        assert!(duration("99999999999d").is_err(), "overflow");
    }

    #[test]
    fn bounds_name_the_limit() {
        assert_eq!(
            positive_duration("0ms"),
            Err("must be greater than 0".to_owned())
        );
        assert_eq!(
            duration_up_to_a_day("25h"),
            Err("must be at most 1d".to_owned())
        );
        assert_eq!(duration_up_to_a_day("1d"), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn a_duration_is_written_back_as_it_would_be_configured() {
        for (d, text) in [
            (Duration::from_secs(30), "30s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(30 * 86_400), "30d"),
            (Duration::ZERO, "0"),
        ] {
            assert_eq!(Written(d).to_string(), text);
            assert_eq!(duration(text), Ok(d), "{text} reads back");
        }
    }
}
