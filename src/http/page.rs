//! The web page at `/` and the status page at `/status`: our own HTML, CSS and JS from `web/`, compiled into
//! the binary so it works offline and needs no files at run time.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const CHARTS_JS: &str = include_str!("../../web/charts.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");
const STATUS_HTML: &str = include_str!("../../web/status.html");
const STATUS_JS: &str = include_str!("../../web/status.js");

pub fn router() -> Router {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
        .route(
            "/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/charts.js",
            get(|| asset("text/javascript; charset=utf-8", CHARTS_JS)),
        )
        .route(
            "/style.css",
            get(|| asset("text/css; charset=utf-8", STYLE_CSS)),
        )
        .route(
            "/status",
            get(|| asset("text/html; charset=utf-8", STATUS_HTML)),
        )
        .route(
            "/status.js",
            get(|| asset("text/javascript; charset=utf-8", STATUS_JS)),
        )
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The page changes with the binary; let browsers revalidate.
            (header::CACHE_CONTROL, "no-cache"),
            // Our own scripts and styles only: payloads can never run as code.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}
