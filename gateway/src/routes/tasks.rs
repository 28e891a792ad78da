//! The tasks API: ask now, collect later, from any gateway.
//!
//! - `POST /v1/tasks` takes a chat body, writes `queued` to `cauce-results`, queues the
//!   question and answers `202` with the task at once;
//! - `GET /v1/tasks/{id}` reads the task from `cauce-results` (so any gateway, also
//!   after a restart, can answer), with the `chat.completion` once it is done;
//! - `GET /v1/tasks/{id}/events` streams the remaining events as SSE (`sources`,
//!   `delta`, then `done` with the whole task, or `error`);
//! - `DELETE /v1/tasks/{id}` cancels it.

use std::convert::Infallible;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cauce_nats::wire::{self, ResultStatus, StoredResult};
use cauce_nats::{RequestId, Written};
use futures::{Stream, StreamExt, stream};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::openai::{ChatCompletionRequest, Head, completion, completion_id};
use crate::pending::{self, Pending, Step};
use crate::state::{AppState, Shared};
use crate::submit::{cancel as cancel_request, publish_question};
use crate::validate::{parse_json, validate};

pub async fn create(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let request: ChatCompletionRequest = parse_json(body, state.config.max_body_bytes)?;
    let valid = validate(request, &state.config)?;
    if state.shutting_down.is_cancelled() {
        return Err(Error::ShuttingDown);
    }
    state
        .admission
        .check_backlog(&state.js, &valid.model, &state.config.default_model)
        .await?;
    let id = RequestId::generate();
    let now_ms = wire::now_ms();
    let timeout_ms = state.config.request_timeout.as_millis() as u64;
    let request = valid.to_wire(id.clone(), state.config.id.clone(), now_ms, timeout_ms);
    let queued = StoredResult::queued(id.clone(), valid.model.clone(), now_ms);
    // queued is made first: a worker's `running` can only move it forward
    state
        .results
        .create(&queued, state.config.publish_timeout)
        .await?;
    if let Err(err) = publish_question(&state, &request, valid.cache).await {
        state.results.purge(&id).await;
        return Err(err);
    }
    tracing::info!(request_id = %id, model = %valid.model, "task accepted");
    Ok((StatusCode::ACCEPTED, Json(task_json(&queued))).into_response())
}

pub async fn status(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>> {
    let stored = read(&state, &id).await?;
    Ok(Json(task_json(&stored)))
}

pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>> {
    let mut stored = read(&state, &id).await?;
    if stored.status.is_final() {
        return Ok(Json(task_json(&stored)));
    }
    cancel_request(&state.client, &state.cancels, &stored.request_id, "api").await?;
    if stored.status == ResultStatus::Queued {
        // only if no worker has started it meanwhile; a running one reports the cancel
        let mut cancelled = stored.clone();
        cancelled.status = ResultStatus::Cancelled;
        cancelled.finish_reason = Some(wire::FinishReason::Cancelled);
        cancelled.finished_at_ms = wire::now_ms();
        let still_queued = |current: &StoredResult| current.status == ResultStatus::Queued;
        match state
            .results
            .advance_from(&cancelled, state.config.publish_timeout, still_queued)
            .await?
        {
            Written::Stored => stored = cancelled,
            Written::Refused(current) => stored = *current,
        }
    }
    Ok(Json(task_json(&stored)))
}

pub async fn events(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    let stored = read(&state, &id).await?;
    if stored.status.is_final() {
        let last = final_event(&stored);
        return Ok(Sse::new(stream::iter([Ok::<_, Infallible>(last)])).into_response());
    }
    let follower = pending::follow(
        &state,
        stored.request_id.clone(),
        stored.model.clone(),
        stored.created_at_ms,
    )
    .await?;
    // it may have ended between the read and the subscription
    let stored = read(&state, &id).await?;
    if stored.status.is_final() {
        let last = final_event(&stored);
        return Ok(Sse::new(stream::iter([Ok::<_, Infallible>(last)])).into_response());
    }
    let keep_alive = KeepAlive::new()
        .interval(state.config.keep_alive)
        .text("keep-alive");
    Ok(Sse::new(task_events(state, follower))
        .keep_alive(keep_alive)
        .into_response())
}

fn task_events(
    state: AppState,
    follower: Pending,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(Some((state, follower)), |current| async move {
        let (state, mut follower) = current?;
        let event = match follower.next().await? {
            Step::Sources(sources) => named("sources", json!({"sources": sources})),
            Step::Text(text) => named("delta", json!({"text": text})),
            Step::Done(_) => {
                let done = match read(&state, follower.id.as_str()).await {
                    Ok(stored) => final_event(&stored),
                    Err(err) => error_event(&err),
                };
                return Some((done, None));
            }
            Step::Failed(err) => return Some((error_event(&err), None)),
        };
        Some((event, Some((state, follower))))
    })
    .map(Ok)
}

fn named(name: &str, data: Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

fn error_event(error: &Error) -> Event {
    named(
        "error",
        serde_json::to_value(error.body()).unwrap_or_default(),
    )
}

fn final_event(stored: &StoredResult) -> Event {
    match stored.status {
        ResultStatus::Failed => named("error", task_json(stored)),
        _ => named("done", task_json(stored)),
    }
}

/// The task and its stored state, or `404` when there is no such task.
async fn read(state: &Shared, id: &str) -> Result<StoredResult> {
    let not_found = || Error::NotFound {
        what: format!("task {id:?}"),
    };
    let id = RequestId::parse(id).map_err(|_| not_found())?;
    state
        .results
        .get(&id)
        .await
        .map_err(|err| Error::nats("read task", err))?
        .ok_or_else(not_found)
}

/// What a client sees of a task.
pub fn task_json(stored: &StoredResult) -> Value {
    let created = stored.created_at_ms / 1000;
    let mut task = json!({
        "id": stored.request_id,
        "object": "task",
        "status": stored.status.as_str(),
        "model": stored.model,
        "created": created,
        "finished": (stored.finished_at_ms > 0).then_some(stored.finished_at_ms / 1000),
        "result": null,
        "error": null,
    });
    let has_answer = stored.status == ResultStatus::Done
        || (stored.status == ResultStatus::Cancelled && !stored.text.is_empty());
    if has_answer {
        let head = Head {
            id: completion_id(stored.request_id.as_str()),
            request_id: stored.request_id.to_string(),
            model: stored.model.to_string(),
            created,
        };
        let reason = stored.finish_reason.unwrap_or(wire::FinishReason::Stop);
        task["result"] = completion(&head, &stored.text, reason, stored.usage, &stored.sources);
    }
    if let Some(error) = &stored.error {
        task["error"] = json!({"code": error.kind.as_str(), "message": error.message});
    }
    task
}
