//! The OpenAPI 3 document of the service, generated from the handlers' `#[utoipa::path]`
//! annotations and response types, served at `/api/openapi.json` with Swagger UI at `/api`.
//!
//! The query-parameter types below only describe the parameters: the handlers read raw
//! pairs through [`crate::params::Params`], which refuses anything else (a unit test checks
//! every documented list against the list each handler accepts).

// Documentation-only types: described, never constructed.
#![allow(dead_code)]

use crate::format::Format;
use crate::routes;
use axum::Router;
use serde_json::Value;
use service_kit::health::openapi::Operations;
use shared_events::{FunnelStage, Source, event_types};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, Object, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Required};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Analytics API",
        description = "Read-only reports over the stored marketing events (`docs/api.md`). \
            Every report takes `from` and `to` (RFC 3339; the range `[from, to)` over the events' \
            own time; default the last 7 days). Unknown or repeated parameters are a 400. \
            Counts are integers, money is a decimal string with two places, ratios are numbers \
            in 0..=1. Every report also answers CSV (`format=csv`, or `Accept: text/csv`); \
            errors are JSON either way. When `ANALYTICS_API_KEY` is set, reports need `Authorization: Bearer <key>`; \
            health, metrics and this documentation stay open.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        routes::stats::stats,
        routes::timeseries::timeseries,
        routes::funnel::funnel,
        routes::geo::geo,
        routes::revenue::revenue,
        routes::campaigns::top,
        routes::users::top,
        routes::demographics::demographics,
    ),
    components(schemas(ErrorBody, ErrorInfo, ParameterProblem)),
    modifiers(&BearerAuth, &OPERATIONS),
    tags(
        (name = "reports", description = "Reports over the events' own time"),
        (name = "operations", description = "Health and metrics (never need a key)"),
    )
)]
struct ApiDoc;

/// `/health/*` and `/metrics`, declared once in service-kit for every service.
const OPERATIONS: Operations = Operations {
    ready_when: "200 only when the database is reachable and its schema current.",
    checks: &["database", "schema"],
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

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`ANALYTICS_API_KEY`; required only when the service has one set",
                    ))
                    .build(),
            ),
        );
    }
}

/// The error body of every endpoint: `{"error": {"code", "message", "details"}}`.
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: ErrorInfo,
}

#[derive(ToSchema)]
pub struct ErrorInfo {
    /// `invalid_parameter`, `unauthorized`, `rate_limited`, `request_timeout`,
    /// `unavailable` or `internal_error`.
    #[schema(example = "invalid_parameter")]
    pub code: String,
    /// A human sentence.
    #[schema(example = "one or more query parameters are invalid")]
    pub message: String,
    /// For `invalid_parameter`, every problem found (`ParameterProblem`); otherwise empty.
    #[schema(value_type = Vec<Object>, example = json!([{"field": "limit", "reason": "must be an integer from 1 to 1000 (got \"0\")"}]))]
    pub details: Vec<Value>,
}

/// One problem with the query parameters.
#[derive(ToSchema)]
pub struct ParameterProblem {
    /// The parameter's name.
    #[schema(example = "from")]
    pub field: String,
    #[schema(example = "must be earlier than to")]
    pub reason: String,
}

/// The error responses every report may give.
#[derive(IntoResponses)]
pub enum ReportErrors {
    /// A malformed, out-of-range, unknown or repeated parameter (`invalid_parameter`;
    /// `details` names every problem as `{"field", "reason"}`).
    #[response(status = 400)]
    InvalidParameter(ErrorBody),
    /// `ANALYTICS_API_KEY` is set and the bearer key is missing or wrong (`unauthorized`).
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The client (its API key, or its address when no key is set) made more requests per
    /// second than `ANALYTICS_RATE_LIMIT_PER_SEC` allows (`rate_limited`): retry after
    /// `Retry-After` seconds. Other clients are not affected.
    #[response(status = 429, headers(("Retry-After" = u32, description = "Seconds to wait before retrying")))]
    RateLimited(ErrorBody),
    /// The database is unreachable or the query timed out (`unavailable`); retry later.
    #[response(status = 503, headers(("Retry-After" = u32, description = "Seconds to wait before retrying")))]
    Unavailable(ErrorBody),
    /// A fault of the service, not of the request (`internal_error`); it logs the cause.
    #[response(status = 500)]
    Internal(ErrorBody),
}

/// A string from a closed list, with its default when absent.
fn choice(values: &[&str], default: Option<&str>) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .default(default.map(Value::from))
        .build()
}

/// A query parameter.
fn query(
    name: &str,
    description: &str,
    required: bool,
    schema: impl Into<RefOr<Schema>>,
) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .description(Some(description))
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .schema(Some(schema))
        .build()
}

/// An optional query parameter with an example value.
fn with_example(name: &str, description: &str, schema: ObjectBuilder, example: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .description(Some(description))
        .required(Required::False)
        .schema(Some(schema))
        .example(Some(Value::from(example)))
        .build()
}

fn source(description: &str, required: bool) -> Parameter {
    let names: Vec<&str> = Source::ALL.into_iter().map(Source::as_str).collect();
    query("source", description, required, choice(&names, None))
}

/// Every event type of either source (`docs/events.md`).
fn event_types_schema() -> Object {
    let mut names: Vec<&str> = Source::ALL
        .into_iter()
        .flat_map(|s| FunnelStage::ALL.into_iter().map(move |f| event_types(s, f)))
        .flatten()
        .copied()
        .collect();
    names.sort_unstable();
    names.dedup();
    choice(&names, None)
}

/// Documents a set of query parameters (the handlers read them through `Params`).
macro_rules! query_params {
    ($(#[$doc:meta])* $name:ident => $params:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl IntoParams for $name {
            fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
                $params
            }
        }
    };
}

fn time_param(name: &str, description: &str, example: &str) -> Parameter {
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)));
    with_example(name, description, schema, example)
}

query_params!(
    /// `from` and `to`, taken by every report.
    RangeQuery => vec![
        time_param(
            "from",
            "Start of the range (inclusive), RFC 3339 with any offset. Once converted to UTC \
             it must be from 0000-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z (the \
             instants RFC 3339 can write in UTC; answers give the range back in UTC), else \
             the answer is a 400 naming it. Default: `to` minus 7 days, but not before \
             0000-01-01T00:00:00Z.",
            "2026-03-01T00:00:00Z",
        ),
        time_param(
            "to",
            "End of the range (exclusive), RFC 3339 with any offset; in UTC within the same \
             bounds as `from`, and later than `from`. Default: now.",
            "2026-03-08T00:00:00Z",
        ),
    ]
);

query_params!(
    /// An optional `source` filter.
    SourceQuery => vec![source("Only events of this source.", false)]
);

query_params!(
    /// The required `source` of demographics.
    RequiredSourceQuery => vec![source(
        "Whose users to describe (required): the answer's shape depends on it.",
        true,
    )]
);

query_params!(
    /// `funnelStage` and `eventType` filters.
    StageTypeQuery => {
        let stages: Vec<&str> = FunnelStage::ALL.into_iter().map(FunnelStage::as_str).collect();
        vec![
            query("funnelStage", "Only events of this funnel stage.", false, choice(&stages, None)),
            query(
                "eventType",
                "Only events of this type (any event type of `docs/events.md`).",
                false,
                event_types_schema(),
            ),
        ]
    }
);

query_params!(
    /// `limit` of a top-N list.
    LimitQuery => vec![query(
        "limit",
        "How many rows at most.",
        false,
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(1000))
            .default(Some(Value::from(10))),
    )]
);

query_params!(
    /// `interval` of the time series.
    IntervalQuery => vec![query(
        "interval",
        "Bucket size: minutes, hours or days of the `tz` zone's local time (UTC-aligned \
         with the default `tz`); a range of more than 10,000 buckets is a 400.",
        false,
        choice(&["minute", "hour", "day"], Some("hour")),
    )]
);

query_params!(
    /// `format`, taken by every report.
    FormatQuery => vec![query(
        "format",
        "The answer's format: `json` or `csv` (`text/csv; charset=utf-8`, a download named \
         after the report; its columns are in `docs/api.md`, \"CSV export\"). Absent, the \
         `Accept` header chooses: CSV when it gives `text/csv` a higher quality than \
         `application/json`, JSON otherwise (no header, `*/*`, a tie). Given, it overrides \
         `Accept`. Errors are JSON either way.",
        false,
        choice(&Format::NAMES, None),
    )]
);

query_params!(
    /// `tz` of the time series.
    TzQuery => vec![with_example(
        "tz",
        "IANA time zone whose local days and hours are the buckets; any ASCII case. A day \
         runs from local midnight to the next (23 or 25 hours on a DST change); an hour \
         repeated by a fall-back is two buckets, one per offset. The zone database is \
         compiled into the service. An unknown name is a 400 naming `tz`, and so is a range \
         in which the zone's offset is not a whole number of minutes (local mean time, such \
         as Africa/Monrovia before 1972); a range whose local times fall outside years \
         0000 to 9999 is a 400 naming `from` or `to`.",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .default(Some(Value::from("UTC"))),
        "Europe/Berlin",
    )]
);

query_params!(
    /// `campaignId` of the revenue report.
    CampaignQuery => vec![with_example(
        "campaignId",
        "Only this (Facebook) campaign's revenue; non-empty.",
        ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)),
        "cmp-12",
    )]
);

query_params!(
    /// `by` of the top campaigns.
    CampaignOrderQuery => vec![query(
        "by",
        "The figure to rank by.",
        false,
        choice(&["revenue", "events"], Some("revenue")),
    )]
);

query_params!(
    /// `by` of the top users.
    UserOrderQuery => vec![query(
        "by",
        "The figure to rank by.",
        false,
        choice(&["events", "revenue"], Some("events")),
    )]
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The documented parameters of every report are exactly those its handler accepts.
    #[test]
    fn documented_parameters_match_the_handlers() {
        let doc = serde_json::to_value(openapi()).unwrap_or_default();
        let reports: &[(&str, &[&str])] = &[
            ("/analytics/stats", routes::stats::PARAMS),
            ("/analytics/timeseries", routes::timeseries::PARAMS),
            ("/analytics/funnel", routes::funnel::PARAMS),
            ("/analytics/geo", routes::geo::PARAMS),
            ("/analytics/revenue", routes::revenue::PARAMS),
            ("/analytics/campaigns/top", routes::campaigns::PARAMS),
            ("/analytics/users/top", routes::users::PARAMS),
            ("/analytics/demographics", routes::demographics::PARAMS),
        ];
        for (path, accepted) in reports {
            let documented: BTreeSet<String> = doc["paths"][path]["get"]["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter_map(|p| p["name"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let accepted: BTreeSet<String> = accepted.iter().map(|s| s.to_string()).collect();
            assert_eq!(documented, accepted, "{path}");
        }
    }

    #[test]
    fn event_types_are_listed_once_each() {
        let schema = serde_json::to_value(event_types_schema()).unwrap_or_default();
        let names = schema["enum"].as_array().cloned().unwrap_or_default();
        assert!(names.contains(&Value::from("checkout.complete")));
        assert!(names.contains(&Value::from("purchase")));
        let unique: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
        assert_eq!(unique.len(), names.len());
    }
}
