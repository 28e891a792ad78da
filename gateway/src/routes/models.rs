//! `GET /v1/models`: the models that have at least one live inference worker, found
//! through the NATS service API.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use cauce_nats::discovery::{self, META_MODEL};
use cauce_nats::names::WorkerKind;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::state::AppState;

pub async fn list(State(state): State<AppState>) -> Result<Json<Value>> {
    let workers = discovery::discover(
        &state.client,
        WorkerKind::Inference,
        state.config.discovery_wait,
    )
    .await
    .map_err(|err| Error::nats("discover", err))?;
    let models: BTreeSet<&str> = workers
        .iter()
        .filter_map(|w| w.metadata(META_MODEL))
        .collect();
    let data: Vec<Value> = models
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "cauce"}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}
