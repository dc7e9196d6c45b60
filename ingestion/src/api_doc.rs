//! The OpenAPI 3 document of the service, generated from the handler's `#[utoipa::path]`
//! annotation and the types below, served at `/api/openapi.json` with Swagger UI at `/api`.
//!
//! The event types here only describe `docs/events.md` for readers of the document; the one
//! implementation of the spec stays `shared_events::validate`.

// Documentation-only types: described, never constructed.
#![allow(dead_code)]

use crate::routes::webhook;
use axum::Router;
use serde::Serialize;
use serde_json::Value;
use service_kit::health::openapi::Operations;
use shared_events::{FunnelStage, Source, event_types};
use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi, PartialSchema, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ingestion API",
        description = "Webhook receiving Facebook and TikTok marketing events (`docs/events.md`). \
            A 202 means every event of the request is durably stored in JetStream and will be \
            stored in the database exactly once; any 503 means nothing can be relied on and the \
            whole request should be retried (re-sent events are deduplicated by `eventId`).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(webhook::receive),
    components(schemas(
        ErrorBody,
        ErrorInfo,
        ValidationProblem,
        Event,
        EventData,
        User,
        FacebookUser,
        Location,
        TiktokUser,
        Engagement,
        FacebookTopEngagement,
        FacebookBottomEngagement,
        TiktokTopEngagement,
        TiktokBottomEngagement,
    )),
    modifiers(&WebhookAlias, &OPERATIONS),
    tags(
        (name = "webhook", description = "Receiving events"),
        (name = "operations", description = "Health and metrics"),
    )
)]
struct ApiDoc;

/// `/health/*` and `/metrics`, declared once in service-kit for every service.
const OPERATIONS: Operations = Operations {
    ready_when: "200 only when NATS is connected and the stream present and verified.",
    checks: &["nats", "stream"],
};

/// The generated document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `/api` (Swagger UI, compiled into the binary) and `/api/openapi.json`.
pub fn routes() -> Router {
    // `/api` redirects to `/api/`, which serves the UI; its assets are under `/api/`.
    SwaggerUi::new("/api").url(OPENAPI_PATH, openapi()).into()
}

/// `POST /webhook` is the same endpoint as `POST /webhook/event`.
struct WebhookAlias;

impl Modify for WebhookAlias {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(mut item) = openapi.paths.paths.get("/webhook/event").cloned() else {
            return;
        };
        if let Some(post) = item.post.as_mut() {
            post.operation_id = Some("receiveAlias".into());
            post.summary = Some("Alias of POST /webhook/event.".into());
        }
        openapi.paths.paths.insert("/webhook".into(), item);
    }
}

/// The body of every error: `{"error": {"code", "message", "details"}}`.
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: ErrorInfo,
}

#[derive(ToSchema)]
pub struct ErrorInfo {
    /// `malformed_json`, `unauthorized`, `request_timeout`, `payload_too_large`,
    /// `unsupported_media_type`, `batch_size`, `validation_failed`, `rate_limited`,
    /// `internal_error` or `unavailable`.
    #[schema(example = "validation_failed")]
    pub code: String,
    /// A human sentence.
    #[schema(example = "1 problem(s) found in 1 event(s); nothing was accepted")]
    pub message: String,
    /// For `validation_failed`, every problem of every event (`ValidationProblem`); for a
    /// `payload_too_large` event, `[{"index"}]`; otherwise empty.
    #[schema(value_type = Vec<Object>, example = json!([{"index": 0, "eventId": "6c1f0a1e", "field": "data.user.age", "reason": "must be an integer from 0 to 150"}]))]
    pub details: Vec<Value>,
}

/// One problem of one event.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ValidationProblem {
    /// Position of the event in the request (0 for a single event).
    pub index: usize,
    /// The event's `eventId` when it is a string of at most 128 characters; else null.
    pub event_id: Option<String>,
    /// JSON path of the field.
    #[schema(example = "data.user.age")]
    pub field: String,
    #[schema(example = "must be an integer from 0 to 150")]
    pub reason: String,
}

/// Every answer but a 202.
#[derive(IntoResponses)]
pub enum WebhookErrors {
    /// The body is not JSON, or not an object or array (`malformed_json`).
    #[response(status = 400, headers(("X-Correlation-ID" = String, description = "The request's correlation id")))]
    MalformedJson(ErrorBody),
    /// `WEBHOOK_SECRET` is set and the signature (either scheme) is missing, matches no
    /// secret, or its timestamp is more than 5 minutes from now (`unauthorized`).
    #[response(status = 401, headers(("X-Correlation-ID" = String, description = "The request's correlation id")))]
    Unauthorized(ErrorBody),
    /// The body is over `HTTP_MAX_BODY_BYTES` (default 2 MiB), or one event is over the broker's
    /// message limit (`payload_too_large`; `details: [{"index"}]`).
    #[response(status = 413, headers(("X-Correlation-ID" = String, description = "The request's correlation id")))]
    PayloadTooLarge(ErrorBody),
    /// `Content-Type` is not `application/json` (`unsupported_media_type`).
    #[response(status = 415, headers(("X-Correlation-ID" = String, description = "The request's correlation id")))]
    UnsupportedMediaType(ErrorBody),
    /// An empty array or more than 1000 events (`batch_size`), or one or more invalid events
    /// (`validation_failed`, `details` listing every problem of every event as
    /// `ValidationProblem`); nothing of the request is published.
    #[response(status = 422, headers(("X-Correlation-ID" = String, description = "The request's correlation id")))]
    Unprocessable(ErrorBody),
    /// The producer (its signing key, or its address when requests are not signed) is over
    /// its quota of events or body bytes per second (`RATE_LIMIT_EVENTS_PER_SEC`,
    /// `RATE_LIMIT_BYTES_PER_SEC`; `rate_limited`): retry after `Retry-After` seconds. Other
    /// producers are not affected.
    #[response(status = 429, headers(
        ("Retry-After" = u32, description = "Seconds to wait before retrying"),
        ("X-Correlation-ID" = String, description = "The request's correlation id"),
    ))]
    RateLimited(ErrorBody),
    /// JetStream is unavailable, a PubAck did not arrive in time, or the stream is full; or
    /// the request was not answered within `HTTP_REQUEST_TIMEOUT`, or the service is at
    /// `HTTP_MAX_CONNECTIONS` (`unavailable`): retry the whole request (duplicates are
    /// dropped by `eventId`).
    #[response(status = 503, headers(
        ("Retry-After" = u32, description = "Seconds to wait before retrying"),
        ("X-Correlation-ID" = String, description = "The request's correlation id"),
    ))]
    Unavailable(ErrorBody),
    /// The body did not arrive within `HTTP_BODY_TIMEOUT` (`request_timeout`); the
    /// connection is closed. Send the request again.
    #[response(status = 408)]
    RequestTimeout(ErrorBody),
    /// A fault of the service, not of the request (`internal_error`); it logs the cause.
    #[response(status = 500, headers(("X-Correlation-ID" = String, description = "The request's correlation id")))]
    Internal(ErrorBody),
}

/// A string from a closed list.
fn choice(values: &[&str]) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

fn source_schema() -> Object {
    let names: Vec<&str> = Source::ALL.into_iter().map(Source::as_str).collect();
    choice(&names)
}

fn funnel_stage_schema() -> Object {
    let names: Vec<&str> = FunnelStage::ALL
        .into_iter()
        .map(FunnelStage::as_str)
        .collect();
    choice(&names)
}

/// Every event type of either source; which are valid depends on `source` and `funnelStage`.
fn event_type_schema() -> Object {
    let mut names: Vec<&str> = Source::ALL
        .into_iter()
        .flat_map(|s| FunnelStage::ALL.into_iter().map(move |f| event_types(s, f)))
        .flatten()
        .copied()
        .collect();
    names.sort_unstable();
    names.dedup();
    choice(&names)
}

fn gender_schema() -> Object {
    choice(&["male", "female", "non-binary"])
}
fn referrer_schema() -> Object {
    choice(&["newsfeed", "marketplace", "groups"])
}
fn click_position_schema() -> Object {
    choice(&["top_left", "bottom_right", "center"])
}
fn facebook_device_schema() -> Object {
    choice(&["mobile", "desktop"])
}
fn browser_schema() -> Object {
    choice(&["Chrome", "Firefox", "Safari"])
}
fn tiktok_device_schema() -> Object {
    choice(&["Android", "iOS", "Desktop"])
}

/// One marketing event (`docs/events.md`). Unknown extra fields are allowed and kept.
///
/// Facebook event types: top = `ad.view`, `page.like`, `comment`, `video.view`; bottom =
/// `ad.click`, `form.submission`, `checkout.complete`. TikTok: top = `video.view`, `like`,
/// `share`, `comment`; bottom = `profile.visit`, `purchase`, `follow`. `eventType` must be one
/// of the source's types for the stage given, and `data` the source's shapes for that stage.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "eventId": "6c1f0a1e-2f43-4a57-9d0b-1c2d3e4f5a6b", "timestamp": "2026-03-01T12:00:00.000Z",
    "source": "facebook", "funnelStage": "bottom", "eventType": "checkout.complete",
    "data": {"user": {"userId": "fb-u-1042", "name": "Ada Park", "age": 31, "gender": "female",
                      "location": {"country": "Germany", "city": "Berlin"}},
             "engagement": {"adId": "ad-77", "campaignId": "cmp-12", "clickPosition": "center",
                            "device": "mobile", "browser": "Safari", "purchaseAmount": "149.99"}}
}))]
pub struct Event {
    /// The identity used for deduplication.
    #[schema(min_length = 1, max_length = 128)]
    pub event_id: String,
    /// When the event happened: RFC 3339 with an offset or `Z`.
    #[schema(format = DateTime)]
    pub timestamp: String,
    #[schema(schema_with = source_schema)]
    pub source: String,
    #[schema(schema_with = funnel_stage_schema)]
    pub funnel_stage: String,
    #[schema(schema_with = event_type_schema)]
    pub event_type: String,
    pub data: EventData,
}

/// The source's user shape and its engagement shape for the funnel stage.
#[derive(Serialize, ToSchema)]
pub struct EventData {
    pub user: User,
    pub engagement: Engagement,
}

#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum User {
    Facebook(FacebookUser),
    Tiktok(TiktokUser),
}

#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Engagement {
    FacebookTop(FacebookTopEngagement),
    FacebookBottom(FacebookBottomEngagement),
    TiktokTop(TiktokTopEngagement),
    TiktokBottom(TiktokBottomEngagement),
}

/// `data.user` of a Facebook event.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FacebookUser {
    #[schema(min_length = 1)]
    pub user_id: String,
    pub name: String,
    #[schema(minimum = 0, maximum = 150)]
    pub age: u8,
    #[schema(schema_with = gender_schema)]
    pub gender: String,
    pub location: Location,
}

#[derive(Serialize, ToSchema)]
pub struct Location {
    #[schema(min_length = 1)]
    pub country: String,
    pub city: String,
}

/// `data.engagement` of a Facebook top event.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FacebookTopEngagement {
    #[schema(format = DateTime)]
    pub action_time: String,
    #[schema(schema_with = referrer_schema)]
    pub referrer: String,
    pub video_id: Option<String>,
}

/// `data.engagement` of a Facebook bottom event.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FacebookBottomEngagement {
    pub ad_id: String,
    #[schema(min_length = 1)]
    pub campaign_id: String,
    #[schema(schema_with = click_position_schema)]
    pub click_position: String,
    #[schema(schema_with = facebook_device_schema)]
    pub device: String,
    #[schema(schema_with = browser_schema)]
    pub browser: String,
    /// A non-negative decimal string such as `"149.99"`.
    #[schema(example = "149.99")]
    pub purchase_amount: Option<String>,
}

/// `data.user` of a TikTok event.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TiktokUser {
    #[schema(min_length = 1)]
    pub user_id: String,
    pub username: String,
    #[schema(minimum = 0)]
    pub followers: u64,
}

/// `data.engagement` of a TikTok top event.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TiktokTopEngagement {
    /// Seconds.
    #[schema(minimum = 0)]
    pub watch_time: f64,
    #[schema(minimum = 0, maximum = 100)]
    pub percentage_watched: f64,
    #[schema(schema_with = tiktok_device_schema)]
    pub device: String,
    #[schema(min_length = 1)]
    pub country: String,
    pub video_id: String,
}

/// `data.engagement` of a TikTok bottom event.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TiktokBottomEngagement {
    #[schema(format = DateTime)]
    pub action_time: String,
    pub profile_id: Option<String>,
    pub purchased_item: Option<String>,
    /// A non-negative decimal string such as `"149.99"`.
    #[schema(example = "149.99")]
    pub purchase_amount: Option<String>,
}

/// The request body: one event, or an array of 1 to 1000.
pub struct EventBody;

impl PartialSchema for EventBody {
    fn schema() -> RefOr<Schema> {
        let event = || Ref::from_schema_name(Event::name());
        OneOfBuilder::new()
            .description(Some("One event, or an array of 1 to 1000 events."))
            .item(event())
            .item(
                ArrayBuilder::new()
                    .items(event())
                    .min_items(Some(1))
                    .max_items(Some(webhook::MAX_BATCH)),
            )
            .into()
    }
}

impl ToSchema for EventBody {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Event::name().into(), Event::schema()));
        Event::schemas(schemas);
    }
}
