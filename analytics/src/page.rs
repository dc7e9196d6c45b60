//! The reports page (`GET /`): one static page and its assets, compiled into the binary
//! so that it needs no CDN and no internet. The page calls the public report API of the
//! host that served it, with the API key its reader types in; serving it needs no key.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;

/// Only this host's own scripts, styles and API: the page can send no request elsewhere
/// and runs no inline script, so a value from an event cannot become code even if it
/// slipped into the markup. `style-src` allows the inline widths of bars and of the chart,
/// which the page sets through the DOM.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                      img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                      form-action 'self'; frame-ancestors 'none'";

/// A file of the page: its path, media type and bytes.
struct Asset {
    path: &'static str,
    media_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        media_type: "text/html; charset=utf-8",
        body: include_bytes!("../ui/index.html"),
    },
    Asset {
        path: "/ui/app.js",
        media_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/app.js"),
    },
    Asset {
        path: "/ui/app.css",
        media_type: "text/css; charset=utf-8",
        body: include_bytes!("../ui/app.css"),
    },
    Asset {
        path: "/ui/favicon.svg",
        media_type: "image/svg+xml",
        body: include_bytes!("../ui/favicon.svg"),
    },
    // uPlot 1.6.32, MIT: see ui/vendor/uplot/README.md for its origin and checksums.
    Asset {
        path: "/ui/vendor/uplot/uPlot.iife.min.js",
        media_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/vendor/uplot/uPlot.iife.min.js"),
    },
    Asset {
        path: "/ui/vendor/uplot/uPlot.min.css",
        media_type: "text/css; charset=utf-8",
        body: include_bytes!("../ui/vendor/uplot/uPlot.min.css"),
    },
    Asset {
        path: "/ui/vendor/uplot/LICENSE",
        media_type: "text/plain; charset=utf-8",
        body: include_bytes!("../ui/vendor/uplot/LICENSE"),
    },
];

/// The page's routes; they sit outside the API key check, as the page holds no data.
pub fn routes() -> Router {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(asset.path, get(move || serve(asset)))
    })
}

async fn serve(asset: &'static Asset) -> impl IntoResponse {
    let headers: [(HeaderName, HeaderValue); 4] = [
        (CONTENT_TYPE, HeaderValue::from_static(asset.media_type)),
        (CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
        // The assets change only with the binary; a short cache still lets an upgrade
        // show within a minute.
        (
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        ),
        (
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        ),
    ];
    (headers, asset.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_links_is_served() {
        let page = std::str::from_utf8(ASSETS[0].body).unwrap_or_default();
        for link in page
            .split(['"', '\''])
            .filter(|part| part.starts_with("/ui/"))
        {
            assert!(
                ASSETS.iter().any(|a| a.path == link),
                "index.html links {link}, which is not served"
            );
        }
    }

    #[test]
    fn the_policy_allows_no_other_origin() {
        for directive in POLICY.split(';') {
            assert!(
                !directive.contains("http") && !directive.contains('*'),
                "{directive} names another origin"
            );
        }
    }
}
