//! `GET /docs/{path}`: the documents of a configured folder, read-only, so that the
//! source links under an answer open. Only plain relative paths inside the folder are
//! served; anything else is a 404.

use std::path::{Component, Path};

use axum::extract::{Path as UrlPath, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::{Error, Result};
use crate::state::AppState;

pub async fn file(
    State(state): State<AppState>,
    UrlPath(path): UrlPath<String>,
) -> Result<Response> {
    let not_found = || Error::NotFound {
        what: format!("document /docs/{path}"),
    };
    let Some(root) = state.config.docs_dir.as_deref() else {
        return Err(not_found());
    };
    let relative = Path::new(&path);
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(not_found());
    }
    let content_type = match relative.extension().and_then(|e| e.to_str()) {
        Some("md" | "markdown") => "text/markdown; charset=utf-8",
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        _ => return Err(not_found()),
    };
    let body = tokio::fs::read(root.join(relative))
        .await
        .map_err(|_| not_found())?;
    // as an uploaded file is served: a page in the folder never runs as the chat page's
    // origin, and nothing is sniffed into another type
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, "sandbox"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    Ok((headers, body).into_response())
}
