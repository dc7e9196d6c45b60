//! The OpenAPI declarations of the routes [`super::routes`] serves, `/health/liveness`,
//! `/health/readiness` and `/metrics`, written once for every service's document.
//!
//! A service adds them with a modifier, and declares the `operations` tag itself (each
//! describes it in its own words):
//!
//! ```ignore
//! const OPERATIONS: Operations = Operations {
//!     ready_when: "200 only when the database is reachable and its schema current.",
//!     checks: &["database", "schema"],
//! };
//!
//! #[derive(OpenApi)]
//! #[openapi(modifiers(&OPERATIONS), tags((name = "operations", description = "...")))]
//! struct ApiDoc;
//! ```

// Documentation-only types: described, never constructed.
#![allow(dead_code)]

use serde_json::Value;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

/// What one service's readiness means: the parts of the operations routes' description
/// that differ between services. As a [`Modify`], it adds the three routes (tag
/// `operations`) and their schemas `Liveness`, `Readiness` and `ReadinessCheck`.
#[derive(Debug, Clone, Copy)]
pub struct Operations {
    /// The summary of `/health/readiness`: when it answers 200.
    pub ready_when: &'static str,
    /// The names its checks report ([`super::Check::name`]); the first is the example.
    pub checks: &'static [&'static str],
}

impl Modify for Operations {
    fn modify(&self, document: &mut Document) {
        let mut operations = Declarations::openapi();
        if let Some(get) = operations
            .paths
            .paths
            .get_mut("/health/readiness")
            .and_then(|item| item.get.as_mut())
        {
            get.summary = Some(self.ready_when.to_owned());
        }
        let check_name = operations
            .components
            .as_mut()
            .and_then(|components| components.schemas.get_mut("ReadinessCheck"))
            .and_then(|check| match check {
                RefOr::T(Schema::Object(check)) => check.properties.get_mut("name"),
                _ => None,
            });
        if let Some(RefOr::T(Schema::Object(name))) = check_name {
            name.description = Some(format!("{}.", one_of(self.checks)));
            name.example = self.checks.first().map(|first| Value::from(*first));
        }
        document.merge(operations);
    }
}

/// `a`, `b` or `c`: the names as code, joined as a sentence does.
fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

#[derive(OpenApi)]
#[openapi(
    paths(liveness, readiness, metrics),
    components(schemas(Liveness, Readiness, ReadinessCheck))
)]
struct Declarations;

/// The liveness answer.
#[derive(ToSchema)]
struct Liveness {
    #[schema(example = "alive")]
    status: String,
}

/// The readiness answer: every check, and why a failed one failed.
#[derive(ToSchema)]
struct Readiness {
    /// `ready` or `not_ready`.
    #[schema(example = "ready")]
    status: String,
    checks: Vec<ReadinessCheck>,
}

#[derive(ToSchema)]
struct ReadinessCheck {
    /// The check's name ([`Operations::checks`]).
    name: String,
    ready: bool,
    /// Why it is not ready; absent when ready.
    reason: Option<String>,
}

/// 200 while the process is up.
#[utoipa::path(
    get,
    path = "/health/liveness",
    tag = "operations",
    responses((status = 200, description = "The process is up", body = Liveness)),
)]
async fn liveness() {}

/// 200 only when every check passes ([`Operations::ready_when`]).
#[utoipa::path(
    get,
    path = "/health/readiness",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready; the body names what is missing", body = Readiness),
    ),
)]
async fn readiness() {}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain; version=0.0.4")),
)]
async fn metrics() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_as_a_sentence() {
        assert_eq!(one_of(&["nats"]), "`nats`");
        assert_eq!(one_of(&["nats", "stream"]), "`nats` or `stream`");
        assert_eq!(one_of(&["a", "b", "c"]), "`a`, `b` or `c`");
    }

    #[test]
    fn the_service_words_replace_the_placeholders() {
        let mut document = Document::default();
        Operations {
            ready_when: "200 only when NATS is connected.",
            checks: &["nats", "stream"],
        }
        .modify(&mut document);
        let json = serde_json::to_value(&document).unwrap_or_default();
        assert_eq!(
            json["paths"]["/health/readiness"]["get"]["summary"],
            "200 only when NATS is connected."
        );
        let name = &json["components"]["schemas"]["ReadinessCheck"]["properties"]["name"];
        assert_eq!(name["description"], "`nats` or `stream`.");
        assert_eq!(name["example"], "nats");
        for path in ["/health/liveness", "/metrics"] {
            assert_eq!(
                json["paths"][path]["get"]["tags"][0], "operations",
                "{path}"
            );
        }
    }
}
