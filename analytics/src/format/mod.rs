//! How a report is written: JSON, or CSV for spreadsheets (`docs/api.md`, "CSV export").
//!
//! A handler reads the client's choice with [`Accept`] and `Params::format`, computes its
//! answer as before, and returns it as a [`Report`], which writes either form. Each answer
//! type says once how it flattens into a table ([`Table`], in `tables`), so the handlers do
//! not know CSV exists. Errors are `ApiError`s, written as JSON whatever was asked: a
//! client must be able to read why it got no table.

mod negotiate;
mod table;
mod tables;

pub use table::{Cell, Rows, Table};

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::HeaderValue;
use axum::http::header::{ACCEPT, CONTENT_DISPOSITION, CONTENT_TYPE, VARY};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::convert::Infallible;

/// The two ways a report can be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    /// The values of the `format` parameter, default first.
    pub const NAMES: [&'static str; 2] = ["json", "csv"];

    /// A value of [`Format::NAMES`].
    pub fn parse(name: &str) -> Option<Format> {
        match name {
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// The format the request's `Accept` header prefers (JSON unless it prefers `text/csv`);
/// an explicit `format` parameter overrides it (`Params::format`).
#[derive(Debug, Clone, Copy)]
pub struct Accept(pub Format);

impl<S: Send + Sync> FromRequestParts<S> for Accept {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Several `Accept` fields are one list; a field that is not text says nothing.
        let fields = parts
            .headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok());
        Ok(Accept(negotiate::preferred(fields)))
    }
}

/// A report's answer in the format the client chose.
#[derive(Debug)]
pub struct Report<T> {
    format: Format,
    body: T,
}

impl<T> Report<T> {
    pub fn new(format: Format, body: T) -> Report<T> {
        Report { format, body }
    }
}

impl<T: Serialize + Table> IntoResponse for Report<T> {
    fn into_response(self) -> Response {
        let mut response = match self.format {
            Format::Json => Json(self.body).into_response(),
            Format::Csv => {
                let mut response = table::render(&self.body).into_response();
                let headers = response.headers_mut();
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/csv; charset=utf-8"),
                );
                // Every name is a constant of ASCII letters and dashes (a unit test
                // checks), so the value is always valid.
                if let Ok(value) =
                    HeaderValue::try_from(format!("attachment; filename=\"{}.csv\"", T::NAME))
                {
                    headers.insert(CONTENT_DISPOSITION, value);
                }
                response
            }
        };
        // The same URL answers JSON or CSV by `Accept`: a cache must key on it.
        response
            .headers_mut()
            .append(VARY, HeaderValue::from_name(ACCEPT));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderName;

    struct Pair;

    impl Serialize for Pair {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serde_json::json!({"a": "x", "b": 1}).serialize(s)
        }
    }

    impl Table for Pair {
        const NAME: &'static str = "pairs";
        const HEADER: &'static [&'static str] = &["a", "b"];
        fn rows(&self, rows: &mut Rows) {
            rows.push(&[Cell::Text("x"), Cell::Int(1)]);
        }
    }

    fn header(r: &Response, name: HeaderName) -> Option<&str> {
        r.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn csv_answers_are_attachments_named_after_the_report() {
        let r = Report::new(Format::Csv, Pair).into_response();
        assert_eq!(header(&r, CONTENT_TYPE), Some("text/csv; charset=utf-8"));
        assert_eq!(
            header(&r, CONTENT_DISPOSITION),
            Some("attachment; filename=\"pairs.csv\"")
        );
        assert_eq!(header(&r, VARY), Some("accept"));
    }

    #[test]
    fn json_answers_are_unchanged_but_vary_by_accept() {
        let r = Report::new(Format::Json, Pair).into_response();
        assert_eq!(header(&r, CONTENT_TYPE), Some("application/json"));
        assert_eq!(header(&r, CONTENT_DISPOSITION), None);
        assert_eq!(header(&r, VARY), Some("accept"));
    }
}
