//! Every rule of docs/events.md, broken one at a time, and batches with bad events.

use crate::helpers::{Options, TS, assert_error, fb_top, spawn_app};
use serde_json::{Value, json};
use testkit::events;

/// How a case breaks a valid event.
enum Change {
    /// Sets the value at this JSON pointer.
    Set(&'static str, Value),
    /// Removes the field at this JSON pointer.
    Remove(&'static str),
}

struct Case {
    name: &'static str,
    base: fn(&str) -> Value,
    change: Change,
    /// The field path the 422 must name.
    field: &'static str,
}

fn fb_bottom(id: &str) -> Value {
    testkit::facebook_bottom(id, TS, "fb-u-1", Some("149.99"))
}
fn tt_top(id: &str) -> Value {
    testkit::tiktok_top(id, TS, "tt-u-1", "Brazil")
}
fn tt_bottom(id: &str) -> Value {
    testkit::tiktok_bottom(id, TS, "tt-u-1", Some("9.99"))
}

fn cases() -> Vec<Case> {
    use Change::{Remove, Set};
    let case = |name, base, change, field| Case {
        name,
        base,
        change,
        field,
    };
    vec![
        case("missing eventId", fb_top, Remove("/eventId"), "eventId"),
        case(
            "empty eventId",
            fb_top,
            Set("/eventId", json!("")),
            "eventId",
        ),
        case(
            "eventId of 129 chars",
            fb_top,
            Set("/eventId", json!("e".repeat(129))),
            "eventId",
        ),
        case(
            "timestamp without offset",
            fb_top,
            Set("/timestamp", json!("2026-03-01T12:00:00")),
            "timestamp",
        ),
        case(
            "unknown source",
            fb_top,
            Set("/source", json!("instagram")),
            "source",
        ),
        case(
            "unknown funnelStage",
            fb_top,
            Set("/funnelStage", json!("middle")),
            "funnelStage",
        ),
        case(
            "eventType of the other source",
            fb_top,
            Set("/eventType", json!("share")),
            "eventType",
        ),
        case(
            "eventType of the other stage",
            fb_top,
            Set("/eventType", json!("ad.click")),
            "eventType",
        ),
        case("missing data", fb_top, Remove("/data"), "data"),
        case(
            "data.user not an object",
            fb_top,
            Set("/data/user", json!("fb-u-1")),
            "data.user",
        ),
        case(
            "facebook age as a string",
            fb_top,
            Set("/data/user/age", json!("31")),
            "data.user.age",
        ),
        case(
            "facebook age of 151",
            fb_top,
            Set("/data/user/age", json!(151)),
            "data.user.age",
        ),
        case(
            "facebook age of -1",
            fb_top,
            Set("/data/user/age", json!(-1)),
            "data.user.age",
        ),
        case(
            "facebook age of 31.5",
            fb_top,
            Set("/data/user/age", json!(31.5)),
            "data.user.age",
        ),
        case(
            "unknown gender",
            fb_top,
            Set("/data/user/gender", json!("robot")),
            "data.user.gender",
        ),
        case(
            "empty location.country",
            fb_top,
            Set("/data/user/location/country", json!("")),
            "data.user.location.country",
        ),
        case(
            "unknown referrer",
            fb_top,
            Set("/data/engagement/referrer", json!("television")),
            "data.engagement.referrer",
        ),
        case(
            "actionTime not a date-time",
            fb_top,
            Set("/data/engagement/actionTime", json!("yesterday")),
            "data.engagement.actionTime",
        ),
        case(
            "empty campaignId",
            fb_bottom,
            Set("/data/engagement/campaignId", json!("")),
            "data.engagement.campaignId",
        ),
        case(
            "unknown clickPosition",
            fb_bottom,
            Set("/data/engagement/clickPosition", json!("middle")),
            "data.engagement.clickPosition",
        ),
        case(
            "unknown facebook device",
            fb_bottom,
            Set("/data/engagement/device", json!("tablet")),
            "data.engagement.device",
        ),
        case(
            "unknown browser",
            fb_bottom,
            Set("/data/engagement/browser", json!("Edge")),
            "data.engagement.browser",
        ),
        case(
            "negative purchaseAmount",
            fb_bottom,
            Set("/data/engagement/purchaseAmount", json!("-1")),
            "data.engagement.purchaseAmount",
        ),
        case(
            "purchaseAmount with an exponent",
            fb_bottom,
            Set("/data/engagement/purchaseAmount", json!("1e3")),
            "data.engagement.purchaseAmount",
        ),
        case(
            "purchaseAmount as a number",
            fb_bottom,
            Set("/data/engagement/purchaseAmount", json!(149.99)),
            "data.engagement.purchaseAmount",
        ),
        case(
            "negative tiktok followers",
            tt_top,
            Set("/data/user/followers", json!(-1)),
            "data.user.followers",
        ),
        case(
            "negative watchTime",
            tt_top,
            Set("/data/engagement/watchTime", json!(-0.5)),
            "data.engagement.watchTime",
        ),
        case(
            "percentageWatched of 101",
            tt_top,
            Set("/data/engagement/percentageWatched", json!(101)),
            "data.engagement.percentageWatched",
        ),
        case(
            "unknown tiktok device",
            tt_top,
            Set("/data/engagement/device", json!("mobile")),
            "data.engagement.device",
        ),
        case(
            "missing tiktok country",
            tt_top,
            Remove("/data/engagement/country"),
            "data.engagement.country",
        ),
        case(
            "profileId as a number",
            tt_bottom,
            Set("/data/engagement/profileId", json!(42)),
            "data.engagement.profileId",
        ),
    ]
}

fn apply(event: &mut Value, change: &Change) {
    let (pointer, value) = match change {
        Change::Set(p, v) => (*p, Some(v.clone())),
        Change::Remove(p) => (*p, None),
    };
    let (parent, key) = pointer.rsplit_once('/').expect("a JSON pointer");
    let parent = event
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("{pointer} has a parent object"));
    match value {
        Some(v) => parent.insert(key.to_owned(), v),
        None => parent.remove(key),
    };
}

#[tokio::test]
async fn webhook_returns_422_naming_the_field_for_every_broken_rule() {
    let app = spawn_app(Options::default()).await;
    let mut failures = Vec::new();
    let all = cases();
    for case in &all {
        let mut event = (case.base)(&format!("case-{}", case.name.replace(' ', "-")));
        apply(&mut event, &case.change);
        let response = app.post_json(&event).await;
        let status = response.status().as_u16();
        let body = crate::helpers::body_json(response).await;
        let details = body["error"]["details"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // The id is echoed when it is a string short enough to be one (docs/api.md).
        let expected_id = event
            .get("eventId")
            .filter(|id| id.as_str().is_some_and(|id| id.chars().count() <= 128))
            .cloned()
            .unwrap_or(Value::Null);
        let problem = if status != 422 {
            Some(format!("status {status}"))
        } else if body["error"]["code"] != "validation_failed" {
            Some("code is not validation_failed".to_owned())
        } else if details.is_empty() {
            Some("no details".to_owned())
        } else {
            // Every detail names the broken field, the event's index and id, and a reason.
            details
                .iter()
                .find(|d| {
                    d["field"] != case.field
                        || d["index"] != 0
                        || d["eventId"] != expected_id
                        || d["reason"].as_str().is_none_or(str::is_empty)
                })
                .map(|d| format!("unexpected detail {d}"))
        };
        if let Some(problem) = problem {
            failures.push(format!("{}: {problem}; body {body}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
    assert_eq!(app.stored_event_count().await, 0, "nothing was published");
}

#[tokio::test]
async fn one_bad_event_in_a_batch_of_five_publishes_nothing_and_names_its_index() {
    let app = spawn_app(Options::default()).await;
    let mut batch = events("batch", 0..5);
    batch[3]["data"]["user"]["followers"] = json!("many");
    let response = app.post_json(&Value::Array(batch)).await;
    let details = assert_error(response, 422, "validation_failed").await;
    assert_eq!(
        details,
        vec![
            json!({"index": 3, "eventId": "batch-3", "field": "data.user.followers",
                    "reason": details[0]["reason"]})
        ],
    );
    assert!(details[0]["reason"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(app.stored_event_count().await, 0);
}

#[tokio::test]
async fn a_batch_with_several_problems_lists_every_problem_of_every_event() {
    let app = spawn_app(Options::default()).await;
    let mut batch = events("multi", 0..4);
    // Event 0: two problems.
    batch[0]["data"]["user"]["age"] = json!(200);
    batch[0]["data"]["engagement"]["referrer"] = json!("radio");
    // Event 1 stays valid. Event 2: one problem. Event 3: two problems.
    batch[2]["data"]["engagement"]["percentageWatched"] = json!(-3);
    batch[3]["eventId"] = json!("");
    batch[3]["timestamp"] = json!("not a time");
    let response = app.post_json(&Value::Array(batch)).await;
    let details = assert_error(response, 422, "validation_failed").await;
    let mut found: Vec<(u64, Value, String)> = details
        .iter()
        .map(|d| {
            (
                d["index"].as_u64().expect("index"),
                d["eventId"].clone(),
                d["field"].as_str().expect("field").to_owned(),
            )
        })
        .collect();
    found.sort_by(|a, b| (a.0, &a.2).cmp(&(b.0, &b.2)));
    assert_eq!(
        found,
        vec![
            (0, json!("multi-0"), "data.engagement.referrer".to_owned()),
            (0, json!("multi-0"), "data.user.age".to_owned()),
            (
                2,
                json!("multi-2"),
                "data.engagement.percentageWatched".to_owned()
            ),
            (3, json!(""), "eventId".to_owned()),
            (3, json!(""), "timestamp".to_owned()),
        ],
        "{details:?}"
    );
    assert_eq!(app.stored_event_count().await, 0);
}

#[tokio::test]
async fn an_event_without_id_is_reported_with_a_null_event_id() {
    let app = spawn_app(Options::default()).await;
    let mut event = fb_top("x");
    event.as_object_mut().expect("object").remove("eventId");
    let details = assert_error(app.post_json(&event).await, 422, "validation_failed").await;
    assert_eq!(details.len(), 1, "{details:?}");
    assert_eq!(details[0]["eventId"], Value::Null);
    assert_eq!(details[0]["field"], "eventId");
}

#[tokio::test]
async fn an_event_id_with_a_line_break_is_refused_with_422_instead_of_dropping_the_connection() {
    let app = spawn_app(Options::default()).await;
    let batch = json!([
        fb_top("fine-1"),
        fb_top("evil\r\nX-Injected: 1"),
        fb_top("lf\nid")
    ]);
    let details = assert_error(app.post_json(&batch).await, 422, "validation_failed").await;
    let found: Vec<(Value, Value, Value)> = details
        .iter()
        .map(|d| (d["index"].clone(), d["eventId"].clone(), d["field"].clone()))
        .collect();
    assert_eq!(
        found,
        vec![
            (json!(1), json!("evil\r\nX-Injected: 1"), json!("eventId")),
            (json!(2), json!("lf\nid"), json!("eventId")),
        ]
    );
    assert_eq!(app.stored_event_count().await, 0);
    // The service is still fine.
    assert_eq!(app.post_json(&fb_top("after-1")).await.status(), 202);
}
