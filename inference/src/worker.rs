//! The inference worker: pulls prompt jobs for one model from `PROMPTS` only while it
//! has free slots, runs them on the [`Engine`], and streams events back.
//!
//! Per job, one task publishes the events of the request in order: `delta` events
//! numbered from 0 within the attempt (the JetStream delivery count), then the final
//! result goes into `cauce-results`, then `done` (or `error`) is published, then the job
//! is acked. While it generates the task sends in-progress acks, so a long answer is not
//! redelivered; a cancel on `cauce.cancel.<request>` stops the sequence at the next
//! step. A job cancelled while queued, or past its deadline, is answered without being
//! generated. A deterministic failure (a prompt longer than the context, a template
//! error) ends with an `error` event and a terminate ack; a transient one is nak'ed
//! with a delay until its deliveries run out.
//!
//! Shutdown (the cancellation token): stop pulling, let running sequences finish within
//! the drain timeout, then stop the rest and nak them so another worker takes them at
//! once.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, AckKind, kv};
use cauce_nats::cache::ResponseCache;
use cauce_nats::wire::{
    self, CacheEntry, ErrorKind, Event, EventBody, FinishReason, PromptJob, ResultStatus,
    StoredError, StoredResult, Timings, Usage, now_ms,
};
use cauce_nats::{
    ModelName, Need, RequestId, Results, Written, check, ensure_inference_consumer, names,
};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::EngineConfig;
use crate::engine::{Engine, EngineEvent};
use crate::error::{Error, Result};
use crate::service;

/// How long a job whose result could not be stored waits before it is redelivered.
const RESULT_RETRY_DELAY: Duration = Duration::from_secs(2);

/// Everything one worker needs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The name the model is served under: its prompt subject and consumer.
    pub model: ModelName,
    pub engine: EngineConfig,
    /// How long running sequences may go on after shutdown starts.
    pub drain_timeout: Duration,
    /// Delay before a job that failed for a transient reason is tried again.
    pub retry_delay: Duration,
    /// A pause between listening for a job's cancels and looking it up in the cancels
    /// bucket: zero in service; tests widen that window to show no cancel is lost in it.
    pub pause_before_cancel_check: Duration,
}

impl WorkerConfig {
    pub fn new(model: ModelName, engine: EngineConfig) -> Self {
        Self {
            model,
            engine,
            drain_timeout: Duration::from_secs(30),
            retry_delay: Duration::from_secs(2),
            pause_before_cancel_check: Duration::ZERO,
        }
    }
}

/// What the job tasks share.
struct Shared {
    client: Client,
    engine: Engine,
    results: Results,
    cancels: kv::Store,
    cache: Arc<ResponseCache>,
    /// SHA-256 of the model file: answers are cached only under keys made with it.
    fingerprint: String,
    /// The model consumer's settings, as the server holds them.
    delivery: Delivery,
    config: WorkerConfig,
    /// Cancelled when the drain timeout is over: running jobs stop and are handed back.
    hand_back: CancellationToken,
}

/// Runs one inference worker until `cancel` fires and its jobs are drained.
pub async fn run(config: WorkerConfig, client: Client, cancel: CancellationToken) -> Result<()> {
    let js = jetstream::new(client.clone());
    let limits = check(&js, Need::INFERENCE).await?;
    let (_, consumer_config) = ensure_inference_consumer(&js, &config.model).await?;
    let delivery = Delivery {
        ack_wait: consumer_config.ack_wait,
        max_deliveries: consumer_config.max_deliver,
    };
    info!(ack_wait = ?delivery.ack_wait, max_deliveries = delivery.max_deliveries, "consumer settings");
    let consumer: PullConsumer = js
        .get_stream(names::PROMPTS)
        .await
        .map_err(|e| Error::nats("get PROMPTS", e))?
        .get_consumer(&names::inference_consumer(&config.model))
        .await
        .map_err(|e| Error::nats("get consumer", e))?;
    let results = Results::open(&js).await?;
    let cancels = js
        .get_key_value(names::CANCELS_BUCKET)
        .await
        .map_err(|e| Error::nats("open cancels", e))?;
    let cache = Arc::new(ResponseCache::open(&js).await?);

    let engine_config = config.engine.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::start(engine_config))
        .await
        .map_err(|e| Error::Context(e.to_string()))??;
    let model_path = shared_path(&config);
    let fingerprint = tokio::task::spawn_blocking(move || fingerprint_file(&model_path))
        .await
        .map_err(|e| Error::Context(e.to_string()))??;
    let slots = engine.info().slots as usize;
    let announced = service::announce(&client, &config.model, &engine).await?;
    info!(model = %config.model, slots, "inference worker ready");

    let publisher = {
        let (cache, model, fingerprint) =
            (cache.clone(), config.model.clone(), fingerprint.clone());
        let (ttl, cancel) = (limits.cache.max_age, cancel.clone());
        tokio::spawn(async move {
            cache
                .keep_fingerprint(&model, &fingerprint, ttl, cancel)
                .await;
        })
    };
    let shared = Arc::new(Shared {
        client,
        engine,
        results,
        cancels,
        cache,
        fingerprint,
        delivery,
        hand_back: CancellationToken::new(),
        config,
    });
    let free_slots = Arc::new(Semaphore::new(slots));
    let mut jobs = JoinSet::new();
    pull_loop(&consumer, &shared, &free_slots, &mut jobs, &cancel).await;

    info!(running = jobs.len(), "inference worker draining");
    let drained = tokio::time::timeout(shared.config.drain_timeout, async {
        while jobs.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            running = jobs.len(),
            "drain timeout: handing running jobs back to the queue"
        );
        shared.hand_back.cancel();
        while jobs.join_next().await.is_some() {}
    }
    announced.stop().await;
    publisher.abort();
    info!("inference worker stopped");
    Ok(())
}

async fn pull_loop(
    consumer: &PullConsumer,
    shared: &Arc<Shared>,
    free_slots: &Arc<Semaphore>,
    jobs: &mut JoinSet<()>,
    cancel: &CancellationToken,
) {
    loop {
        while jobs.try_join_next().is_some() {}
        // wait for a free slot, then ask for exactly as many jobs as there are free slots
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            permit = free_slots.clone().acquire_owned() => permit.expect("semaphore open"),
        };
        let mut permits = vec![first];
        while let Ok(permit) = free_slots.clone().try_acquire_owned() {
            permits.push(permit);
        }
        let batch = consumer
            .batch()
            .max_messages(permits.len())
            .expires(Duration::from_secs(1))
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(err) => {
                warn!(error = %err, "pull request failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return,
                next = batch.next() => next,
            };
            match next {
                None => break,
                Some(Ok(message)) => {
                    let Some(permit) = permits.pop() else { break };
                    jobs.spawn(run_job(shared.clone(), message, permit));
                }
                Some(Err(err)) => {
                    debug!(error = %err, "pull batch ended");
                    break;
                }
            }
        }
    }
}

/// How the server redelivers a job: read from the consumer, never from a flag.
#[derive(Clone, Copy, Debug)]
struct Delivery {
    ack_wait: Duration,
    /// -1 when the consumer sets no bound.
    max_deliveries: i64,
}

impl Delivery {
    fn is_last(&self, attempt: u32) -> bool {
        self.max_deliveries > 0 && i64::from(attempt) >= self.max_deliveries
    }
}

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
}

async fn run_job(shared: Arc<Shared>, message: jetstream::Message, _permit: OwnedSemaphorePermit) {
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
            return;
        }
    };
    let request = &job.request;
    let mut reply = Reply {
        client: shared.client.clone(),
        subject: names::events_subject(&request.gateway, &request.id).into(),
        request_id: request.id.clone(),
        attempt,
        seq: 0,
    };
    let key = names::request_key(&request.id).to_string();
    let base = StoredResult {
        request_id: request.id.clone(),
        model: request.model.clone(),
        status: ResultStatus::Running,
        text: String::new(),
        finish_reason: None,
        usage: Usage::default(),
        timings: Timings::default(),
        sources: job.sources(),
        error: None,
        attempt,
        created_at_ms: request.created_at_ms,
        finished_at_ms: 0,
        replay_of: request.replay_of.clone(),
    };

    // subscribed before the bucket is read: a cancel sent in between is seen by one of them
    let mut cancel_sub = match shared
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
    if !shared.config.pause_before_cancel_check.is_zero() {
        tokio::time::sleep(shared.config.pause_before_cancel_check).await;
    }
    if matches!(shared.cancels.get(&key).await, Ok(Some(_))) {
        debug!(request_id = %request.id, "cancelled while queued; dropped");
        let result = StoredResult {
            status: ResultStatus::Cancelled,
            finish_reason: Some(FinishReason::Cancelled),
            ..base
        };
        shared.cache.release(cache_key.as_deref()).await;
        finish(&shared, &message, &mut reply, result, AckKind::Ack).await;
        return;
    }
    if now_ms() > request.deadline_ms {
        warn!(request_id = %request.id, "deadline passed before generation");
        let result = base.into_failed(StoredError::deadline_passed());
        shared.cache.release(cache_key.as_deref()).await;
        finish(&shared, &message, &mut reply, result, AckKind::Ack).await;
        return;
    }
    if let Some(Written::Refused(current)) = put_result(&shared, &base).await
        && current.status.is_final()
    {
        // ended while queued (a task cancelled through the API, a dead letter)
        debug!(request_id = %request.id, status = current.status.as_str(), "ended before it ran; dropped");
        shared.cache.release(cache_key.as_deref()).await;
        let _ = message.ack().await;
        return;
    }

    let mut handle = match shared.engine.submit(job.clone()) {
        Ok(handle) => handle,
        Err(err) => {
            let _ = message
                .ack_with(AckKind::Nak(Some(shared.config.retry_delay)))
                .await;
            warn!(request_id = %request.id, error = %err, "engine unavailable; job handed back");
            return;
        }
    };
    let progress_every = (shared.delivery.ack_wait / 3).max(Duration::from_millis(200));
    let mut progress =
        tokio::time::interval_at(tokio::time::Instant::now() + progress_every, progress_every);
    let mut text = String::new();
    loop {
        let cancel_next = async {
            match cancel_sub.as_mut() {
                Some(sub) => sub.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = handle.events.recv() => match event {
                Some(EngineEvent::Started { prompt_tokens, reused_tokens }) => {
                    debug!(request_id = %request.id, attempt, prompt_tokens, reused_tokens, "generating");
                }
                Some(EngineEvent::Delta(delta)) => {
                    text.push_str(&delta);
                    reply.send(EventBody::Delta { text: delta }).await;
                }
                Some(EngineEvent::Done { finish_reason, usage, timings }) => {
                    if shared.hand_back.is_cancelled() && finish_reason == FinishReason::Cancelled {
                        shared.cache.release(cache_key.as_deref()).await;
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                        info!(request_id = %request.id, "handed back at shutdown");
                        return;
                    }
                    info!(
                        request_id = %request.id,
                        attempt,
                        finish_reason = finish_reason.as_str(),
                        prompt_tokens = usage.prompt_tokens,
                        completion_tokens = usage.completion_tokens,
                        decode_tokens_per_s = timings.decode_tokens_per_s,
                        "answered"
                    );
                    let status = if finish_reason == FinishReason::Cancelled { ResultStatus::Cancelled } else { ResultStatus::Done };
                    match cache_key.as_deref() {
                        Some(key) if status == ResultStatus::Done => {
                            let entry = CacheEntry {
                                model: request.model.clone(),
                                text: text.clone(),
                                finish_reason,
                                usage,
                                sources: base.sources.clone(),
                                created_at_ms: now_ms(),
                            };
                            store_in_cache(&shared, key, entry).await;
                        }
                        other => shared.cache.release(other).await,
                    }
                    let result = StoredResult { status, text, finish_reason: Some(finish_reason), usage, timings, ..base };
                    finish(&shared, &message, &mut reply, result, AckKind::Ack).await;
                    return;
                }
                Some(EngineEvent::Failed(err)) => {
                    shared.cache.release(cache_key.as_deref()).await;
                    fail(&shared, &message, &mut reply, base, err, attempt).await;
                    return;
                }
                None => {
                    shared.cache.release(cache_key.as_deref()).await;
                    fail(&shared, &message, &mut reply, base, Error::EngineStopped, attempt).await;
                    return;
                }
            },
            Some(_) = cancel_next => {
                handle.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                cancel_sub = None;
            }
            _ = progress.tick() => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
            _ = shared.hand_back.cancelled(), if !handle.cancel.load(std::sync::atomic::Ordering::Relaxed) => {
                handle.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// Stores the final result, publishes the last event, and acks.
async fn finish(
    shared: &Shared,
    message: &jetstream::Message,
    reply: &mut Reply,
    result: StoredResult,
    ack: AckKind,
) {
    let mut result = result;
    result.finished_at_ms = now_ms();
    // a result that could not be stored would leave its task `running` for good: the
    // job goes back to the queue and is answered again (the stream, if any, has its
    // answer already and ignores the second attempt)
    let ack = match (put_result(shared, &result).await, ack) {
        (None, AckKind::Ack | AckKind::Term) => AckKind::Nak(Some(RESULT_RETRY_DELAY)),
        (Some(Written::Refused(current)), _) => {
            // another writer ended the request first: its client was told by that writer
            info!(request_id = %result.request_id, status = current.status.as_str(), "the request had ended; this answer is dropped");
            if let Err(err) = message.ack().await {
                warn!(request_id = %result.request_id, error = %err, "ack failed");
            }
            return;
        }
        (_, ack) => ack,
    };
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
        },
    };
    reply.send(body).await;
    if let Err(err) = message.ack_with(ack).await {
        warn!(request_id = %result.request_id, error = %err, "ack failed");
    }
}

/// A failed job: deterministic failures and exhausted deliveries end the request with
/// an error; others go back to the queue after a delay.
async fn fail(
    shared: &Shared,
    message: &jetstream::Message,
    reply: &mut Reply,
    base: StoredResult,
    err: Error,
    attempt: u32,
) {
    let last_try = shared.delivery.is_last(attempt);
    if !err.is_deterministic() && !last_try {
        warn!(request_id = %base.request_id, attempt, error = %err, kind = err.kind(), "job failed; retrying later");
        let _ = message
            .ack_with(AckKind::Nak(Some(shared.config.retry_delay)))
            .await;
        return;
    }
    let kind = if err.is_deterministic() {
        err.wire_kind()
    } else {
        ErrorKind::DeliveriesExhausted
    };
    warn!(request_id = %base.request_id, attempt, error = %err, kind = kind.as_str(), "job failed for good");
    let error = StoredError {
        kind,
        message: err.to_string(),
    };
    finish(
        shared,
        message,
        reply,
        base.into_failed(error),
        AckKind::Term,
    )
    .await;
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

fn shared_path(config: &WorkerConfig) -> std::path::PathBuf {
    config.engine.model_path.clone()
}

/// SHA-256 of the model file, hex: another file under the same name never shares
/// cached answers.
fn fingerprint_file(path: &std::path::Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| Error::ModelLoad {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(|e| Error::ModelLoad {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Moves the request's record forward to `result`, retrying through a leader election
/// of the results bucket for up to half the ack wait (so that JetStream does not
/// redeliver the job meanwhile). `None` when it could not be stored.
async fn put_result(shared: &Shared, result: &StoredResult) -> Option<Written> {
    let limit = shared.delivery.ack_wait / 2;
    match shared.results.advance(result, limit).await {
        Ok(written) => Some(written),
        Err(err) => {
            warn!(request_id = %result.request_id, error = %err, kind = err.kind(), "storing the result failed");
            None
        }
    }
}
