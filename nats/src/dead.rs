//! Dead letters: questions and prompt jobs that JetStream gave up on.
//!
//! No worker writes them: the server itself publishes an advisory when a message
//! exhausts its deliveries (`MAX_DELIVERIES`) or a worker terminates it
//! (`MSG_TERMINATED`), and the [`DEAD`](crate::names::DEAD) stream captures the
//! advisories of cauce's consumers. An advisory names the stream sequence of the
//! original message, which stays in `QUESTIONS` or `PROMPTS` until it ages out, so an
//! operator can read it and replay it once the cause is fixed.
//!
//! Every accepted request ends visibly: [`notify`] (run by every retrieval worker, which
//! consumed the question or wrote the prompt job, sharing the durable consumer
//! [`DEAD_NOTIFY_CONSUMER`](names::DEAD_NOTIFY_CONSUMER), so each dead letter is handled
//! once and survives a worker restart; no gateway reads a prompt job) reads the original message's
//! headers (request id and owning gateway), moves the request's record to `failed`
//! with a stable reason unless it has ended already, and only then publishes the
//! `error` event to the reply subject, so a client still waiting learns how it ended.

use std::time::Duration;

use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::WireError;
use crate::ids::{GatewayId, ModelName, RequestId};
use crate::names;
use crate::results::{Results, Written};
use crate::wire::{self, ErrorKind, Event, EventBody, StoredError, StoredResult};

/// The attempt number of the `error` event a dead letter sends: every delivery is over
/// by then, so it is later than any attempt a relay has seen.
pub const DEAD_LETTER_ATTEMPT: u32 = u32::MAX;
/// How long one dead letter's record write is retried before it is handed back.
const WRITE_LIMIT: Duration = Duration::from_secs(10);

/// Why a message became a dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeadReason {
    /// Delivered `deliveries` times without an ack (workers crashed or timed out).
    MaxDeliveries { deliveries: u64 },
    /// A worker terminated it, for the reason given when the server knows one.
    Terminated { reason: Option<String> },
}

impl DeadReason {
    /// A stable snake_case label.
    pub fn kind(&self) -> &'static str {
        match self {
            DeadReason::MaxDeliveries { .. } => "max_deliveries",
            DeadReason::Terminated { .. } => "terminated",
        }
    }
}

impl std::fmt::Display for DeadReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeadReason::MaxDeliveries { deliveries } => {
                write!(f, "max_deliveries ({deliveries} deliveries)")
            }
            DeadReason::Terminated {
                reason: Some(reason),
            } if !reason.is_empty() => {
                write!(f, "terminated ({reason})")
            }
            DeadReason::Terminated { .. } => f.write_str("terminated"),
        }
    }
}

/// One dead-letter advisory, as the `DEAD` stream holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The stream the original message is in (`QUESTIONS` or `PROMPTS`).
    pub stream: String,
    /// The consumer that gave up on it.
    pub consumer: String,
    /// The original message's sequence in `stream`.
    pub stream_seq: u64,
    pub reason: DeadReason,
    /// When the server gave up, RFC 3339 as the advisory states it.
    pub timestamp: String,
}

/// The JSON fields of both advisory kinds that matter here.
#[derive(Deserialize)]
struct Advisory {
    stream: String,
    consumer: String,
    stream_seq: u64,
    #[serde(default)]
    deliveries: u64,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    timestamp: String,
}

impl DeadLetter {
    /// Reads an advisory published on `subject`.
    pub fn parse(subject: &str, payload: &[u8]) -> Result<Self, WireError> {
        const WHAT: &str = "dead-letter advisory";
        let advisory: Advisory = serde_json::from_slice(payload).map_err(|source| {
            if source.is_syntax() || source.is_eof() {
                WireError::NotJson { what: WHAT, source }
            } else {
                WireError::Schema { what: WHAT, source }
            }
        })?;
        let reason = if subject.starts_with(names::MAX_DELIVERIES_ADVISORY_PREFIX) {
            DeadReason::MaxDeliveries {
                deliveries: advisory.deliveries,
            }
        } else {
            DeadReason::Terminated {
                reason: advisory.reason.filter(|r| !r.is_empty()),
            }
        };
        Ok(Self {
            stream: advisory.stream,
            consumer: advisory.consumer,
            stream_seq: advisory.stream_seq,
            reason,
            timestamp: advisory.timestamp,
        })
    }
}

impl DeadReason {
    /// The error a request that ended this way fails with.
    pub fn error_kind(&self) -> ErrorKind {
        match self {
            DeadReason::MaxDeliveries { .. } => ErrorKind::DeliveriesExhausted,
            DeadReason::Terminated { .. } => ErrorKind::Terminated,
        }
    }

    fn client_message(&self, stream: &str) -> String {
        let stage = if stream == names::PROMPTS {
            "generating the answer"
        } else {
            "retrieving its context"
        };
        match self {
            DeadReason::MaxDeliveries { deliveries } => format!(
                "the request failed {deliveries} times while {stage} and was given up; \
                 an operator can replay it (cauce replay --dead), or send it again"
            ),
            DeadReason::Terminated { .. } => format!(
                "a worker gave the request up while {stage}; \
                 an operator can inspect and replay it (cauce replay --dead)"
            ),
        }
    }
}

/// Turns dead letters into `failed` records and `error` events until `cancel` fires.
pub async fn notify(
    js: jetstream::Context,
    client: async_nats::Client,
    results: Results,
    cancel: CancellationToken,
) {
    let (stream, consumer) = (names::DEAD, names::DEAD_NOTIFY_CONSUMER);
    follow(&js, stream, consumer, &cancel, |message| {
        handle(&js, &client, &results, message)
    })
    .await;
}

/// Hands every message of the durable `consumer` of the dead-letter `stream` to
/// `handle`, until `cancel` fires; a consumer that cannot be read (a reconnect, a
/// leader election) is tried again every second. [`notify`] runs it on `DEAD`; the
/// ingest workers on `DEAD_UPLOADS`.
pub async fn follow<F, Fut>(
    js: &jetstream::Context,
    stream: &str,
    consumer: &str,
    cancel: &CancellationToken,
    mut handle: F,
) where
    F: FnMut(jetstream::Message) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let pulled: Result<jetstream::consumer::PullConsumer, _> =
            js.get_consumer_from_stream(consumer, stream).await;
        let messages = match pulled {
            Ok(pulled) => pulled.messages().await.map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        match messages {
            Ok(mut messages) => loop {
                let next = tokio::select! {
                    () = cancel.cancelled() => return,
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(message)) => handle(message).await,
                    Some(Err(err)) => debug!(error = %err, stream, "dead letters: pull"),
                    None => break,
                }
            },
            Err(err) => warn!(error = %err, stream, "dead letters: cannot consume, retrying"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn handle(
    js: &jetstream::Context,
    client: &async_nats::Client,
    results: &Results,
    message: jetstream::Message,
) {
    let ack = match end_request(js, client, results, &message).await {
        Ok(()) => AckKind::Ack,
        Err(err) => {
            warn!(subject = %message.subject, error = %err, "dead letter not handled yet");
            AckKind::Nak(Some(Duration::from_secs(1)))
        }
    };
    if let Err(err) = message.ack_with(ack).await {
        debug!(error = %err, "dead letter ack");
    }
}

/// Fails the request a dead letter points at, if it has not ended; an advisory that
/// cannot be read or whose message is gone is logged and dropped.
async fn end_request(
    js: &jetstream::Context,
    client: &async_nats::Client,
    results: &Results,
    message: &jetstream::Message,
) -> Result<(), String> {
    let dead = match DeadLetter::parse(&message.subject, &message.payload) {
        Ok(dead) => dead,
        Err(err) => {
            warn!(error = %err, "unreadable dead-letter advisory dropped");
            return Ok(());
        }
    };
    let Some((gateway, request_id)) = owner(js, &dead).await? else {
        return Ok(());
    };
    let current = results.get(&request_id).await.map_err(|e| e.to_string())?;
    if current.as_ref().is_some_and(|r| r.status.is_final()) {
        debug!(request_id = %request_id, "dead letter of a request that has ended");
        return Ok(());
    }
    let failed = failed_record(&dead, &request_id, current);
    match results.advance(&failed, WRITE_LIMIT).await {
        Ok(Written::Stored) => {}
        Ok(Written::Refused(_)) => return Ok(()),
        Err(err) => return Err(err.to_string()),
    }
    let error = failed.error.clone().expect("a failed record has its error");
    info!(request_id = %request_id, reason = %dead.reason, stream = dead.stream, "dead letter: request failed");
    let event = Event {
        request_id: request_id.clone(),
        attempt: DEAD_LETTER_ATTEMPT,
        seq: 0,
        body: EventBody::Error {
            kind: error.kind,
            message: error.message,
        },
    };
    let payload = wire::encode(&event).map_err(|e| e.to_string())?;
    client
        .publish(names::events_subject(&gateway, &request_id), payload)
        .await
        .map_err(|e| e.to_string())
}

/// The gateway and request a dead letter's original message belongs to, from its
/// headers; `None` when the message is gone or carries no such headers.
async fn owner(
    js: &jetstream::Context,
    dead: &DeadLetter,
) -> Result<Option<(GatewayId, RequestId)>, String> {
    let stream = js
        .get_stream_no_info(&dead.stream)
        .await
        .map_err(|e| e.to_string())?;
    let original = match stream.get_raw_message(dead.stream_seq).await {
        Ok(original) => original,
        Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => {
            warn!(
                stream = dead.stream,
                seq = dead.stream_seq,
                "dead letter's message is gone"
            );
            return Ok(None);
        }
        // a leader election, a reconnect: the advisory is handed back and tried again
        Err(err) => return Err(err.to_string()),
    };
    let header = |name: &str| original.headers.get(name).map(|v| v.as_str().to_string());
    let ids = header(names::GATEWAY_HEADER)
        .zip(header(names::REQUEST_ID_HEADER))
        .and_then(|(gateway, request)| {
            Some((
                GatewayId::parse(&gateway).ok()?,
                RequestId::parse(&request).ok()?,
            ))
        })
        // queued before the headers carried the gateway: the payload names it too
        .or_else(|| ids_from_payload(&dead.stream, &original.payload));
    if ids.is_none() {
        warn!(
            stream = dead.stream,
            seq = dead.stream_seq,
            "dead letter without request headers"
        );
    }
    Ok(ids)
}

fn ids_from_payload(stream: &str, payload: &[u8]) -> Option<(GatewayId, RequestId)> {
    let request = if stream == names::PROMPTS {
        wire::decode::<wire::PromptJob>(payload).ok()?.request
    } else {
        wire::decode::<wire::ChatRequest>(payload).ok()?
    };
    Some((request.gateway, request.id))
}

fn failed_record(
    dead: &DeadLetter,
    request_id: &RequestId,
    current: Option<StoredResult>,
) -> StoredResult {
    let error = StoredError {
        kind: dead.reason.error_kind(),
        message: dead.reason.client_message(&dead.stream),
    };
    // a streamed request has no record until a worker writes one
    let base = current.unwrap_or_else(|| {
        StoredResult::queued(
            request_id.clone(),
            ModelName::default_model(),
            wire::now_ms(),
        )
    });
    base.into_failed(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_advisory_kinds_parse() {
        let max = br#"{"type":"io.nats.jetstream.advisory.v1.max_deliver","id":"x","timestamp":"2024-01-01T00:00:00Z","stream":"QUESTIONS","consumer":"retrieval","stream_seq":7,"deliveries":5}"#;
        let dead = DeadLetter::parse(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.QUESTIONS.retrieval",
            max,
        )
        .unwrap();
        assert_eq!(dead.stream_seq, 7);
        assert_eq!(dead.reason, DeadReason::MaxDeliveries { deliveries: 5 });
        assert_eq!(dead.reason.to_string(), "max_deliveries (5 deliveries)");

        let term = br#"{"type":"io.nats.jetstream.advisory.v1.terminated","stream":"PROMPTS","consumer":"inference-m","consumer_seq":3,"stream_seq":9,"deliveries":1,"reason":""}"#;
        let dead = DeadLetter::parse(
            "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.PROMPTS.inference-m",
            term,
        )
        .unwrap();
        assert_eq!((dead.stream.as_str(), dead.stream_seq), ("PROMPTS", 9));
        assert_eq!(dead.reason, DeadReason::Terminated { reason: None });
        assert!(DeadLetter::parse("x", b"nope").is_err());
    }
}
