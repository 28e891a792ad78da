//! `GET /`: the chat page, one HTML file with its CSS and JavaScript inline, built into
//! the binary so that it needs no CDN and no build step.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("../page/index.html");

pub async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}
