//! `POST /v1/chat/completions`: OpenAI's chat API, streamed as SSE or answered whole.
//!
//! A stream sends the role chunk at once, the sources in a chunk's `cauce` extension
//! field before the first token, content chunks, a chunk with the finish reason, the
//! usage chunk when `stream_options.include_usage` asks for it, then `data: [DONE]`.
//! Comments keep the connection alive while the request waits in the queue. An error
//! after the stream started is sent as an `{"error": …}` object and ends the stream.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt, stream};

use crate::error::{Error, Result};
use crate::openai::{ChatCompletionRequest, ChunkWriter, Head, completion, completion_id};
use crate::pending::{self, Pending, Step};
use crate::state::AppState;
use crate::validate::{parse_json, validate};

/// Response header carrying the request id, for support and logs.
pub const REQUEST_ID: &str = "x-request-id";

pub async fn completions(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let request: ChatCompletionRequest = parse_json(body, state.config.max_body_bytes)?;
    let valid = validate(request, &state.config)?;
    let pending = pending::accept(&state, &valid).await?;
    let head = head_of(&pending);
    let request_id = HeaderValue::from_str(pending.id.as_str()).ok();
    let mut response = if valid.stream {
        let writer = ChunkWriter {
            head,
            include_usage: valid.include_usage,
        };
        let keep_alive = KeepAlive::new()
            .interval(state.config.keep_alive)
            .text("keep-alive");
        Sse::new(chunks(pending, writer))
            .keep_alive(keep_alive)
            .into_response()
    } else {
        whole(pending, head).await?
    };
    if let Some(request_id) = request_id {
        response.headers_mut().insert(REQUEST_ID, request_id);
    }
    Ok(response)
}

pub fn head_of(pending: &Pending) -> Head {
    Head {
        id: completion_id(pending.id.as_str()),
        request_id: pending.id.to_string(),
        model: pending.model.to_string(),
        created: pending.created_ms / 1000,
    }
}

fn data(json: String) -> Event {
    Event::default().data(json)
}

/// The SSE events of one streamed answer.
fn chunks(pending: Pending, writer: ChunkWriter) -> impl Stream<Item = Result<Event, Infallible>> {
    let first = stream::iter([data(writer.role())]);
    let rest = stream::unfold(Some((pending, writer)), |state| async move {
        let (mut pending, writer) = state?;
        let step = pending.next().await?;
        let (events, more) = match step {
            Step::Sources(sources) => (vec![data(writer.sources(&sources))], true),
            Step::Text(text) => (vec![data(writer.content(&text))], true),
            Step::Done(finish) => {
                let mut events = vec![data(
                    writer.finish_with(finish.finish_reason, finish.cached),
                )];
                if writer.include_usage {
                    events.push(data(writer.usage(finish.usage)));
                }
                events.push(Event::default().data("[DONE]"));
                (events, false)
            }
            Step::Failed(error) => {
                let body = serde_json::to_string(&error.body()).unwrap_or_default();
                (vec![data(body)], false)
            }
        };
        // the request ended: drop it (and its slot) before the last events go out
        let next = more.then_some((pending, writer));
        Some((stream::iter(events), next))
    });
    first.chain(rest.flatten()).map(Ok)
}

/// Waits for the whole answer and returns one `chat.completion`.
async fn whole(mut pending: Pending, head: Head) -> Result<Response> {
    loop {
        match pending.next().await {
            Some(Step::Sources(_) | Step::Text(_)) => {}
            Some(Step::Done(finish)) => {
                let mut body = completion(
                    &head,
                    pending.text(),
                    finish.finish_reason,
                    finish.usage,
                    pending.sources(),
                );
                if finish.cached {
                    body["cauce"]["cached"] = true.into();
                }
                return Ok(axum::Json(body).into_response());
            }
            Some(Step::Failed(error)) => return Err(error),
            None => {
                return Err(Error::nats(
                    "relay",
                    "the reply stream ended without a result",
                ));
            }
        }
    }
}
