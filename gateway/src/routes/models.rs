//! `GET /v1/models`: the models that have at least one live inference worker, as the
//! background [`crate::view`] last found them through the NATS service API.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::state::AppState;

pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let view = state.view.snapshot();
    let data: Vec<Value> = view
        .models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "cauce"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}
