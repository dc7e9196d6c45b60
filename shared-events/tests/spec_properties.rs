//! Property tests over the whole spec: every generated valid event passes, and every
//! single-field corruption is rejected with the path of that field.
//!
//! One table per event shape drives both the generator and the corruptions, so the
//! two cannot drift apart.

use proptest::prelude::*;
use serde_json::{Value, json};
use shared_events::{
    FunnelStage, MAX_ID_CHARS, MAX_PLACE_CHARS, MAX_TEXT_CHARS, Source, event_types, validate,
};

/// What a field holds; strings with their most characters.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Id,
    Str(usize),
    NonEmpty(usize),
    NullableStr(usize),
    Enum(&'static [&'static str]),
    Int { max: Option<u64> },
    Num { max: Option<f64> },
    DateTime,
    Amount,
}

type Field = (&'static str, Kind);

fn fields(source: Source, stage: FunnelStage) -> Vec<Field> {
    let mut f: Vec<Field> = vec![("eventId", Kind::Id), ("timestamp", Kind::DateTime)];
    match source {
        Source::Facebook => f.extend([
            ("data.user.userId", Kind::NonEmpty(MAX_ID_CHARS)),
            ("data.user.name", Kind::Str(MAX_ID_CHARS)),
            ("data.user.age", Kind::Int { max: Some(150) }),
            (
                "data.user.gender",
                Kind::Enum(&["male", "female", "non-binary"]),
            ),
            (
                "data.user.location.country",
                Kind::NonEmpty(MAX_PLACE_CHARS),
            ),
            ("data.user.location.city", Kind::Str(MAX_PLACE_CHARS)),
        ]),
        Source::Tiktok => f.extend([
            ("data.user.userId", Kind::NonEmpty(MAX_ID_CHARS)),
            ("data.user.username", Kind::Str(MAX_ID_CHARS)),
            ("data.user.followers", Kind::Int { max: None }),
        ]),
    }
    match (source, stage) {
        (Source::Facebook, FunnelStage::Top) => f.extend([
            ("data.engagement.actionTime", Kind::DateTime),
            (
                "data.engagement.referrer",
                Kind::Enum(&["newsfeed", "marketplace", "groups"]),
            ),
            ("data.engagement.videoId", Kind::NullableStr(MAX_ID_CHARS)),
        ]),
        (Source::Facebook, FunnelStage::Bottom) => f.extend([
            ("data.engagement.adId", Kind::Str(MAX_ID_CHARS)),
            ("data.engagement.campaignId", Kind::NonEmpty(MAX_ID_CHARS)),
            (
                "data.engagement.clickPosition",
                Kind::Enum(&["top_left", "bottom_right", "center"]),
            ),
            ("data.engagement.device", Kind::Enum(&["mobile", "desktop"])),
            (
                "data.engagement.browser",
                Kind::Enum(&["Chrome", "Firefox", "Safari"]),
            ),
            ("data.engagement.purchaseAmount", Kind::Amount),
        ]),
        (Source::Tiktok, FunnelStage::Top) => f.extend([
            ("data.engagement.watchTime", Kind::Num { max: None }),
            (
                "data.engagement.percentageWatched",
                Kind::Num { max: Some(100.0) },
            ),
            (
                "data.engagement.device",
                Kind::Enum(&["Android", "iOS", "Desktop"]),
            ),
            ("data.engagement.country", Kind::NonEmpty(MAX_PLACE_CHARS)),
            ("data.engagement.videoId", Kind::Str(MAX_ID_CHARS)),
        ]),
        (Source::Tiktok, FunnelStage::Bottom) => f.extend([
            ("data.engagement.actionTime", Kind::DateTime),
            ("data.engagement.profileId", Kind::NullableStr(MAX_ID_CHARS)),
            (
                "data.engagement.purchasedItem",
                Kind::NullableStr(MAX_TEXT_CHARS),
            ),
            ("data.engagement.purchaseAmount", Kind::Amount),
        ]),
    }
    f
}

fn valid_value(kind: Kind) -> BoxedStrategy<Value> {
    match kind {
        Kind::Id => "[a-zA-Z0-9-]{1,64}".prop_map(Value::from).boxed(),
        // Up to the limit exactly, in characters of up to four bytes.
        Kind::Str(max) => prop_oneof![
            "[a-zA-Z ]{0,12}".prop_map(Value::from),
            Just(Value::from("é".repeat(max))),
        ]
        .boxed(),
        Kind::NonEmpty(max) => prop_oneof![
            "[a-zA-Z0-9-]{1,12}".prop_map(Value::from),
            Just(Value::from("😀".repeat(max))),
        ]
        .boxed(),
        Kind::NullableStr(_) => {
            prop_oneof![Just(Value::Null), "[a-z0-9-]{0,8}".prop_map(Value::from)].boxed()
        }
        Kind::Enum(values) => prop::sample::select(values).prop_map(Value::from).boxed(),
        Kind::Int { max } => (0..=max.unwrap_or(50_000_000))
            .prop_map(Value::from)
            .boxed(),
        Kind::Num { max } => (0.0..=max.unwrap_or(86_400.0))
            .prop_map(Value::from)
            .boxed(),
        Kind::DateTime => (
            // Every valid time is from 2000 to one day from now.
            2000u32..2026,
            1u32..=12,
            1u32..=28,
            0u32..24,
            0u32..60,
            0u32..60,
            0u32..1000,
            prop::sample::select(&["Z", "+02:00", "-05:30"][..]),
        )
            .prop_map(|(y, mo, d, h, mi, s, ms, off)| {
                Value::from(format!(
                    "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}{off}"
                ))
            })
            .boxed(),
        Kind::Amount => prop_oneof![
            Just(Value::Null),
            (0u64..100_000, 0u32..100).prop_map(|(a, c)| Value::from(format!("{a}.{c:02}"))),
            (0u64..100_000).prop_map(|a| Value::from(a.to_string())),
        ]
        .boxed(),
    }
}

/// Values that break a field of this kind; `None` stands for "remove the field".
fn corruptions(kind: Kind) -> Vec<Option<Value>> {
    let wrong_type = Some(json!(7));
    match kind {
        Kind::Id => vec![
            None,
            Some(json!("")),
            Some(Value::from("x".repeat(129))),
            Some(json!("a\nb")),
            Some(json!("a\u{0}b")),
            wrong_type,
        ],
        Kind::Str(max) => vec![
            None,
            Some(Value::Null),
            wrong_type,
            Some(json!({})),
            Some(Value::from("x".repeat(max + 1))),
            Some(json!("a\u{0}b")),
        ],
        Kind::NonEmpty(max) => vec![
            None,
            Some(json!("")),
            wrong_type,
            Some(Value::Null),
            Some(Value::from("😀".repeat(max + 1))),
            Some(Value::from("x".repeat(10_000))),
            Some(json!("a\u{0}b")),
        ],
        Kind::NullableStr(max) => vec![
            wrong_type,
            Some(json!(true)),
            Some(json!(["a"])),
            Some(Value::from("x".repeat(max + 1))),
            Some(json!("\u{0}")),
        ],
        Kind::Enum(_) => vec![None, Some(json!("bogus")), Some(json!("")), wrong_type],
        Kind::Int { max: Some(max) } => vec![
            None,
            Some(json!(-1)),
            Some(json!(max + 1)),
            Some(json!(31.5)),
            Some(json!("31")),
        ],
        Kind::Int { max: None } => vec![None, Some(json!(-1)), Some(json!(1.5)), Some(json!("5"))],
        Kind::Num { max: Some(_) } => {
            vec![
                None,
                Some(json!(-0.5)),
                Some(json!(100.5)),
                Some(json!("50")),
            ]
        }
        Kind::Num { max: None } => vec![None, Some(json!(-1)), Some(json!("3"))],
        Kind::DateTime => vec![
            None,
            Some(json!("2026-03-01")),
            Some(json!("2026-03-01 12:00:00")),
            Some(json!("2026-03-01T12:00:00")),
            Some(json!("yesterday")),
            wrong_type,
            Some(json!("0001-01-01T00:00:00+01:00")),
            Some(json!("1999-12-31T23:59:59.999Z")),
            Some(json!("2000-01-01T00:30:00+01:00")),
            Some(json!("9999-12-31T23:59:59-01:00")),
            Some(json!("9999-12-31T23:59:59Z")),
        ],
        Kind::Amount => vec![
            Some(json!("-1.00")),
            Some(json!("1e3")),
            Some(json!("12,50")),
            Some(json!(149.99)),
            Some(json!("9000000000000000000000000000")),
            Some(json!("1000000000000.01")),
        ],
    }
}

fn set(root: &mut Value, path: &str, value: Option<Value>) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap_or_default();
    let mut node = root;
    for p in parts {
        node = node
            .as_object_mut()
            .map(|o| o.entry(p).or_insert_with(|| json!({})))
            .unwrap_or_else(|| panic!("{path}: parent is not an object"));
    }
    let obj = node
        .as_object_mut()
        .unwrap_or_else(|| panic!("{path}: not an object"));
    match value {
        Some(v) => {
            obj.insert(last.to_owned(), v);
        }
        None => {
            obj.remove(last);
        }
    }
}

fn shape() -> impl Strategy<Value = (Source, FunnelStage)> {
    prop::sample::select(vec![
        (Source::Facebook, FunnelStage::Top),
        (Source::Facebook, FunnelStage::Bottom),
        (Source::Tiktok, FunnelStage::Top),
        (Source::Tiktok, FunnelStage::Bottom),
    ])
}

fn valid_event() -> impl Strategy<Value = (Value, Source, FunnelStage)> {
    shape().prop_flat_map(|(source, stage)| {
        let table = fields(source, stage);
        let values: Vec<_> = table.iter().map(|&(_, k)| valid_value(k)).collect();
        let event_type = prop::sample::select(event_types(source, stage));
        let extra = prop::option::of("[a-z]{1,6}");
        (values, event_type, extra).prop_map(move |(values, event_type, extra)| {
            let mut event = json!({
                "source": source.as_str(),
                "funnelStage": stage.as_str(),
                "eventType": event_type,
            });
            for ((path, _), v) in table.iter().zip(values) {
                set(&mut event, path, Some(v));
            }
            if let Some(extra) = extra {
                // Unknown fields at every level are allowed and kept.
                set(&mut event, "x_unknown_top", Some(json!(extra)));
                set(&mut event, "data.user.x_unknown", Some(json!([1, 2])));
            }
            (event, source, stage)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_generated_valid_event_passes((event, source, stage) in valid_event()) {
        let checked = validate(&event);
        prop_assert!(checked.is_ok(), "{event}: {checked:?}");
        let e = checked.unwrap_or_else(|_| unreachable!());
        prop_assert_eq!(e.source, source);
        prop_assert_eq!(e.funnel_stage, stage);
        prop_assert_eq!(e.json(), &event);
    }

    #[test]
    fn every_single_field_corruption_is_rejected_with_its_path(
        (event, source, stage) in valid_event(),
        pick in any::<prop::sample::Index>(),
        how in any::<prop::sample::Index>(),
    ) {
        let table = fields(source, stage);
        let (path, kind) = table[pick.index(table.len())];
        let options = corruptions(kind);
        let corruption = options[how.index(options.len())].clone();
        let mut broken = event.clone();
        set(&mut broken, path, corruption.clone());

        let errors = validate(&broken).err();
        prop_assert!(errors.is_some(), "{path} <- {corruption:?} accepted: {broken}");
        let errors = errors.unwrap_or_default();
        prop_assert!(
            errors.iter().any(|e| e.field == path),
            "{path} <- {corruption:?}: errors name other fields: {errors:?}"
        );
        prop_assert_eq!(errors.len(), 1, "one corruption, one error: {:?}", errors);
    }
}

#[test]
fn the_spec_examples_are_valid_and_give_their_derived_facts() {
    let checkout = json!({"eventId":"6c1f0a1e-2f43-4a57-9d0b-1c2d3e4f5a6b","timestamp":"2026-03-01T12:00:00.000Z",
        "source":"facebook","funnelStage":"bottom","eventType":"checkout.complete",
        "data":{"user":{"userId":"fb-u-1042","name":"Ada Park","age":31,"gender":"female",
                        "location":{"country":"Germany","city":"Berlin"}},
                "engagement":{"adId":"ad-77","campaignId":"cmp-12","clickPosition":"center",
                              "device":"mobile","browser":"Safari","purchaseAmount":"149.99"}}});
    let e = validate(&checkout).unwrap_or_else(|errs| panic!("{errs:?}"));
    assert_eq!(e.event_id, "6c1f0a1e-2f43-4a57-9d0b-1c2d3e4f5a6b");
    assert_eq!(e.user_id(), "fb-u-1042");
    assert_eq!(e.country(), Some("Germany"));
    assert_eq!(e.city(), Some("Berlin"));
    assert_eq!(e.campaign_id(), Some("cmp-12"));
    assert_eq!(e.revenue().map(|d| d.to_string()), Some("149.99".into()));
    assert_eq!(e.subject_suffix(), "facebook.checkout.complete");
    assert_eq!(e.unknown_fields(), None);

    let view = json!({"eventId":"0b7e9a52-8c1d-4f3e-a2b1-9e8d7c6b5a40","timestamp":"2026-03-01T12:00:05Z",
        "source":"tiktok","funnelStage":"top","eventType":"video.view",
        "data":{"user":{"userId":"tt-u-88","username":"skater88","followers":15230},
                "engagement":{"watchTime":42,"percentageWatched":87.5,"device":"iOS",
                              "country":"Brazil","videoId":"v-9001"}}});
    let e = validate(&view).unwrap_or_else(|errs| panic!("{errs:?}"));
    assert_eq!(e.country(), Some("Brazil"));
    assert_eq!(e.campaign_id(), None);
    assert_eq!(e.revenue(), None);
    assert_eq!(e.timestamp.unix_timestamp(), 1_772_366_405);
}

#[test]
fn only_purchases_with_an_amount_carry_revenue() {
    let tiktok = |event_type: &str, amount: Value| {
        json!({"eventId":"e","timestamp":"2026-03-01T12:00:05Z","source":"tiktok",
            "funnelStage":"bottom","eventType":event_type,
            "data":{"user":{"userId":"u","username":"n","followers":1},
                    "engagement":{"actionTime":"2026-03-01T12:00:05Z","profileId":null,
                                  "purchasedItem":null,"purchaseAmount":amount}}})
    };
    let revenue = |v: &Value| validate(v).map(|e| e.revenue().map(|d| d.to_string()));
    assert_eq!(
        revenue(&tiktok("purchase", json!("10.50"))),
        Ok(Some("10.50".into()))
    );
    assert_eq!(revenue(&tiktok("purchase", Value::Null)), Ok(None));
    assert_eq!(revenue(&tiktok("follow", json!("10.50"))), Ok(None));
    let e = tiktok("purchase", Value::Null);
    assert!(
        validate(&e)
            .map(|e| e.is_revenue_event() && e.country().is_none())
            .unwrap_or(false)
    );
}

#[test]
fn every_problem_of_an_event_is_listed_with_its_path() {
    let event = json!({"eventId":"","timestamp":"soon","source":"facebook","funnelStage":"top",
        "eventType":"ad.click",
        "data":{"user":{"userId":"u","name":"n","age":"old","gender":"x",
                        "location":{"country":"","city":"c"}},
                "engagement":{"referrer":"tv","videoId":null}}});
    let errors = validate(&event).err().unwrap_or_default();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "eventId",
            "timestamp",
            "eventType",
            "data.user.age",
            "data.user.gender",
            "data.user.location.country",
            "data.engagement.actionTime",
            "data.engagement.referrer",
        ]
    );
    assert!(
        errors[2].reason.contains("bottom event"),
        "{}",
        errors[2].reason
    );
    assert!(errors[3].reason.contains("integer"), "{}", errors[3].reason);
}

#[test]
fn stage_and_type_mismatches_and_wrong_roots_are_named() {
    let not_object = validate(&json!([1])).err().unwrap_or_default();
    assert_eq!(not_object[0].field, "$");
    let tiktok_type_on_facebook = json!({"eventId":"a","timestamp":"2026-03-01T12:00:05Z",
        "source":"facebook","funnelStage":"top","eventType":"share",
        "data":{"user":{},"engagement":{}}});
    let errors = validate(&tiktok_type_on_facebook).err().unwrap_or_default();
    assert_eq!(errors[0].field, "eventType");
    assert!(errors[0].reason.contains("facebook event type"));
    let no_data = json!({"eventId":"a","timestamp":"2026-03-01T12:00:05Z",
        "source":"snapchat","funnelStage":"top","eventType":"share"});
    let fields: Vec<String> = validate(&no_data)
        .err()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(fields, ["source", "data"]);
}

#[test]
fn a_nul_anywhere_is_named_unknown_fields_and_field_names_included() {
    let event = json!({"eventId":"e","timestamp":"2026-03-01T12:00:05Z","source":"tiktok",
        "funnelStage":"top","eventType":"like","note":"a\u{0}",
        "data":{"user":{"userId":"u","username":"n","followers":1,"tags":["ok","b\u{0}"]},
                "engagement":{"watchTime":1,"percentageWatched":5,"device":"iOS",
                              "country":"Chile","videoId":"v","x\u{0}y":1}}});
    let errors = validate(&event).err().unwrap_or_default();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["data.engagement.x\\u0000y", "data.user.tags[1]", "note"],
        "{errors:?}"
    );
    assert!(
        errors.iter().all(|e| e.reason.contains("NUL")),
        "{errors:?}"
    );
}

#[test]
fn a_long_value_is_quoted_short_in_the_error() {
    let long = "x".repeat(10_000);
    let event = json!({"eventId":"e","timestamp":long,"source":"tiktok",
        "funnelStage":"top","eventType":"like","data":{"user":{},"engagement":{}}});
    let errors = validate(&event).err().unwrap_or_default();
    assert_eq!(errors[0].field, "timestamp");
    assert!(errors[0].reason.len() < 300, "{}", errors[0].reason);
    assert!(
        errors[0].reason.contains("(10000 characters)"),
        "{}",
        errors[0].reason
    );
}
