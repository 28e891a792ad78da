//! `POST /v1/search`: the sources a question would get, ranked, with scores, titles,
//! locations and snippets, and no model run. One retrieval worker answers it over NATS
//! ([`cauce_nats::search`]).

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use cauce_nats::search::{self, AskError};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::state::AppState;
use crate::validate::{SearchBody, parse_json, validate_search};

/// How long a search may take: searches are milliseconds, this only bounds a hung
/// worker.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn search(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<Value>> {
    let body: SearchBody = parse_json(body, state.config.max_body_bytes)?;
    let request = validate_search(body, &state.config)?;
    let answer = search::ask(&state.client, &request, SEARCH_TIMEOUT)
        .await
        .map_err(|err| match err {
            AskError::TimedOut(limit) => Error::DeadlineExceeded(limit),
            other => Error::SearchUnavailable {
                reason: other.to_string(),
            },
        })?;
    if let Some(error) = answer.error {
        return Err(Error::SearchUnavailable { reason: error });
    }
    let results: Vec<Value> = answer
        .hits
        .iter()
        .map(|hit| {
            json!({
                "rank": hit.source.number,
                "doc_id": hit.source.doc_id,
                "title": hit.source.title,
                "heading_path": hit.source.heading_path,
                "location": hit.source.location,
                "score": hit.source.score,
                "snippet": hit.snippet,
                "text": hit.text,
            })
        })
        .collect();
    Ok(Json(json!({
        "object": "search",
        "results": results,
        "indexed_passages": answer.indexed_passages,
    })))
}
