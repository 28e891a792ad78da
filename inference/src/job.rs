//! One prompt job, from its message to its end: read it, answer it without running
//! when it was cancelled or its deadline passed, claim the request's record, and run
//! it on the engine as the holder of that record ([`Run`]): a piece of the answer is
//! sent only once the record holds it, a continued answer goes on from what the record
//! holds, and a run that lost its job stops without sending anything more.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::{self, AckKind};
use cauce_nats::wire::{
    self, CacheEntry, ErrorKind, Event, EventBody, FinishReason, PromptJob, ResultStatus,
    StoredError, StoredResult, Timings, Usage, now_ms,
};
use cauce_nats::{Claimed, Hold, RequestId, Written, names};
use futures::StreamExt;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info, warn};

use crate::engine::{EngineEvent, JobHandle};
use crate::error::Error;
use crate::worker::Shared;

/// What a worker logs when it continues an answer an earlier attempt began.
pub const LOG_CONTINUED: &str = "continuing the answer an earlier attempt began";
/// What a live worker logs when another attempt took its job over (it was too slow to
/// ack its progress in time).
pub const LOG_TAKEN_OVER: &str = "another attempt took the job over; this run stops";

/// How long a job whose result could not be stored waits before it is redelivered.
const RESULT_RETRY_DELAY: Duration = Duration::from_secs(2);

/// The events of one request, numbered within this attempt.
struct Reply {
    client: Client,
    // a Subject clones by reference count, not by copying the string, once per delta
    subject: async_nats::Subject,
    request_id: RequestId,
    attempt: u32,
    seq: u64,
}

impl Reply {
    async fn send(&mut self, body: EventBody) {
        let event = Event {
            request_id: self.request_id.clone(),
            attempt: self.attempt,
            seq: self.seq,
            body,
        };
        self.seq += 1;
        match wire::encode(&event) {
            Ok(payload) => {
                if let Err(err) = self.client.publish(self.subject.clone(), payload).await {
                    warn!(request_id = %self.request_id, error = %err, "event publish failed");
                }
            }
            Err(err) => warn!(request_id = %self.request_id, error = %err, "event encode failed"),
        }
    }

    /// The event that ends a request as `result` says.
    async fn send_end(&mut self, result: &StoredResult) {
        let body = match &result.error {
            Some(error) => EventBody::Error {
                kind: error.kind,
                message: error.message.clone(),
            },
            None => EventBody::Done {
                finish_reason: result.finish_reason.unwrap_or(FinishReason::Stop),
                usage: result.usage,
                timings: result.timings,
                cached: false,
                text_bytes: result.text.len() as u64,
            },
        };
        self.send(body).await;
    }
}

/// What one job is, read from its message.
struct Job {
    job: PromptJob,
    attempt: u32,
    cache_key: Option<String>,
    /// The record this run writes, `running`, empty.
    base: StoredResult,
}

async fn read_job(shared: &Shared, message: &jetstream::Message) -> Option<Job> {
    let attempt = message
        .info()
        .map(|info| info.delivered.max(1) as u32)
        .unwrap_or(1);
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
    };
    let cache_key = shared
        .cache
        .claimed_key(
            header(names::CACHE_KEY_HEADER),
            header(names::MODEL_FINGERPRINT_HEADER),
            &shared.fingerprint,
        )
        .await;
    let job: PromptJob = match wire::decode(&message.payload) {
        Ok(job) => job,
        Err(err) => {
            warn!(error = %err, kind = err.kind(), "undecodable prompt job; terminating it");
            let _ = message.ack_with(AckKind::Term).await;
            return None;
        }
    };
    let request = &job.request;
    let run = shared
        .runs
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = StoredResult {
        status: ResultStatus::Running,
        sources: job.sources(),
        attempt,
        owner: format!("{}#{run}", shared.worker_id),
        replay_of: request.replay_of.clone(),
        ..StoredResult::queued(
            request.id.clone(),
            request.model.clone(),
            request.created_at_ms,
        )
    };
    Some(Job {
        job,
        attempt,
        cache_key,
        base,
    })
}

/// Runs one job to its end; the permit is its engine slot.
pub(crate) async fn run(
    shared: Arc<Shared>,
    message: jetstream::Message,
    _permit: OwnedSemaphorePermit,
) {
    let Some(Job {
        job,
        attempt,
        cache_key,
        base,
    }) = read_job(&shared, &message).await
    else {
        return;
    };
    let request = &job.request;
    let mut reply = Reply {
        client: shared.client.clone(),
        subject: names::events_subject(&request.gateway, &request.id).into(),
        request_id: request.id.clone(),
        attempt,
        seq: 0,
    };
    // subscribed before the bucket is read: a cancel sent in between is seen by one of them
    let cancel_sub = match shared
        .client
        .subscribe(names::cancel_subject(&request.id))
        .await
    {
        Ok(sub) => Some(sub),
        Err(err) => {
            warn!(request_id = %request.id, error = %err, "cannot subscribe to cancels");
            None
        }
    };
    if let Some(ended) = ended_before_start(&shared, &job, &base).await {
        shared.cache.release(cache_key.as_deref()).await;
        finish_unheld(&shared, &message, &mut reply, ended).await;
        return;
    }
    let Some((hold, record)) = claim(&shared, &message, &base).await else {
        shared.cache.release(cache_key.as_deref()).await;
        return;
    };
    let continued = !record.text.is_empty();
    if continued {
        let stats = shared.engine.stats();
        stats
            .jobs_continued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        info!(request_id = %request.id, attempt, bytes = record.text.len(), "{LOG_CONTINUED}");
    }
    let handle = match shared
        .engine
        .submit_continuing(job.clone(), record.text.clone())
    {
        Ok(handle) => handle,
        Err(err) => {
            let _ = message
                .ack_with(AckKind::Nak(Some(shared.config.retry_delay)))
                .await;
            warn!(request_id = %request.id, error = %err, "engine unavailable; job handed back");
            return;
        }
    };
    let run = Run {
        sent: record.text.len(),
        record: *record,
        shared,
        message,
        reply,
        hold,
        unsent: String::new(),
        // a continued answer is not what a fresh run would give: never cached
        cache_key: cache_key.filter(|_| !continued),
    };
    run.generate(handle, cancel_sub).await;
}

/// A job that ends without running: cancelled while queued, or past its deadline.
async fn ended_before_start(
    shared: &Shared,
    job: &PromptJob,
    base: &StoredResult,
) -> Option<StoredResult> {
    let request = &job.request;
    if !shared.config.pause_before_cancel_check.is_zero() {
        tokio::time::sleep(shared.config.pause_before_cancel_check).await;
    }
    let key = names::request_key(&request.id);
    if matches!(shared.cancels.get(key).await, Ok(Some(_))) {
        debug!(request_id = %request.id, "cancelled while queued; dropped");
        return Some(StoredResult {
            status: ResultStatus::Cancelled,
            finish_reason: Some(FinishReason::Cancelled),
            ..base.clone()
        });
    }
    if now_ms() > request.deadline_ms {
        warn!(request_id = %request.id, "deadline passed before generation");
        return Some(base.clone().into_failed(StoredError::deadline_passed()));
    }
    None
}

/// Takes the request's record for this run: the hold and the record, which holds the
/// answer so far. `None` when the run must not go on (the job is acked or handed
/// back as the record says).
async fn claim(
    shared: &Shared,
    message: &jetstream::Message,
    base: &StoredResult,
) -> Option<(Hold, Box<StoredResult>)> {
    let limit = shared.delivery.ack_wait / 2;
    match shared.results.claim(base, limit).await {
        Ok((hold, Claimed::Held(record))) => Some((hold, record)),
        Ok((_, Claimed::Lost(current))) => {
            lost(shared, message, &base.request_id, &current).await;
            None
        }
        Err(err) => {
            // not fenced, it must not send: back to the queue
            warn!(request_id = %base.request_id, error = %err, "claiming the request failed; job handed back");
            let _ = message
                .ack_with(AckKind::Nak(Some(RESULT_RETRY_DELAY)))
                .await;
            None
        }
    }
}

/// This run may not go on: the request ended (ack: the job is done) or a later
/// attempt holds it (no ack: that attempt acks it, and its message must stay
/// redeliverable in case it dies too).
async fn lost(
    shared: &Shared,
    message: &jetstream::Message,
    id: &RequestId,
    current: &StoredResult,
) {
    if current.status.is_final() {
        debug!(request_id = %id, status = current.status.as_str(), "the request had ended; dropped");
        let _ = message.ack().await;
        return;
    }
    shared
        .engine
        .stats()
        .jobs_lost
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    warn!(request_id = %id, attempt = current.attempt, owner = %current.owner, "{LOG_TAKEN_OVER}");
}

/// Ends a request no run held (see [`ended_before_start`]): the record, the last event,
/// the ack.
async fn finish_unheld(
    shared: &Shared,
    message: &jetstream::Message,
    reply: &mut Reply,
    result: StoredResult,
) {
    let limit = shared.delivery.ack_wait / 2;
    match shared.results.advance(&result, limit).await {
        Ok(Written::Stored) => reply.send_end(&result).await,
        Ok(Written::Refused(current)) => {
            debug!(request_id = %result.request_id, status = current.status.as_str(), "the request had ended or runs elsewhere");
            if !current.status.is_final() {
                return;
            }
        }
        Err(err) => {
            warn!(request_id = %result.request_id, error = %err, "storing the result failed; job handed back");
            let _ = message
                .ack_with(AckKind::Nak(Some(RESULT_RETRY_DELAY)))
                .await;
            return;
        }
    }
    if let Err(err) = message.ack().await {
        warn!(request_id = %result.request_id, error = %err, "ack failed");
    }
}

/// One run of a job that holds its request's record: a piece of the answer is sent
/// only once the record holds it, and the run stops at the first write refused.
struct Run {
    shared: Arc<Shared>,
    message: jetstream::Message,
    reply: Reply,
    hold: Hold,
    /// The record as this run last wrote it: `text` is the answer so far.
    record: StoredResult,
    /// Bytes of the answer sent as deltas.
    sent: usize,
    /// Text generated and not stored yet.
    unsent: String,
    cache_key: Option<String>,
}

/// The run lost its job: it stops, sending nothing more.
struct Lost(Box<StoredResult>);

impl Run {
    async fn generate(
        mut self,
        mut handle: JobHandle,
        mut cancel_sub: Option<async_nats::Subscriber>,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        let shared = self.shared.clone();
        let progress_every = (shared.delivery.ack_wait / 4).max(Duration::from_millis(100));
        let mut progress =
            tokio::time::interval_at(tokio::time::Instant::now() + progress_every, progress_every);
        let mut next_event = None;
        loop {
            let event = match next_event.take() {
                Some(event) => Some(event),
                None => {
                    let cancel_next = async {
                        match cancel_sub.as_mut() {
                            Some(sub) => sub.next().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        event = handle.events.recv() => event,
                        Some(_) = cancel_next => {
                            handle.cancel.store(true, Relaxed);
                            cancel_sub = None;
                            continue;
                        }
                        _ = progress.tick() => {
                            let _ = self.message.ack_with(AckKind::Progress).await;
                            continue;
                        }
                        _ = shared.hand_back.cancelled(), if !handle.cancel.load(Relaxed) => {
                            handle.cancel.store(true, Relaxed);
                            continue;
                        }
                    }
                }
            };
            let outcome = match event {
                Some(EngineEvent::Started {
                    prompt_tokens,
                    reused_tokens,
                }) => {
                    debug!(request_id = %self.record.request_id, attempt = self.hold.attempt(), prompt_tokens, reused_tokens, "generating");
                    Ok(false)
                }
                Some(EngineEvent::Delta(delta)) => {
                    self.unsent.push_str(&delta);
                    next_event = drain_deltas(&mut handle, &mut self.unsent);
                    self.store_and_send().await.map(|()| false)
                }
                Some(EngineEvent::Done {
                    finish_reason,
                    usage,
                    timings,
                }) => self
                    .done(finish_reason, usage, timings)
                    .await
                    .map(|()| true),
                Some(EngineEvent::Failed(err)) => self.failed(err).await.map(|()| true),
                None => self.failed(Error::EngineStopped).await.map(|()| true),
            };
            match outcome {
                Ok(false) => {}
                Ok(true) => return,
                Err(Lost(current)) => {
                    handle.cancel.store(true, Relaxed);
                    lost(&shared, &self.message, &self.record.request_id, &current).await;
                    return;
                }
            }
        }
    }

    /// Stores the answer so far, then sends what it adds. A store that fails (NATS is
    /// away) keeps the text for the next one.
    async fn store_and_send(&mut self) -> Result<(), Lost> {
        if self.unsent.is_empty() {
            return Ok(());
        }
        // the record takes the text in place (no copy of it per batch), and gives it
        // back when the write fails
        let stored = self.record.text.len();
        self.record.text.push_str(&self.unsent);
        let limit = self.shared.delivery.ack_wait / 2;
        match self
            .shared
            .results
            .hold(&mut self.hold, &self.record, limit)
            .await
        {
            Ok(None) => {}
            Ok(Some(current)) => return Err(Lost(current)),
            Err(err) => {
                self.record.text.truncate(stored);
                warn!(request_id = %self.record.request_id, error = %err, "storing the answer so far failed; its text waits");
                return Ok(());
            }
        }
        self.send_stored().await;
        Ok(())
    }

    /// Sends the stored text not sent yet.
    async fn send_stored(&mut self) {
        if self.sent < self.record.text.len() {
            let text = self.record.text[self.sent..].to_string();
            let at = self.sent as u64;
            self.sent = self.record.text.len();
            self.unsent.clear();
            self.reply.send(EventBody::Delta { text, at }).await;
        }
    }

    async fn done(
        &mut self,
        finish_reason: FinishReason,
        usage: Usage,
        timings: Timings,
    ) -> Result<(), Lost> {
        let shared = self.shared.clone();
        let id = self.record.request_id.clone();
        if shared.hand_back.is_cancelled() && finish_reason == FinishReason::Cancelled {
            shared.cache.release(self.cache_key.as_deref()).await;
            let _ = self.message.ack_with(AckKind::Nak(None)).await;
            info!(request_id = %id, "handed back at shutdown");
            return Ok(());
        }
        info!(
            request_id = %id,
            attempt = self.hold.attempt(),
            finish_reason = finish_reason.as_str(),
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            prefill_ms = timings.prefill_ms.round(),
            decode_tokens_per_s = timings.decode_tokens_per_s,
            "answered"
        );
        let status = if finish_reason == FinishReason::Cancelled {
            ResultStatus::Cancelled
        } else {
            ResultStatus::Done
        };
        let mut result = StoredResult {
            status,
            finish_reason: Some(finish_reason),
            usage,
            timings,
            ..self.record.clone()
        };
        result.text.push_str(&self.unsent);
        match self.cache_key.take() {
            Some(key) if status == ResultStatus::Done => {
                let entry = CacheEntry {
                    model: result.model.clone(),
                    text: result.text.clone(),
                    finish_reason,
                    usage,
                    sources: result.sources.clone(),
                    created_at_ms: now_ms(),
                };
                store_in_cache(&shared, &key, entry).await;
            }
            other => shared.cache.release(other.as_deref()).await,
        }
        self.end(result, AckKind::Ack).await
    }

    /// A failed job: deterministic failures and exhausted deliveries end the request
    /// with an error; others go back to the queue after a delay, and the next attempt
    /// continues the stored answer.
    async fn failed(&mut self, err: Error) -> Result<(), Lost> {
        let shared = self.shared.clone();
        shared.cache.release(self.cache_key.take().as_deref()).await;
        let attempt = self.hold.attempt();
        let id = &self.record.request_id;
        if !err.is_deterministic() && !shared.delivery.is_last(attempt) {
            warn!(request_id = %id, attempt, error = %err, kind = err.kind(), "job failed; retrying later");
            let _ = self
                .message
                .ack_with(AckKind::Nak(Some(shared.config.retry_delay)))
                .await;
            return Ok(());
        }
        let kind = if err.is_deterministic() {
            err.wire_kind()
        } else {
            ErrorKind::DeliveriesExhausted
        };
        warn!(request_id = %id, attempt, error = %err, kind = kind.as_str(), "job failed for good");
        let error = StoredError {
            kind,
            message: err.to_string(),
        };
        let failed = self.record.clone().into_failed(error);
        self.end(failed, AckKind::Term).await
    }

    /// Stores the end, sends the rest of the answer and the last event, and acks. An
    /// end that could not be stored goes back to the queue: the next attempt continues
    /// from the last stored answer.
    async fn end(&mut self, result: StoredResult, ack: AckKind) -> Result<(), Lost> {
        let mut result = result;
        result.finished_at_ms = now_ms();
        let limit = self.shared.delivery.ack_wait / 2;
        match self
            .shared
            .results
            .hold(&mut self.hold, &result, limit)
            .await
        {
            Ok(None) => {}
            Ok(Some(current)) => return Err(Lost(current)),
            Err(err) => {
                warn!(request_id = %result.request_id, error = %err, "storing the result failed; job handed back");
                let _ = self
                    .message
                    .ack_with(AckKind::Nak(Some(RESULT_RETRY_DELAY)))
                    .await;
                return Ok(());
            }
        }
        self.record = result;
        self.send_stored().await;
        self.reply.send_end(&self.record).await;
        if let Err(err) = self.message.ack_with(ack).await {
            warn!(request_id = %self.record.request_id, error = %err, "ack failed");
        }
        Ok(())
    }
}

/// Moves every delta the engine has ready into `unsent`; the first other event comes
/// back, to be handled after them.
fn drain_deltas(handle: &mut JobHandle, unsent: &mut String) -> Option<EngineEvent> {
    while let Ok(event) = handle.events.try_recv() {
        match event {
            EngineEvent::Delta(delta) => unsent.push_str(&delta),
            other => return Some(other),
        }
    }
    None
}

/// Stores a generated answer under its cache key, counting its size.
async fn store_in_cache(shared: &Shared, key: &str, entry: CacheEntry) {
    if let Some((json_bytes, stored_bytes)) = shared.cache.fill(key, entry).await {
        let stats = shared.engine.stats();
        stats
            .cache_json_bytes
            .fetch_add(json_bytes as u64, std::sync::atomic::Ordering::Relaxed);
        stats
            .cache_stored_bytes
            .fetch_add(stored_bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }
}
