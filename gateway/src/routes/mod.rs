//! The HTTP routes, one file each, and the router that joins them with the
//! middleware: request metrics on everything, API keys and the rate limit on `/v1`, the
//! body limit, and OpenAI-style `404`/`405` bodies.

mod chat;
mod docs;
mod documents;
mod health;
mod models;
mod page;
mod search;
mod tasks;

use axum::extract::{DefaultBodyLimit, Request};
use axum::routing::{get, post};
use axum::{Router, middleware};

use crate::error::Error;
use crate::state::AppState;
use crate::{auth, telemetry};

pub use chat::REQUEST_ID;

/// Every route of the gateway.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/tasks", post(tasks::create))
        .route("/v1/tasks/{id}", get(tasks::status).delete(tasks::cancel))
        .route("/v1/tasks/{id}/events", get(tasks::events))
        .route("/v1/models", get(models::list))
        .route("/v1/search", post(search::search))
        .route(
            "/v1/documents",
            get(documents::list)
                .post(documents::upload)
                .layer(DefaultBodyLimit::max(state.config.max_upload_bytes)),
        )
        .route(
            "/v1/documents/{id}",
            get(documents::get).delete(documents::delete),
        )
        .route("/v1/documents/{id}/content", get(documents::content))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::guard));
    let public = Router::new()
        .route("/", get(page::index))
        .route("/assets/{name}", get(page::asset))
        .route("/docs/{*path}", get(docs::file))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics));
    api.merge(public)
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn(telemetry::track))
        .with_state(state)
}

async fn unknown_route(request: Request) -> Error {
    Error::UnknownRoute {
        method: request.method().to_string(),
        path: request.uri().path().to_string(),
    }
}

async fn method_not_allowed(request: Request) -> Error {
    Error::MethodNotAllowed {
        method: request.method().to_string(),
        path: request.uri().path().to_string(),
    }
}
