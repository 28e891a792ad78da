//! Putting a question on the queue, and taking it back: the publish with its ack
//! timeout, and cancels.
//!
//! A question is published to JetStream with `Nats-Msg-Id` set to the request id (so a
//! retried publish is stored once) and the request id header; it is accepted only once
//! JetStream acks it. A publish that fails (no stream leader while a cluster elects a
//! new one, a reconnect to another server) is retried until the publish timeout
//! ([`cauce_nats::until_acked`]). A cancel goes out twice: a core message on the request's cancel
//! subject for a worker that runs it now, and a key in the cancels bucket for a worker
//! that picks it up later.

use async_nats::HeaderMap;
use async_nats::jetstream::kv;
use bytes::Bytes;
use cauce_nats::wire::{self, ChatRequest};
use cauce_nats::{RequestId, names, until_acked};

use crate::error::{Error, Result};
use crate::state::Shared;
use crate::telemetry::CANCELS;

/// Publishes a validated question and waits for JetStream's ack.
pub async fn publish_question(state: &Shared, request: &ChatRequest, cache: bool) -> Result<()> {
    let payload = wire::encode(request)?;
    let limit = state
        .client
        .server_info()
        .max_payload
        .saturating_sub(wire::PASSAGE_RESERVE_BYTES);
    if payload.len() > limit {
        return Err(Error::QuestionTooLarge {
            bytes: payload.len(),
            limit,
        });
    }
    let mut headers = names::request_headers(&request.gateway, &request.id);
    if !cache {
        headers.insert(names::CACHE_HEADER, "off");
    }
    until_acked(
        state.config.publish_timeout,
        "queueing the question",
        || async {
            let ack = state
                .js
                .publish_with_headers(names::QUESTIONS_SUBJECT, headers.clone(), payload.clone())
                .await?;
            ack.await.map(drop)
        },
    )
    .await
    .map_err(Error::from)
}

/// Cancels a request wherever it is: running (cancel subject) or queued (cancels bucket).
pub async fn cancel(
    client: &async_nats::Client,
    cancels: &kv::Store,
    id: &RequestId,
    reason: &'static str,
) -> Result<()> {
    metrics::counter!(CANCELS, "reason" => reason).increment(1);
    tracing::info!(request_id = %id, reason, "cancelling request");
    let mut headers = HeaderMap::new();
    headers.insert(names::REQUEST_ID_HEADER, id.as_str());
    client
        .publish_with_headers(names::cancel_subject(id), headers, Bytes::new())
        .await
        .map_err(|err| Error::nats("publish cancel", err))?;
    client
        .flush()
        .await
        .map_err(|err| Error::nats("flush cancel", err))?;
    cancels
        .put(names::request_key(id), Bytes::from_static(b"1"))
        .await
        .map_err(|err| Error::nats("store cancel", err))?;
    Ok(())
}

/// Cancels its request when dropped while armed: a client that goes away (the HTTP
/// body or handler future is dropped) cancels its request at once.
pub struct CancelOnDrop {
    client: async_nats::Client,
    cancels: kv::Store,
    id: RequestId,
    reason: &'static str,
    armed: bool,
}

impl CancelOnDrop {
    pub fn new(state: &Shared, id: RequestId) -> Self {
        Self {
            client: state.client.clone(),
            cancels: state.cancels.clone(),
            id,
            reason: "disconnect",
            armed: true,
        }
    }

    /// The request ended by itself: nothing to cancel.
    pub fn disarm(&mut self) {
        self.armed = false;
    }

    /// Cancels now, for `reason`, instead of on drop.
    pub fn fire(&mut self, reason: &'static str) {
        self.reason = reason;
        self.spawn_cancel();
    }

    fn spawn_cancel(&mut self) {
        if !std::mem::take(&mut self.armed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(request_id = %self.id, "no runtime to send a cancel from");
            return;
        };
        let (client, cancels, id, reason) = (
            self.client.clone(),
            self.cancels.clone(),
            self.id.clone(),
            self.reason,
        );
        runtime.spawn(async move {
            if let Err(err) = cancel(&client, &cancels, &id, reason).await {
                tracing::warn!(request_id = %id, kind = err.kind(), error = %err, "cancel failed");
            }
        });
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.spawn_cancel();
    }
}
