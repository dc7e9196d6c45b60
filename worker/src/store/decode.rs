//! Turning a message into a row: decode, validate again, derive the stored facts.

use super::{Rejection, Row};
use serde_json::Value;
use serde_json::value::RawValue;
use time::OffsetDateTime;

/// The paths of [`Row::demographics`] in `data`.
const DEMOGRAPHICS: [&[&str]; 5] = [
    &["user", "age"],
    &["user", "gender"],
    &["user", "location", "city"],
    &["user", "followers"],
    &["engagement", "device"],
];

/// The value at `path` as text, as PostgreSQL's `#>>` gives it: a string as is, a number
/// or boolean as its JSON text, null or absent as `None`.
fn text_at(data: &Value, path: &[&str]) -> Option<String> {
    let value = path.iter().try_fold(data, |v, key| v.get(key))?;
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Decodes and validates a message payload into a row. The same validation as at
/// ingestion runs again: anything published straight to the stream is checked too.
pub fn decode(payload: &[u8], ingested_at: Option<OffsetDateTime>) -> Result<Row, Rejection> {
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| Rejection::new("undecodable", format!("payload is not JSON: {e}")))?;
    let event = shared_events::validate(&value).map_err(|errors| {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.reason))
            .collect::<Vec<_>>()
            .join("; ");
        Rejection::new("invalid_event", detail)
    })?;
    Ok(Row {
        event_id: event.event_id.to_owned(),
        event_time: event.timestamp,
        source: event.source,
        funnel_stage: event.funnel_stage,
        event_type: event.event_type.to_owned(),
        user_id: event.user_id().to_owned(),
        data: data_text(payload).unwrap_or_else(|| event.data().to_string()),
        extra: event.unknown_fields().map(|m| Value::Object(m).to_string()),
        ingested_at,
        country: event.country().map(str::to_owned),
        campaign_id: event.campaign_id().map(str::to_owned),
        revenue: event.revenue(),
        demographics: DEMOGRAPHICS.map(|path| text_at(event.data(), path)),
    })
}

/// The `data` object's JSON text exactly as the producer sent it (PostgreSQL parses it
/// into the same JSONB as the parsed value's re-serialisation, and keeps numbers exactly as
/// written), found without building anything: writing the parsed `Value` back out cost
/// about a tenth of the worker's CPU. `None` when serde cannot borrow it (a repeated
/// `data` key, which the parsed value resolves to the last one); the caller then
/// re-serialises.
fn data_text(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        data: &'a RawValue,
    }
    serde_json::from_slice::<Envelope<'_>>(payload)
        .ok()
        .map(|e| e.data.get().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_event_decodes_with_its_unknown_fields() {
        let payload = br#"{"eventId":"e1","timestamp":"2026-03-01T12:00:05Z","source":"tiktok",
            "funnelStage":"top","eventType":"video.view","future":{"x":1},
            "data":{"user":{"userId":"u1","username":"n","followers":3,"badge":"gold"},
                    "engagement":{"watchTime":4,"percentageWatched":50,"device":"iOS",
                                  "country":"Brazil","videoId":"v"}}}"#;
        let row = decode(payload, None).unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(row.event_id, "e1");
        assert_eq!(row.user_id, "u1");
        assert_eq!(row.extra.as_deref(), Some(r#"{"future":{"x":1}}"#));
        assert!(row.data.contains(r#""badge":"gold""#));
    }

    #[test]
    fn data_is_stored_as_sent_and_a_repeated_data_key_resolves_to_the_last() {
        let event = |data: &str| {
            format!(
                r#"{{"eventId":"e1","timestamp":"2026-03-01T12:00:05Z","source":"tiktok",
                "funnelStage":"top","eventType":"video.view",{data}}}"#
            )
        };
        let data = r#"{"user":{"userId":"u1","username":"n","followers":3},
            "engagement":{"watchTime":4,"percentageWatched":50,"device":"iOS",
                          "country":"Brazil","videoId":"v","score":1.50,"big":123456789012345678901234}}"#;
        let row = decode(event(&format!(r#""data":{data}"#)).as_bytes(), None)
            .unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(
            row.data, data,
            "not re-serialised: numbers keep their digits"
        );

        let repeated = event(&format!(r#""data":{{"user":{{}}}},"data":{data}"#));
        let row = decode(repeated.as_bytes(), None).unwrap_or_else(|r| panic!("{r:?}"));
        assert!(row.data.contains(r#""userId":"u1""#), "{}", row.data);
        assert_eq!(row.user_id, "u1");
    }

    #[test]
    fn garbage_and_invalid_events_are_rejected_with_a_reason() {
        let r = decode(b"not json", None).err();
        assert_eq!(r.map(|r| r.reason), Some("undecodable"));
        let r = decode(br#"{"eventId":"e1"}"#, None).err();
        assert_eq!(r.as_ref().map(|r| r.reason), Some("invalid_event"));
        assert!(r.is_some_and(|r| r.detail.contains("timestamp: is required")));
    }
}
