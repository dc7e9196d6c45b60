//! Just enough PromQL lexing for the checks: the metric names an expression reads, and
//! the "signal" halves of an alert condition (the expression without its threshold).
//!
//! Not a parser: Prometheus itself parses every expression (through /api/v1/query and
//! its rule manager). These helpers only need to find names and top-level operators, so
//! they skip string literals, label matchers `{...}`, ranges `[...]` and grouping label
//! lists `by (...)`, and track parenthesis depth.

use std::collections::BTreeSet;

/// Aggregation operators and keywords: never metric names.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_ident(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit()
}

/// Index just past the closing delimiter matching the opener at `start` (strings inside
/// are skipped).
fn skip_group(b: &[u8], start: usize, open: u8, close: u8) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' | b'`' => i = skip_string(b, i) - 1,
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    b.len()
}

/// Index just past the string literal starting at `start`.
fn skip_string(b: &[u8], start: usize) -> usize {
    let quote = b[start];
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == b'\\' && quote != b'`' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

fn next_non_space(b: &[u8], mut i: usize) -> Option<(usize, u8)> {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    b.get(i).map(|c| (i, *c))
}

/// The metric names an expression selects (`x_bucket` stays `x_bucket`).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => i = skip_string(b, i),
            b'{' => i = skip_group(b, i, b'{', b'}'),
            b'[' => i = skip_group(b, i, b'[', b']'),
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            // Numbers and durations (`0.99`, `1e3`, `5m`, `0x1f`).
            c if c.is_ascii_digit()
                || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                let next = next_non_space(b, i);
                if LABEL_LISTS.contains(&word) {
                    if let Some((j, b'(')) = next {
                        i = skip_group(b, j, b'(', b')');
                    }
                } else if KEYWORDS.contains(&word.to_ascii_lowercase().as_str())
                    || matches!(next, Some((_, b'(')))
                {
                    // An operator or a function call.
                } else {
                    names.insert(word.to_owned());
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Top-level pieces of `expr` split at `and` / `or` / `unless`.
fn split_set_operators(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let mut pieces = Vec::new();
    let (mut depth, mut start, mut i) = (0i32, 0, 0);
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' | b'`' => {
                i = skip_string(b, i);
                continue;
            }
            b'{' => {
                i = skip_group(b, i, b'{', b'}');
                continue;
            }
            b'[' => {
                i = skip_group(b, i, b'[', b']');
                continue;
            }
            b'(' => depth += 1,
            b')' => depth -= 1,
            c if depth == 0 && is_ident_start(c) && (i == 0 || !is_ident(b[i - 1])) => {
                let s = i;
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
                if matches!(&expr[s..i], "and" | "or" | "unless") {
                    pieces.push(expr[start..s].trim().to_owned());
                    // Skip a matching clause: `and on (a, b)`.
                    if let Some((j, _)) = next_non_space(b, i) {
                        let rest = &expr[j..];
                        if let Some(kw) = ["on", "ignoring"].iter().find(|k| rest.starts_with(**k))
                            && let Some((k, b'(')) = next_non_space(b, j + kw.len())
                        {
                            i = skip_group(b, k, b'(', b')');
                        }
                    }
                    start = i;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    pieces.push(expr[start..].trim().to_owned());
    pieces
}

fn is_number(s: &str) -> bool {
    let s = s.trim();
    let s = s.strip_prefix('-').unwrap_or(s);
    s.parse::<f64>().is_ok() || matches!(s.to_ascii_lowercase().as_str(), "inf" | "+inf")
}

/// `lhs <op> [bool] <number>` (or `<number> <op> rhs`) at top level: the non-number side.
fn strip_threshold(piece: &str) -> Option<String> {
    let b = piece.as_bytes();
    let (mut depth, mut i) = (0i32, 0);
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' | b'`' => {
                i = skip_string(b, i);
                continue;
            }
            b'{' => {
                i = skip_group(b, i, b'{', b'}');
                continue;
            }
            b'[' => {
                i = skip_group(b, i, b'[', b']');
                continue;
            }
            b'(' => depth += 1,
            b')' => depth -= 1,
            b'=' | b'!' | b'>' | b'<' if depth == 0 => {
                let two = b.get(i + 1) == Some(&b'=');
                if matches!(b[i], b'!' | b'=') && !two {
                    i += 1;
                    continue;
                }
                let end = i + if two { 2 } else { 1 };
                let lhs = piece[..i].trim();
                let rhs = piece[end..].trim();
                let rhs = rhs.strip_prefix("bool ").map(str::trim).unwrap_or(rhs);
                return if is_number(rhs) {
                    Some(lhs.to_owned())
                } else if is_number(lhs) {
                    Some(rhs.to_owned())
                } else {
                    None
                };
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The signals of an alert condition: each top-level `and`/`or`/`unless` operand with
/// its numeric threshold comparison removed. `None` if an operand compares two
/// non-constant expressions (then there is no threshold to strip: the caller fails).
pub fn alert_signals(expr: &str) -> Option<Vec<String>> {
    split_set_operators(expr)
        .into_iter()
        .map(|piece| strip_threshold(&piece).or_else(|| (!has_comparison(&piece)).then_some(piece)))
        .collect()
}

fn has_comparison(piece: &str) -> bool {
    let b = piece.as_bytes();
    let (mut depth, mut i) = (0i32, 0);
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' | b'`' => {
                i = skip_string(b, i);
                continue;
            }
            b'{' => {
                i = skip_group(b, i, b'{', b'}');
                continue;
            }
            b'[' => {
                i = skip_group(b, i, b'[', b']');
                continue;
            }
            b'(' => depth += 1,
            b')' => depth -= 1,
            b'>' | b'<' if depth == 0 => return true,
            b'=' | b'!' if depth == 0 && b.get(i + 1) == Some(&b'=') => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn metric_names_skip_functions_labels_and_grouping() {
        assert_eq!(
            metric_names(
                r#"histogram_quantile(0.99, sum by (service, le) (rate(http_request_duration_seconds_bucket{service="a", route=~"/x.*"}[5m])))"#
            ),
            set(&["http_request_duration_seconds_bucket"])
        );
        assert_eq!(
            metric_names(
                "sum(rate(a_sum[$__rate_interval])) / sum without (instance) (rate(a_count[1m] offset 5m))"
            ),
            set(&["a_count", "a_sum"])
        );
        assert_eq!(
            metric_names(
                r#"count(up{job="worker"} == 1) and on (job) group_left (x) level:b:rate1m"#
            ),
            set(&["level:b:rate1m", "up"])
        );
        assert_eq!(metric_names(r#"60 * sum(x) by (reason)"#), set(&["x"]));
    }

    #[test]
    fn alert_signals_strip_numeric_thresholds_only() {
        assert_eq!(
            alert_signals(r#"up{job=~"a|b"} == 0"#),
            Some(vec![r#"up{job=~"a|b"}"#.to_owned()])
        );
        assert_eq!(
            alert_signals("deriv(x[5m]) > 0 and x > 1000"),
            Some(vec!["deriv(x[5m])".to_owned(), "x".to_owned()])
        );
        assert_eq!(
            alert_signals("max by (s) (a / b) > 0.8 or max by (s) (c / d) >= bool 0.8"),
            Some(vec![
                "max by (s) (a / b)".to_owned(),
                "max by (s) (c / d)".to_owned()
            ])
        );
        assert_eq!(
            alert_signals(r#"rate(x{route!="a", s=~"5.."}[5m]) > 0"#),
            Some(vec![r#"rate(x{route!="a", s=~"5.."}[5m])"#.to_owned()])
        );
        // No threshold: the operand itself; two series compared: not strippable.
        assert_eq!(
            alert_signals("absent(x)"),
            Some(vec!["absent(x)".to_owned()])
        );
        assert_eq!(alert_signals("a > b"), None);
    }
}
