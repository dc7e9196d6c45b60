//! Validation of one event against the spec, collecting every problem with its path.
//!
//! Validation walks a `serde_json::Value` rather than deserialising into structs: serde
//! stops at the first wrong type, and producers need the whole list (`data.user.age`,
//! `data.engagement.device`, ...) to fix an event in one go.

use crate::event::Event;
use crate::money::parse_amount;
use crate::spec::{FunnelStage, Source, event_types, is_known_event_type, stage_of};
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

/// `eventId` is at most this many characters (Unicode scalar values).
pub const MAX_EVENT_ID_CHARS: usize = 128;
/// Other identifiers (`userId`, `adId`, `campaignId`, `videoId`, `profileId`) and names
/// (`name`, `username`), in characters. Identifiers are indexed (user keys, campaign
/// rollups): a btree entry holds about 2.7 kB, and 256 characters of up to 4 bytes stay
/// well under it together with the rest of the key.
pub const MAX_ID_CHARS: usize = 256;
/// Places (`country`, `city`), in characters: both sit in one per-user-set key.
pub const MAX_PLACE_CHARS: usize = 128;
/// Free text (`purchasedItem`), in characters.
pub const MAX_TEXT_CHARS: usize = 1024;
/// The earliest event time (`timestamp`, `actionTime`) accepted.
pub const EARLIEST_EVENT_TIME: OffsetDateTime = datetime!(2000-01-01 00:00 UTC);
/// How far ahead of the receiver's clock an event time may be (clock skew, time zones
/// gotten wrong by a day).
pub const MAX_EVENT_TIME_AHEAD: Duration = Duration::days(1);

/// One problem of one event: where it is (`data.user.age`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted JSON path of the offending field; `$` for the event itself.
    pub field: String,
    /// What is wrong, in words a producer understands.
    pub reason: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for FieldError {}

/// Validates one event. `Ok` gives a typed view over the same JSON; `Err` lists every
/// problem found, in document order.
pub fn validate(value: &Value) -> Result<Event<'_>, Vec<FieldError>> {
    let mut v = Validator::default();
    let Some(root) = value.as_object() else {
        v.push("$", "an event must be a JSON object");
        return Err(v.errors);
    };
    // The allocation-free scan first: the walk that names each field builds paths.
    if has_nul(value) {
        v.no_nul("", value);
    }

    let event_id = v.required_str(root, "", "eventId").and_then(|id| {
        let chars = id.chars().count();
        if chars == 0 {
            v.push("eventId", "must not be empty");
            None
        } else if chars > MAX_EVENT_ID_CHARS {
            v.push(
                "eventId",
                format!("must be at most {MAX_EVENT_ID_CHARS} characters (has {chars})"),
            );
            None
        } else if id.chars().any(char::is_control) {
            // The id travels as the `Nats-Msg-Id` message header, which cannot carry
            // line breaks or other control characters.
            v.push(
                "eventId",
                "must not contain control characters (such as a line break)",
            );
            None
        } else {
            Some(id)
        }
    });
    let timestamp = v
        .required_str(root, "", "timestamp")
        .and_then(|s| v.date_time(s, "timestamp"));
    let source = v.required_str(root, "", "source").and_then(|s| {
        Source::parse(s).or_else(|| {
            v.push("source", one_of(&["facebook", "tiktok"], s));
            None
        })
    });
    let stage = v.required_str(root, "", "funnelStage").and_then(|s| {
        FunnelStage::parse(s).or_else(|| {
            v.push("funnelStage", one_of(&["top", "bottom"], s));
            None
        })
    });
    let event_type = v
        .required_str(root, "", "eventType")
        .and_then(|t| v.event_type(t, source, stage));

    let data = v.required_object(root, "", "data");
    if let Some(data) = data {
        if let Some(user) = v.required_object(data, "data", "user") {
            match source {
                Some(Source::Facebook) => v.facebook_user(user),
                Some(Source::Tiktok) => v.tiktok_user(user),
                None => {} // shape unknown without a valid source; `source` is reported
            }
        }
        if let Some(engagement) = v.required_object(data, "data", "engagement") {
            match (source, stage) {
                (Some(Source::Facebook), Some(FunnelStage::Top)) => v.facebook_top(engagement),
                (Some(Source::Facebook), Some(FunnelStage::Bottom)) => {
                    v.facebook_bottom(engagement)
                }
                (Some(Source::Tiktok), Some(FunnelStage::Top)) => v.tiktok_top(engagement),
                (Some(Source::Tiktok), Some(FunnelStage::Bottom)) => v.tiktok_bottom(engagement),
                _ => {}
            }
        }
    }

    match (event_id, timestamp, source, stage, event_type) {
        (Some(event_id), Some(timestamp), Some(source), Some(funnel_stage), Some(event_type))
            if v.errors.is_empty() =>
        {
            Ok(Event {
                event_id,
                timestamp,
                source,
                funnel_stage,
                event_type,
                json: value,
            })
        }
        _ => Err(v.errors),
    }
}

fn one_of(allowed: &[&str], got: &str) -> String {
    format!(
        "must be one of {} (got {})",
        allowed.join(", "),
        quoted(got)
    )
}

/// A value echoed in an error message, quoted, and cut after 64 characters so that a
/// 10,000-character value does not make a 10,000-character message.
fn quoted(s: &str) -> String {
    const SHOWN: usize = 64;
    match s.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("\"{}\"… ({} characters)", &s[..cut], s.chars().count()),
        None => format!("\"{s}\""),
    }
}

/// Whether a NUL is in any string or field name of `value`.
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<FieldError>,
}

/// Whether a field may be JSON `null` (or absent, which producers use for null).
#[derive(Clone, Copy, PartialEq)]
enum Null {
    Refused,
    Allowed,
}

impl Validator {
    fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            reason: reason.into(),
        });
    }

    /// The field's value, or `None` after reporting that it is missing. With
    /// `Null::Allowed`, absent and `null` both give `None` without an error.
    fn field<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        parent: &str,
        key: &str,
        null: Null,
    ) -> Option<&'v Value> {
        match (obj.get(key), null) {
            (None | Some(Value::Null), Null::Allowed) => None,
            (None, Null::Refused) => {
                self.push(path(parent, key), "is required");
                None
            }
            (Some(Value::Null), Null::Refused) => {
                self.push(path(parent, key), "must not be null");
                None
            }
            (Some(value), _) => Some(value),
        }
    }

    fn string<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        parent: &str,
        key: &str,
        null: Null,
    ) -> Option<&'v str> {
        let value = self.field(obj, parent, key, null)?;
        match value.as_str() {
            Some(s) => Some(s),
            None => {
                let expected = if null == Null::Allowed {
                    "must be a string or null"
                } else {
                    "must be a string"
                };
                self.push(
                    path(parent, key),
                    format!("{expected} (got {})", type_name(value)),
                );
                None
            }
        }
    }

    fn required_str<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        parent: &str,
        key: &str,
    ) -> Option<&'v str> {
        self.string(obj, parent, key, Null::Refused)
    }

    /// A required, non-empty string of at most `max` characters.
    fn non_empty_str(&mut self, obj: &Map<String, Value>, parent: &str, key: &str, max: usize) {
        if self.required_str(obj, parent, key) == Some("") {
            self.push(path(parent, key), "must not be empty");
        } else {
            self.at_most(obj, parent, key, max);
        }
    }

    /// A string (`null` allowed or not) of at most `max` characters.
    fn bounded_str(
        &mut self,
        obj: &Map<String, Value>,
        parent: &str,
        key: &str,
        null: Null,
        max: usize,
    ) {
        if self.string(obj, parent, key, null).is_some() {
            self.at_most(obj, parent, key, max);
        }
    }

    /// Reports a string field longer than `max` characters (Unicode scalar values).
    fn at_most(&mut self, obj: &Map<String, Value>, parent: &str, key: &str, max: usize) {
        if let Some(s) = obj.get(key).and_then(Value::as_str)
            && s.len() > max
        {
            let chars = s.chars().count();
            if chars > max {
                self.push(
                    path(parent, key),
                    format!("must be at most {max} characters (has {chars})"),
                );
            }
        }
    }

    fn enum_str(&mut self, obj: &Map<String, Value>, parent: &str, key: &str, allowed: &[&str]) {
        if let Some(s) = self.required_str(obj, parent, key)
            && !allowed.contains(&s)
        {
            self.push(path(parent, key), one_of(allowed, s));
        }
    }

    fn required_object<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        parent: &str,
        key: &str,
    ) -> Option<&'v Map<String, Value>> {
        let value = self.field(obj, parent, key, Null::Refused)?;
        match value.as_object() {
            Some(o) => Some(o),
            None => {
                self.push(
                    path(parent, key),
                    format!("must be an object (got {})", type_name(value)),
                );
                None
            }
        }
    }

    /// PostgreSQL refuses the NUL character in `text` and anywhere in `jsonb`, keys
    /// included, so it is refused wherever it appears: in a field (`key` is its path) or in
    /// its descendants and their names.
    fn no_nul(&mut self, field: &str, value: &Value) {
        const REASON: &str = "must not contain the NUL character (\\u0000)";
        match value {
            Value::String(s) if s.contains('\0') => self.push(field, REASON),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.no_nul(&format!("{field}[{i}]"), item);
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    // The envelope's `eventId` refuses every control character itself.
                    if field.is_empty() && key == "eventId" {
                        continue;
                    }
                    let field = path(field, &key.replace('\0', "\\u0000"));
                    if key.contains('\0') {
                        self.push(
                            &field,
                            "the field's name must not contain the NUL character",
                        );
                    }
                    self.no_nul(&field, item);
                }
            }
            _ => {}
        }
    }

    /// Parses an RFC 3339 date-time within the accepted window: from
    /// [`EARLIEST_EVENT_TIME`] to [`MAX_EVENT_TIME_AHEAD`] past now. Times outside it are
    /// far more likely a producer's bug than an event, and storage and the reports' bucket
    /// arithmetic need bounded times.
    fn date_time(&mut self, s: &str, field: &str) -> Option<OffsetDateTime> {
        match OffsetDateTime::parse(s, &Rfc3339) {
            Ok(t) => {
                let latest = OffsetDateTime::now_utc() + MAX_EVENT_TIME_AHEAD;
                if t < EARLIEST_EVENT_TIME || t > latest {
                    self.push(
                        field,
                        format!(
                            "must be between 2000-01-01T00:00:00Z and one day from now \
                             (got {})",
                            quoted(s)
                        ),
                    );
                    None
                } else {
                    Some(t)
                }
            }
            Err(_) => {
                self.push(
                    field,
                    format!(
                        "must be an RFC 3339 date-time with an offset or Z, such as \
                         2026-03-01T12:34:56.789Z (got {})",
                        quoted(s)
                    ),
                );
                None
            }
        }
    }

    fn date_time_field(&mut self, obj: &Map<String, Value>, parent: &str, key: &str) {
        if let Some(s) = self.required_str(obj, parent, key) {
            self.date_time(s, &path(parent, key));
        }
    }

    fn integer(&mut self, obj: &Map<String, Value>, parent: &str, key: &str, min: u64, max: u64) {
        let Some(value) = self.field(obj, parent, key, Null::Refused) else {
            return;
        };
        let field = path(parent, key);
        match (value.as_u64(), value.as_i64()) {
            (Some(n), _) if (min..=max).contains(&n) => {}
            (Some(_), _) | (None, Some(_)) if max == u64::MAX => {
                self.push(field, format!("must be at least {min}"))
            }
            (Some(_), _) | (None, Some(_)) => {
                self.push(field, format!("must be between {min} and {max}"))
            }
            _ => self.push(
                field,
                format!("must be an integer (got {})", describe_number(value)),
            ),
        }
    }

    fn number(&mut self, obj: &Map<String, Value>, parent: &str, key: &str, max: Option<f64>) {
        let Some(value) = self.field(obj, parent, key, Null::Refused) else {
            return;
        };
        let field = path(parent, key);
        match (value.as_f64(), max) {
            (None, _) => self.push(
                field,
                format!("must be a number (got {})", type_name(value)),
            ),
            (Some(n), Some(max)) if !(0.0..=max).contains(&n) => {
                self.push(field, format!("must be between 0 and {max}"))
            }
            (Some(n), None) if n < 0.0 => self.push(field, "must not be negative"),
            _ => {}
        }
    }

    fn amount(&mut self, obj: &Map<String, Value>, parent: &str, key: &str) {
        if let Some(s) = self.string(obj, parent, key, Null::Allowed)
            && let Err(e) = parse_amount(s)
        {
            self.push(path(parent, key), format!("{e} (got {})", quoted(s)));
        }
    }

    fn event_type<'v>(
        &mut self,
        t: &'v str,
        source: Option<Source>,
        stage: Option<FunnelStage>,
    ) -> Option<&'v str> {
        let Some(source) = source else {
            if !is_known_event_type(t) {
                self.push(
                    "eventType",
                    format!("{} is not an event type of any source", quoted(t)),
                );
            }
            return None;
        };
        match (stage_of(source, t), stage) {
            (None, _) => {
                let all: Vec<&str> = FunnelStage::ALL
                    .iter()
                    .flat_map(|&s| event_types(source, s).iter().copied())
                    .collect();
                self.push(
                    "eventType",
                    format!(
                        "must be a {source} event type: {} (got {})",
                        all.join(", "),
                        quoted(t)
                    ),
                );
                None
            }
            (Some(actual), Some(given)) if actual != given => {
                self.push(
                    "eventType",
                    format!(
                        "\"{t}\" is a {actual} event of {source}, but funnelStage is \"{given}\""
                    ),
                );
                None
            }
            (Some(_), _) => Some(t),
        }
    }

    fn facebook_user(&mut self, user: &Map<String, Value>) {
        let p = "data.user";
        self.non_empty_str(user, p, "userId", MAX_ID_CHARS);
        self.bounded_str(user, p, "name", Null::Refused, MAX_ID_CHARS);
        self.integer(user, p, "age", 0, 150);
        self.enum_str(user, p, "gender", &["male", "female", "non-binary"]);
        if let Some(location) = self.required_object(user, p, "location") {
            let p = "data.user.location";
            self.non_empty_str(location, p, "country", MAX_PLACE_CHARS);
            self.bounded_str(location, p, "city", Null::Refused, MAX_PLACE_CHARS);
        }
    }

    fn tiktok_user(&mut self, user: &Map<String, Value>) {
        let p = "data.user";
        self.non_empty_str(user, p, "userId", MAX_ID_CHARS);
        self.bounded_str(user, p, "username", Null::Refused, MAX_ID_CHARS);
        self.integer(user, p, "followers", 0, u64::MAX);
    }

    fn facebook_top(&mut self, e: &Map<String, Value>) {
        let p = "data.engagement";
        self.date_time_field(e, p, "actionTime");
        self.enum_str(e, p, "referrer", &["newsfeed", "marketplace", "groups"]);
        self.bounded_str(e, p, "videoId", Null::Allowed, MAX_ID_CHARS);
    }

    fn facebook_bottom(&mut self, e: &Map<String, Value>) {
        let p = "data.engagement";
        self.bounded_str(e, p, "adId", Null::Refused, MAX_ID_CHARS);
        self.non_empty_str(e, p, "campaignId", MAX_ID_CHARS);
        self.enum_str(
            e,
            p,
            "clickPosition",
            &["top_left", "bottom_right", "center"],
        );
        self.enum_str(e, p, "device", &["mobile", "desktop"]);
        self.enum_str(e, p, "browser", &["Chrome", "Firefox", "Safari"]);
        self.amount(e, p, "purchaseAmount");
    }

    fn tiktok_top(&mut self, e: &Map<String, Value>) {
        let p = "data.engagement";
        self.number(e, p, "watchTime", None);
        self.number(e, p, "percentageWatched", Some(100.0));
        self.enum_str(e, p, "device", &["Android", "iOS", "Desktop"]);
        self.non_empty_str(e, p, "country", MAX_PLACE_CHARS);
        self.bounded_str(e, p, "videoId", Null::Refused, MAX_ID_CHARS);
    }

    fn tiktok_bottom(&mut self, e: &Map<String, Value>) {
        let p = "data.engagement";
        self.date_time_field(e, p, "actionTime");
        self.bounded_str(e, p, "profileId", Null::Allowed, MAX_ID_CHARS);
        self.bounded_str(e, p, "purchasedItem", Null::Allowed, MAX_TEXT_CHARS);
        self.amount(e, p, "purchaseAmount");
    }
}

fn describe_number(value: &Value) -> String {
    match value {
        Value::Number(n) => format!("{n}"),
        other => type_name(other).to_owned(),
    }
}
