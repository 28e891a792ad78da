//! `GET /healthz` (the process answers), `GET /readyz` (it can serve: NATS connected,
//! streams present, a retrieval and an inference worker visible, all read from the
//! background [`crate::view`]) and
//! `GET /metrics` (Prometheus text format).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth;
use crate::state::AppState;
use crate::view::Snapshot;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    let view = state.view.snapshot();
    let age_ms = view.age().map(|age| age.as_millis() as u64);
    let view_json = json!({"rounds": view.rounds, "age_ms": age_ms});
    match not_ready_reason(&state, &view) {
        None => {
            let body = json!({"status": "ready", "gateway": state.config.id, "view": view_json});
            (StatusCode::OK, Json(body)).into_response()
        }
        Some(reason) => {
            tracing::debug!(reason, "not ready");
            let body = json!({"status": "not_ready", "reason": reason, "gateway": state.config.id, "view": view_json});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// Decided from the process itself and the background view: no NATS round trip.
fn not_ready_reason(state: &AppState, view: &Snapshot) -> Option<String> {
    if state.shutting_down.is_cancelled() {
        return Some("the gateway is shutting down".into());
    }
    if state.client.connection_state() != async_nats::connection::State::Connected {
        return Some("not connected to NATS".into());
    }
    if view.rounds == 0 {
        return Some("looking for workers for the first time".into());
    }
    view.not_ready.clone()
}

pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(err) = auth::may_read_metrics(&state, auth::bearer_of(&headers)) {
        return err.into_response();
    }
    let content_type = [(
        header::CONTENT_TYPE,
        "text/plain; version=0.0.4; charset=utf-8",
    )];
    let workers = cauce_nats::metrics::render(&state.view.snapshot().worker_metrics);
    (content_type, state.metrics.render() + &workers).into_response()
}
