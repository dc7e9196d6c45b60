//! Query parameters of the reports: every problem is collected and reported at once as
//! `400 invalid_parameter` with `details: [{"field","reason"}]`; unknown and repeated
//! parameters are errors too, so a typo is never silently ignored.

use crate::format::{Accept, Format};
use crate::range::{EARLIEST, representable};
use axum::http::StatusCode;
use serde_json::{Value, json};
use service_kit::error::ApiError;
use shared_events::{FunnelStage, Source, is_known_event_type};
use std::collections::HashMap;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, UtcOffset};

/// Default range when `from`/`to` are absent: the 7 days up to now.
const DEFAULT_SPAN: Duration = Duration::days(7);

/// The parameters of one request, checked against what its report accepts.
#[derive(Debug)]
pub struct Params {
    values: HashMap<String, String>,
    errors: Vec<Value>,
}

/// Filters on the event envelope, shared by several reports.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub source: Option<&'static str>,
    pub funnel_stage: Option<&'static str>,
    pub event_type: Option<String>,
}

impl Params {
    /// Takes the raw pairs; names outside `allowed` and repeated names are errors.
    pub fn new(pairs: Vec<(String, String)>, allowed: &[&str]) -> Params {
        let mut params = Params {
            values: HashMap::new(),
            errors: Vec::new(),
        };
        for (name, value) in pairs {
            if !allowed.contains(&name.as_str()) {
                let reason = format!(
                    "unknown parameter; this report takes {}",
                    allowed.join(", ")
                );
                params.error(&name, reason);
            } else {
                match params.values.entry(name) {
                    std::collections::hash_map::Entry::Occupied(e) => {
                        let name = e.key().clone();
                        params.error(&name, "given more than once");
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(value);
                    }
                }
            }
        }
        params
    }

    fn error(&mut self, field: &str, reason: impl Into<String>) {
        self.errors
            .push(json!({"field": field, "reason": reason.into()}));
    }

    /// An RFC 3339 instant, in UTC, within [`EARLIEST`, [`crate::range::LATEST`]].
    fn time(&mut self, name: &str) -> Option<OffsetDateTime> {
        let raw = self.values.get(name)?.clone();
        let Ok(t) = OffsetDateTime::parse(&raw, &Rfc3339) else {
            self.error(
                name,
                format!("must be an RFC 3339 date-time such as 2026-03-01T00:00:00Z (got {raw:?})"),
            );
            return None;
        };
        // A local time near year 0 or 9999 with an offset can fall outside them in UTC.
        match t
            .checked_to_offset(UtcOffset::UTC)
            .filter(|t| representable(*t))
        {
            Some(t) => Some(t),
            None => {
                self.error(
                    name,
                    format!(
                        "must be from 0000-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z \
                         in UTC (got {raw:?}, outside them once its offset is applied)"
                    ),
                );
                None
            }
        }
    }

    /// `[from, to)`, in UTC: defaults `to` = now, `from` = `to` − 7 days (not before
    /// [`EARLIEST`]); `from >= to` is an error.
    pub fn range(&mut self) -> (OffsetDateTime, OffsetDateTime) {
        let from = self.time("from");
        let to = self.time("to");
        let to_value = to.unwrap_or_else(OffsetDateTime::now_utc);
        let from_value = from.unwrap_or_else(|| {
            to_value
                .checked_sub(DEFAULT_SPAN)
                .map_or(EARLIEST, |t| t.max(EARLIEST))
        });
        // An invalid `to` is already named; now in its place says nothing about `from`.
        let to_invalid = to.is_none() && self.values.contains_key("to");
        if from_value >= to_value && !to_invalid {
            if from.is_some() {
                self.error("from", "must be earlier than to");
            } else if to.is_some() {
                self.error("to", "must be later than 0000-01-01T00:00:00Z");
            }
        }
        (from_value, to_value)
    }

    /// A value from a closed list, or its default.
    pub fn choice(
        &mut self,
        name: &str,
        allowed: &[&'static str],
        default: &'static str,
    ) -> &'static str {
        match self.values.get(name).cloned() {
            None => default,
            Some(v) => match allowed.iter().find(|a| **a == v) {
                Some(a) => a,
                None => {
                    self.error(
                        name,
                        format!("must be one of {} (got {v:?})", allowed.join(", ")),
                    );
                    default
                }
            },
        }
    }

    pub fn source(&mut self) -> Option<&'static str> {
        let value = self.values.get("source")?.clone();
        match Source::parse(&value) {
            Some(s) => Some(s.as_str()),
            None => {
                self.error(
                    "source",
                    format!("must be one of facebook, tiktok (got {value:?})"),
                );
                None
            }
        }
    }

    /// The `source` a report requires.
    pub fn required_source(&mut self) -> Option<&'static str> {
        if !self.values.contains_key("source") {
            self.error("source", "is required: facebook or tiktok");
            return None;
        }
        self.source()
    }

    /// `source`, `funnelStage` and `eventType`.
    pub fn filters(&mut self) -> Filters {
        let source = self.source();
        let funnel_stage =
            self.values
                .get("funnelStage")
                .cloned()
                .and_then(|v| match FunnelStage::parse(&v) {
                    Some(s) => Some(s.as_str()),
                    None => {
                        self.error(
                            "funnelStage",
                            format!("must be one of top, bottom (got {v:?})"),
                        );
                        None
                    }
                });
        let event_type = self.values.get("eventType").cloned().and_then(|v| {
            if is_known_event_type(&v) {
                Some(v)
            } else {
                self.error(
                    "eventType",
                    format!("{v:?} is not an event type of any source"),
                );
                None
            }
        });
        Filters {
            source,
            funnel_stage,
            event_type,
        }
    }

    /// `format`: `json` or `csv`; it overrides what the `Accept` header asked for.
    pub fn format(&mut self, accept: Accept) -> Format {
        if !self.values.contains_key("format") {
            return accept.0;
        }
        Format::parse(self.choice("format", &Format::NAMES, "json")).unwrap_or(accept.0)
    }

    /// `limit`: 1..=1000, default 10.
    pub fn limit(&mut self) -> i64 {
        let Some(raw) = self.values.get("limit").cloned() else {
            return 10;
        };
        match raw.parse::<i64>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                self.error(
                    "limit",
                    format!("must be an integer from 1 to 1000 (got {raw:?})"),
                );
                10
            }
        }
    }

    /// A non-empty free-text value (`campaignId`).
    pub fn text(&mut self, name: &str) -> Option<String> {
        let value = self.values.get(name)?.clone();
        if value.is_empty() {
            self.error(name, "must not be empty");
            return None;
        }
        Some(value)
    }

    /// Adds an error found by the report itself (e.g. too many buckets).
    pub fn reject(&mut self, field: &str, reason: impl Into<String>) {
        self.error(field, reason);
    }

    /// `Ok` when every parameter was valid.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(invalid(self.errors))
        }
    }
}

fn invalid(details: Vec<Value>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
        "one or more query parameters are invalid",
    )
    .with_details(details)
}

/// The answer for a range whose date arithmetic fails while a report is computed. The
/// parameters refuse every range that could ([`Params::range`]), so this is a defence that
/// keeps a missed case a `400` rather than a panic.
pub fn unrepresentable_range() -> ApiError {
    let reason = "the range cannot be computed: from and to must be from \
                  0000-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z in UTC";
    invalid(
        ["from", "to"]
            .into_iter()
            .map(|field| json!({"field": field, "reason": reason}))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &[(&str, &str)], allowed: &[&str]) -> Params {
        Params::new(
            q.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            allowed,
        )
    }

    fn fields(p: Params) -> Vec<String> {
        match p.finish() {
            Ok(()) => vec![],
            Err(e) => e
                .details
                .iter()
                .map(|d| d["field"].as_str().unwrap_or("").to_owned())
                .collect(),
        }
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let mut p = params(
            &[
                ("from", "yesterday"),
                ("source", "snapchat"),
                ("limit", "0"),
                ("colour", "red"),
                ("eventType", "x"),
            ],
            &["from", "to", "source", "funnelStage", "eventType", "limit"],
        );
        p.range();
        p.filters();
        p.limit();
        assert_eq!(
            fields(p),
            ["colour", "from", "source", "eventType", "limit"]
        );
    }

    #[test]
    fn from_must_precede_to_and_defaults_span_a_week() {
        let mut p = params(
            &[
                ("from", "2026-03-02T00:00:00Z"),
                ("to", "2026-03-01T00:00:00Z"),
            ],
            &["from", "to"],
        );
        p.range();
        assert_eq!(fields(p), ["from"]);
        let mut p = params(&[("to", "2026-03-08T00:00:00Z")], &["from", "to"]);
        let (from, to) = p.range();
        assert_eq!(to - from, Duration::days(7));
        assert!(p.finish().is_ok());
    }

    #[test]
    fn a_range_must_be_writable_in_utc_whatever_the_offset() {
        let range = |from: &str, to: &str| {
            let mut p = params(&[("from", from), ("to", to)], &["from", "to"]);
            let range = p.range();
            (range, fields(p))
        };
        let ((from, to), bad) = range("0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z");
        assert_eq!((from, to, bad), (EARLIEST, crate::range::LATEST, vec![]));
        // At +01:00 the first day of year 1 starts in year 0, in UTC: accepted, in UTC.
        let ((from, _), bad) = range("0001-01-01T00:00:00+01:00", "2026-03-01T00:00:00Z");
        assert_eq!(from, time::macros::datetime!(0000-12-31 23:00 UTC));
        assert_eq!(from.offset(), UtcOffset::UTC);
        assert!(bad.is_empty());
        // 10000-01-01T00:59:59Z and -0001-12-31T23:00:00Z in UTC: each named.
        let (_, bad) = range("9999-12-31T23:59:59-01:00", "2026-03-01T00:00:00Z");
        assert_eq!(bad, ["from"]);
        let (_, bad) = range("2026-03-01T00:00:00Z", "0000-01-01T00:00:00+01:00");
        assert_eq!(bad, ["to"]);
        let (_, bad) = range("9999-12-31T23:59:59-01:00", "0000-01-01T00:00:00+01:00");
        assert_eq!(bad, ["from", "to"]);
        let (_, bad) = range("9999-12-31T23:00:00Z", "9999-12-31T23:59:59-01:00");
        assert_eq!(bad, ["to"], "from is not later than a to it was not given");
        let (_, bad) = range(
            "9999-12-31T23:59:59.999999999Z",
            "9999-12-31T23:59:59.999999999Z",
        );
        assert_eq!(bad, ["from"]);
    }

    #[test]
    fn the_default_from_stops_at_the_earliest_instant() {
        let mut p = params(&[("to", "0000-01-03T00:00:00Z")], &["from", "to"]);
        assert_eq!(p.range().0, EARLIEST);
        assert!(p.finish().is_ok());
        let mut p = params(&[("to", "0000-01-01T00:00:00Z")], &["from", "to"]);
        p.range();
        assert_eq!(fields(p), ["to"]);
    }

    #[test]
    fn an_explicit_format_overrides_accept_and_a_bad_one_is_named() {
        let format = |q: &[(&str, &str)], accept| {
            let mut p = params(q, &["format"]);
            let format = p.format(Accept(accept));
            (format, fields(p))
        };
        assert_eq!(format(&[], Format::Csv), (Format::Csv, vec![]));
        assert_eq!(format(&[], Format::Json), (Format::Json, vec![]));
        let csv = [("format", "csv")];
        assert_eq!(format(&csv, Format::Json), (Format::Csv, vec![]));
        let json = [("format", "json")];
        assert_eq!(format(&json, Format::Csv), (Format::Json, vec![]));
        for bad in ["xml", "CSV", ""] {
            let (_, bad) = format(&[("format", bad)], Format::Json);
            assert_eq!(bad, ["format"]);
        }
    }

    #[test]
    fn repeated_parameters_are_refused() {
        let mut p = params(&[("limit", "5"), ("limit", "6")], &["limit"]);
        p.limit();
        assert_eq!(fields(p), ["limit"]);
    }
}
