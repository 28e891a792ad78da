//! The search protocol: a gateway asks, one retrieval worker answers. Requests go to
//! [`names::SEARCH_SUBJECT`], which every retrieval worker subscribes to in the queue
//! group [`names::SEARCH_QUEUE`], so each request reaches exactly one of them and more
//! workers answer more searches. Nothing is queued in JetStream: a search has no
//! side effect, and a client whose search found no worker is told at once.

use std::time::Duration;

use async_nats::{Client, Subscriber};

use crate::error::{Error, Result};
use crate::names;
use crate::wire::{self, SearchRequest, SearchResponse};

/// Why a search got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("no retrieval worker is running")]
    NoWorker,
    #[error("no retrieval worker answered within {} ms", .0.as_millis())]
    TimedOut(Duration),
    #[error(transparent)]
    Other(#[from] Error),
}

/// Asks one retrieval worker, waiting at most `timeout`.
pub async fn ask(
    client: &Client,
    request: &SearchRequest,
    timeout: Duration,
) -> std::result::Result<SearchResponse, AskError> {
    let payload = wire::encode(request).map_err(Error::from)?;
    let asked = client.request(names::SEARCH_SUBJECT, payload);
    let answer = match tokio::time::timeout(timeout, asked).await {
        Err(_) => return Err(AskError::TimedOut(timeout)),
        Ok(Err(err)) if err.kind() == async_nats::RequestErrorKind::NoResponders => {
            return Err(AskError::NoWorker);
        }
        Ok(Err(err)) if err.kind() == async_nats::RequestErrorKind::TimedOut => {
            return Err(AskError::TimedOut(timeout));
        }
        Ok(Err(err)) => return Err(Error::nats("request", names::SEARCH_SUBJECT, err).into()),
        Ok(Ok(message)) => message,
    };
    Ok(wire::decode(&answer.payload).map_err(Error::from)?)
}

/// A retrieval worker's subscription to search requests.
pub async fn subscribe(client: &Client) -> Result<Subscriber> {
    client
        .queue_subscribe(names::SEARCH_SUBJECT, names::SEARCH_QUEUE.to_string())
        .await
        .map_err(|e| Error::nats("subscribe", names::SEARCH_SUBJECT, e))
}

/// Reads a search request; an unreadable one is answered with its error here.
pub async fn read(client: &Client, message: &async_nats::Message) -> Option<SearchRequest> {
    match wire::decode::<SearchRequest>(&message.payload) {
        Ok(request) => Some(request),
        Err(err) => {
            let refused = SearchResponse {
                hits: Vec::new(),
                indexed_passages: 0,
                error: Some(err.to_string()),
            };
            answer(client, message, &refused).await;
            None
        }
    }
}

/// Answers one search request.
pub async fn answer(client: &Client, message: &async_nats::Message, response: &SearchResponse) {
    let Some(reply) = message.reply.clone() else {
        return;
    };
    match wire::encode(response) {
        Ok(payload) => {
            if let Err(err) = client.publish(reply, payload).await {
                tracing::warn!(error = %err, "answering a search failed");
            }
        }
        Err(err) => tracing::warn!(error = %err, "encoding a search answer failed"),
    }
}
