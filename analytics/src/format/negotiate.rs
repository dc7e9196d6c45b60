//! `Accept` negotiation between the two media types a report has (RFC 9110, 12.5.1).

use super::Format;

const JSON: (&str, &str) = ("application", "json");
const CSV: (&str, &str) = ("text", "csv");

/// The format the `Accept` fields prefer: CSV when `text/csv`'s quality is higher than
/// `application/json`'s, JSON otherwise: when they tie (no header, `*/*`), and when
/// neither is acceptable, since a server may then ignore the header and a JSON answer
/// still says what it is.
pub fn preferred<'a>(fields: impl Iterator<Item = &'a str>) -> Format {
    let ranges: Vec<Range<'_>> = fields
        .flat_map(|field| field.split(','))
        .filter_map(Range::parse)
        .collect();
    if quality(&ranges, CSV) > quality(&ranges, JSON) {
        Format::Csv
    } else {
        Format::Json
    }
}

/// One media range of the header: `type/subtype`, `type/*` or `*/*`, and its weight.
#[derive(Debug, PartialEq)]
struct Range<'a> {
    kind: &'a str,
    subtype: &'a str,
    /// The quality in thousandths (0..=1000), as the grammar has at most three decimals.
    q: u16,
}

impl<'a> Range<'a> {
    /// `None` for an element that is empty or malformed (a bad `q` included): the rest of
    /// the header still counts.
    fn parse(element: &'a str) -> Option<Range<'a>> {
        let mut parts = element.split(';').map(str::trim);
        let (kind, subtype) = parts.next()?.split_once('/')?;
        let (kind, subtype) = (kind.trim(), subtype.trim());
        if kind.is_empty() || subtype.is_empty() || (kind == "*" && subtype != "*") {
            return None;
        }
        // Media-type parameters before `q` (`charset=utf-8`) do not narrow the match here;
        // those after it are extensions, ignored.
        let mut q = 1000;
        for param in parts {
            if let Some((name, value)) = param.split_once('=')
                && name.trim().eq_ignore_ascii_case("q")
            {
                q = weight(value.trim())?;
                break;
            }
        }
        Some(Range { kind, subtype, q })
    }

    /// 2 for the exact type, 1 for `type/*`, 0 for `*/*`; `None` when it does not match.
    fn specificity(&self, (kind, subtype): (&str, &str)) -> Option<u8> {
        let kind_matches = self.kind.eq_ignore_ascii_case(kind);
        if kind_matches && self.subtype.eq_ignore_ascii_case(subtype) {
            Some(2)
        } else if kind_matches && self.subtype == "*" {
            Some(1)
        } else if self.kind == "*" {
            Some(0)
        } else {
            None
        }
    }
}

/// A `qvalue`: `0`, `0.` up to three digits, `1`, or `1.` with up to three zeros.
fn weight(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, digit| n * 10 + u16::from(digit - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The quality the most specific ranges matching `media` give it (the highest, when one
/// is repeated); 0 when none matches.
fn quality(ranges: &[Range<'_>], media: (&str, &str)) -> u16 {
    ranges
        .iter()
        .filter_map(|r| r.specificity(media).map(|s| (s, r.q)))
        .max()
        .map_or(0, |(_, q)| q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(accept: &[&str]) -> Format {
        preferred(accept.iter().copied())
    }

    #[test]
    fn json_is_the_default_and_wins_ties() {
        assert_eq!(of(&[]), Format::Json);
        assert_eq!(of(&["*/*"]), Format::Json);
        assert_eq!(of(&["text/csv, application/json"]), Format::Json);
        assert_eq!(
            of(&["application/json;q=0.5, text/csv;q=0.5"]),
            Format::Json
        );
        // Neither acceptable: JSON rather than a 406.
        assert_eq!(of(&["text/html"]), Format::Json);
        assert_eq!(of(&["text/csv;q=0"]), Format::Json);
    }

    #[test]
    fn csv_when_it_weighs_more() {
        assert_eq!(of(&["text/csv"]), Format::Csv);
        assert_eq!(of(&["TEXT/CSV; charset=utf-8"]), Format::Csv);
        assert_eq!(of(&["application/json;q=0.5, text/csv;q=0.9"]), Format::Csv);
        assert_eq!(of(&["text/*"]), Format::Csv);
        assert_eq!(of(&["text/csv,*/*;q=0.8"]), Format::Csv);
        // Several fields are one list.
        assert_eq!(of(&["application/json;q=0.1", "text/csv"]), Format::Csv);
    }

    #[test]
    fn the_most_specific_range_decides() {
        assert_eq!(of(&["text/csv;q=0, */*"]), Format::Json);
        assert_eq!(of(&["application/json;q=0, */*;q=0.1"]), Format::Csv);
        assert_eq!(of(&["application/*;q=0.2, text/*;q=0.3"]), Format::Csv);
        assert_eq!(
            of(&["text/csv;q=0.4, text/*;q=1, application/json;q=0.5"]),
            Format::Json
        );
    }

    #[test]
    fn malformed_ranges_are_skipped_not_fatal() {
        assert_eq!(of(&["text/csv;q=2, application/json;q=0.1"]), Format::Json);
        assert_eq!(of(&["text/csv;q=0.5x, */*;q=0.1"]), Format::Json);
        assert_eq!(of(&["csv, , */csv, text/csv;q=0.3"]), Format::Csv);
    }

    #[test]
    fn qvalues_follow_the_grammar() {
        for (raw, want) in [
            ("1", Some(1000)),
            ("1.", Some(1000)),
            ("1.000", Some(1000)),
            ("0", Some(0)),
            ("0.5", Some(500)),
            ("0.123", Some(123)),
            ("0.05", Some(50)),
            ("1.001", None),
            ("0.1234", None),
            ("-0", None),
            ("0.+1", None),
            ("", None),
            ("2", None),
        ] {
            assert_eq!(weight(raw), want, "{raw:?}");
        }
    }
}
