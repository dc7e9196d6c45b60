//! Validation of one event against the spec, collecting every problem with its path.
//!
//! Validation walks a `serde_json::Value` rather than deserialising into structs: serde
//! stops at the first wrong type, and producers need the whole list (`data.user.age`,
//! `data.engagement.device`, ...) to fix an event in one go.

use crate::event::Event;
use crate::money::parse_amount;
use crate::spec::{FunnelStage, Source, event_types, is_known_event_type, stage_of};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `eventId` is at most this many characters (Unicode scalar values).
pub const MAX_EVENT_ID_CHARS: usize = 128;

/// One problem of one event: where it is (`data.user.age`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted JSON path of the offending field; `$` for the event itself.
    pub field: String,
    /// What is wrong, in words a producer understands.
    pub reason: String,
}

/// Validates one event. `Ok` gives a typed view over the same JSON; `Err` lists every
/// problem found, in document order.
pub fn validate(value: &Value) -> Result<Event<'_>, Vec<FieldError>> {
    let mut v = Validator::default();
    let Some(root) = value.as_object() else {
        v.push("$", "an event must be a JSON object");
        return Err(v.errors);
    };

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
    format!("must be one of {} (got \"{got}\")", allowed.join(", "))
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

    fn non_empty_str(&mut self, obj: &Map<String, Value>, parent: &str, key: &str) {
        if self.required_str(obj, parent, key) == Some("") {
            self.push(path(parent, key), "must not be empty");
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

    fn date_time(&mut self, s: &str, field: &str) -> Option<OffsetDateTime> {
        match OffsetDateTime::parse(s, &Rfc3339) {
            Ok(t) => Some(t),
            Err(_) => {
                self.push(
                    field,
                    format!(
                        "must be an RFC 3339 date-time with an offset or Z, such as \
                         2026-03-01T12:34:56.789Z (got \"{s}\")"
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
            self.push(path(parent, key), format!("{e} (got \"{s}\")"));
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
                    format!("\"{t}\" is not an event type of any source"),
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
                        "must be a {source} event type: {} (got \"{t}\")",
                        all.join(", ")
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
        self.non_empty_str(user, p, "userId");
        self.required_str(user, p, "name");
        self.integer(user, p, "age", 0, 150);
        self.enum_str(user, p, "gender", &["male", "female", "non-binary"]);
        if let Some(location) = self.required_object(user, p, "location") {
            let p = "data.user.location";
            self.non_empty_str(location, p, "country");
            self.required_str(location, p, "city");
        }
    }

    fn tiktok_user(&mut self, user: &Map<String, Value>) {
        let p = "data.user";
        self.non_empty_str(user, p, "userId");
        self.required_str(user, p, "username");
        self.integer(user, p, "followers", 0, u64::MAX);
    }

    fn facebook_top(&mut self, e: &Map<String, Value>) {
        let p = "data.engagement";
        self.date_time_field(e, p, "actionTime");
        self.enum_str(e, p, "referrer", &["newsfeed", "marketplace", "groups"]);
        self.string(e, p, "videoId", Null::Allowed);
    }

    fn facebook_bottom(&mut self, e: &Map<String, Value>) {
        let p = "data.engagement";
        self.required_str(e, p, "adId");
        self.non_empty_str(e, p, "campaignId");
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
        self.non_empty_str(e, p, "country");
        self.required_str(e, p, "videoId");
    }

    fn tiktok_bottom(&mut self, e: &Map<String, Value>) {
        let p = "data.engagement";
        self.date_time_field(e, p, "actionTime");
        self.string(e, p, "profileId", Null::Allowed);
        self.string(e, p, "purchasedItem", Null::Allowed);
        self.amount(e, p, "purchaseAmount");
    }
}

fn describe_number(value: &Value) -> String {
    match value {
        Value::Number(n) => format!("{n}"),
        other => type_name(other).to_owned(),
    }
}
