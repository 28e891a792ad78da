//! `GET /healthz` (the process answers), `GET /readyz` (it can serve: NATS connected,
//! streams and buckets present, a retrieval and an inference worker visible) and
//! `GET /metrics` (Prometheus text format).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cauce_nats::discovery;
use cauce_nats::names::{self, WorkerKind};
use serde_json::json;

use crate::state::AppState;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    match not_ready_reason(&state).await {
        None => (
            StatusCode::OK,
            Json(json!({"status": "ready", "gateway": state.config.id})),
        )
            .into_response(),
        Some(reason) => {
            tracing::debug!(reason, "not ready");
            let body = json!({"status": "not_ready", "reason": reason, "gateway": state.config.id});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

async fn not_ready_reason(state: &AppState) -> Option<String> {
    if state.shutting_down.is_cancelled() {
        return Some("the gateway is shutting down".into());
    }
    if state.client.connection_state() != async_nats::connection::State::Connected {
        return Some("not connected to NATS".into());
    }
    for stream in [names::QUESTIONS, names::PROMPTS] {
        if let Err(err) = state.js.get_stream(stream).await {
            return Some(format!("stream {stream} is not available: {err}"));
        }
    }
    for (kind, what) in [
        (WorkerKind::Retrieval, "retrieval"),
        (WorkerKind::Inference, "inference"),
    ] {
        match discovery::discover(&state.client, kind, state.config.discovery_wait).await {
            Ok(found) if found.is_empty() => return Some(format!("no {what} worker is running")),
            Ok(_) => {}
            Err(err) => return Some(format!("cannot look for {what} workers: {err}")),
        }
    }
    None
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let content_type = [(
        header::CONTENT_TYPE,
        "text/plain; version=0.0.4; charset=utf-8",
    )];
    (content_type, state.metrics.render()).into_response()
}
