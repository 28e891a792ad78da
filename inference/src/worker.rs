//! The inference worker: pulls prompt jobs for one model from `PROMPTS` only while it
//! has free slots, runs them on the [`Engine`], and streams events back.
//!
//! Per job, one task claims the request's record in `cauce-results` for its attempt
//! (the JetStream delivery count) and owner ([`Results::claim`]), and continues the
//! answer the record holds: empty on a first attempt, what an earlier attempt sent when
//! its worker died. Before each batch of deltas it stores the answer so far
//! ([`Results::hold`]), then sends the deltas, each placed by its byte offset in the
//! answer; at the end it stores the result, sends `done` (or `error`), and acks. A
//! write refused means another attempt took the job over (this worker was too slow to
//! ack its progress): the run stops and sends nothing more. While it generates the task
//! sends in-progress acks four times per ack wait; a cancel on `cauce.cancel.<request>`
//! stops the sequence at the next step. A job cancelled while queued, or past its deadline, is answered without being
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
    Claimed, Hold, ModelName, Need, RequestId, Results, Written, check, ensure_inference_consumer,
    names,
};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::EngineConfig;
use crate::engine::{Engine, EngineEvent, JobHandle};
use crate::error::{Error, Result};
use crate::service;

/// What a worker logs when it continues an answer an earlier attempt began.
pub const LOG_CONTINUED: &str = "continuing the answer an earlier attempt began";
/// What a live worker logs when another attempt took its job over (it was too slow to
/// ack its progress in time).
pub const LOG_TAKEN_OVER: &str = "another attempt took the job over; this run stops";

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
    /// This process, as the owner of the records it holds (`host:pid`).
    worker_id: String,
    /// Job runs started, numbering each run's owner.
    runs: std::sync::atomic::AtomicU64,
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
        worker_id: worker_id(),
        runs: Default::default(),
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

async fn run_job(shared: Arc<Shared>, message: jetstream::Message, _permit: OwnedSemaphorePermit) {
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
        let mut next = self.record.clone();
        next.text.push_str(&self.unsent);
        let limit = self.shared.delivery.ack_wait / 2;
        match self.shared.results.hold(&mut self.hold, &next, limit).await {
            Ok(None) => {}
            Ok(Some(current)) => return Err(Lost(current)),
            Err(err) => {
                warn!(request_id = %next.request_id, error = %err, "storing the answer so far failed; its text waits");
                return Ok(());
            }
        }
        self.record = next;
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

/// `host:pid`, naming this process in the records it holds.
fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
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
