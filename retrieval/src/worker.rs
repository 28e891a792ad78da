//! The retrieval worker: pull a question from the `retrieval` consumer, search, fit
//! the passages into the model's context (`fit.rs`), send the `sources` event to the
//! reply subject at once, publish the prompt job with `Nats-Msg-Id` set to the request id, and ack the question only after JetStream
//! acked the prompt job. A redelivered question (a worker died before its ack) makes
//! the same publish, which JetStream drops as a duplicate: one prompt job per question.
//!
//! Shutdown: stop pulling, let the questions in hand finish within a deadline (those
//! that do not are redelivered after the ack wait), stop following `DOCS`, withdraw the
//! service.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::{self, AckKind};
use cauce_nats::cache::{Lookup, ResponseCache};
use cauce_nats::wire::{
    self, CacheEntry, ChatRequest, Event, EventBody, Passage, PromptJob, ResultStatus,
    StoredResult, Timings,
};
use cauce_nats::wire::{ErrorKind, StoredError};
use cauce_nats::{ModelName, Need, PromptCounter, Results, names};
use futures::StreamExt;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::error::{Error, Result};
use crate::fit;
use crate::follow::{FollowOptions, FollowStatus, Follower};
use crate::hybrid::{Hybrid, HybridConfig};
use crate::index::LocalIndex;
use crate::schema::Language;
use crate::search::Searcher;
use crate::service::{self, StatsSource};

/// How long questions in hand may take to finish at shutdown.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// Delay before a question whose prompt job could not be published is redelivered.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Bytes of a prompt job's message kept for its headers.
const HEADER_ROOM: usize = 1024;
/// How long storing a question's failure is retried through a leader election.
const FAIL_WRITE_LIMIT: Duration = Duration::from_secs(5);

/// Everything a retrieval worker needs besides a NATS client.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Directory of the local index (created, or rebuilt from `DOCS`, as needed).
    pub index_dir: PathBuf,
    pub language: Language,
    /// Counts prompts in their model's tokens, so that passages fit its context
    /// (`fit.rs`); without one, passages fit a byte budget.
    pub prompt_counter: Option<Arc<dyn PromptCounter>>,
    /// Questions handled at once.
    pub concurrency: usize,
    pub follow: FollowOptions,
    /// Whether deterministic answers are served from and stored in the response cache.
    pub cache: bool,
    /// How long an identical request waits for the answer another one is generating.
    pub cache_wait: Duration,
    /// Hybrid ranking: BM25's candidates re-scored with dense vectors (`None`: BM25 alone).
    pub hybrid: Option<HybridConfig>,
}

impl WorkerConfig {
    pub fn new(index_dir: PathBuf) -> Self {
        Self {
            index_dir,
            language: Language::English,
            prompt_counter: None,
            concurrency: 8,
            follow: FollowOptions::default(),
            cache: true,
            cache_wait: Duration::from_secs(60),
            hybrid: None,
        }
    }
}

/// What every question handler shares.
struct Shared {
    js: jetstream::Context,
    client: Client,
    searcher: Searcher,
    config: WorkerConfig,
    /// Models whose inference consumer this process has ensured.
    ensured_models: Mutex<HashSet<ModelName>>,
    cache: ResponseCache,
    results: Results,
    /// Deliveries of a question before it is a dead letter, as the consumer holds it.
    max_deliveries: i64,
    /// The consumer's ack wait: questions in hand are kept alive well within it.
    ack_wait: Duration,
}

/// Runs one retrieval worker until `cancel` fires.
pub async fn run(config: WorkerConfig, client: Client, cancel: CancellationToken) -> Result<()> {
    info!(
        index_dir = %config.index_dir.display(), language = %config.language,
        counts_tokens = config.prompt_counter.is_some(),
        concurrency = config.concurrency, "retrieval worker starting"
    );
    let js = jetstream::new(client.clone());
    let limits = cauce_nats::check(&js, Need::RETRIEVAL).await?;
    info!(ack_wait = ?limits.retrieval_ack_wait, max_deliveries = limits.max_deliveries, "consumer settings");
    let mut docs = js
        .get_stream(names::DOCS)
        .await
        .map_err(|e| Error::jetstream("look up DOCS")(e.into()))?;
    let docs_info = docs
        .info()
        .await
        .map_err(|e| Error::jetstream("DOCS info")(e.into()))?;
    let stream_created = docs_info.created.unix_timestamp_nanos().to_string();
    let last_seq = if docs_info.state.messages == 0 {
        0
    } else {
        docs_info.state.last_sequence
    };

    let (dir, language) = (config.index_dir.clone(), config.language);
    let index = tokio::task::spawn_blocking(move || {
        LocalIndex::open_or_rebuild(&dir, language, &stream_created, last_seq)
    })
    .await
    .map_err(|source| Error::Task {
        what: "index open",
        source,
    })??;
    let mut searcher = Searcher::new(&index);
    if let Some(hybrid) = config.hybrid.clone() {
        let hybrid = tokio::task::spawn_blocking(move || Hybrid::open(&hybrid))
            .await
            .map_err(|source| Error::Task {
                what: "embedding model load",
                source,
            })??;
        searcher = searcher.with_hybrid(Arc::new(hybrid));
    }

    let follow_cancel = cancel.child_token();
    let mut follower = Follower::spawn(
        js.clone(),
        index,
        last_seq,
        config.follow,
        follow_cancel.clone(),
    );
    tokio::select! {
        () = cancel.cancelled() => {}
        status = follower.caught_up() => info!(docs_seq = status.docs_seq, applied = status.applied, passages = searcher.passages(), "index ready"),
    }

    let backfill = searcher.hybrid().cloned().map(|hybrid| {
        tokio::spawn(backfill_vectors(
            hybrid,
            searcher.clone(),
            follower.status.clone(),
            cancel.clone(),
        ))
    });
    let stats = StatsSource {
        language: config.language.to_string(),
        index_dir: config.index_dir.clone(),
        searcher: searcher.clone(),
        follow: follower.status.clone(),
    };
    let (service, status_task) = service::announce(&client, stats).await?;
    let results = Results::open(&js).await?;
    let cache = ResponseCache::open(&js).await?;
    let shared = Arc::new(Shared {
        js,
        client,
        searcher,
        cache,
        results,
        max_deliveries: limits.max_deliveries,
        ack_wait: limits.retrieval_ack_wait,
        config,
        ensured_models: Mutex::default(),
    });
    let answerer = crate::answer_search::Answerer {
        client: shared.client.clone(),
        searcher: shared.searcher.clone(),
    };
    let searches = tokio::spawn(crate::answer_search::serve(answerer, cancel.clone()));
    // the worker that wrote a prompt job, or consumed its question, ends its request
    // when JetStream gives up on it
    let dead_letters = tokio::spawn(cauce_nats::dead::notify(
        shared.js.clone(),
        shared.client.clone(),
        shared.results.clone(),
        cancel.clone(),
    ));
    let pulled = pull_questions(&shared, &cancel).await;
    let _ = searches.await;
    let _ = dead_letters.await;

    follow_cancel.cancel();
    if let Some(backfill) = backfill {
        let _ = backfill.await;
    }
    if let Err(err) = service.stop().await {
        debug!(error = %err, "service stop");
    }
    status_task.abort();
    let followed = follower.task.await.map_err(|source| Error::Task {
        what: "DOCS follower",
        source,
    })?;
    info!("retrieval worker stopped");
    pulled.and(followed)
}

/// Computes the vectors of the passages that have none: once the index is ready, then
/// after the changes the follower applies (at most one pass every few seconds).
async fn backfill_vectors(
    hybrid: Arc<Hybrid>,
    searcher: Searcher,
    mut follow: watch::Receiver<FollowStatus>,
    cancel: CancellationToken,
) {
    const BETWEEN_PASSES: Duration = Duration::from_secs(2);
    loop {
        let (pass_hybrid, pass_cancel) = (hybrid.clone(), cancel.clone());
        let pass_searcher = searcher.clone();
        let started = std::time::Instant::now();
        let pass = tokio::task::spawn_blocking(move || -> Result<usize> {
            let passages = pass_searcher.passages_to_embed()?;
            Ok(pass_hybrid.backfill(&passages, &pass_cancel)?)
        })
        .await;
        match pass {
            Ok(Ok(0)) => {}
            Ok(Ok(computed)) => info!(
                computed, vectors = hybrid.vectors(), elapsed = ?started.elapsed(),
                "passage vectors computed"
            ),
            Ok(Err(err)) => warn!(error = %err, "passage vectors not computed"),
            Err(err) => warn!(error = %err, "passage vector task failed"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(BETWEEN_PASSES) => {}
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = follow.changed() => if changed.is_err() { return },
        }
    }
}

async fn pull_questions(shared: &Arc<Shared>, cancel: &CancellationToken) -> Result<()> {
    if cancel.is_cancelled() {
        return Ok(());
    }
    let consumer: jetstream::consumer::PullConsumer = shared
        .js
        .get_consumer_from_stream(names::RETRIEVAL_CONSUMER, names::QUESTIONS)
        .await
        .map_err(|e| Error::jetstream("look up the retrieval consumer")(e.into()))?;
    let concurrency = shared.config.concurrency.max(1);
    let mut questions = consumer
        .stream()
        .max_messages_per_batch(concurrency)
        .messages()
        .await
        .map_err(|e| Error::jetstream("pull questions")(e.into()))?;
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut in_hand = JoinSet::new();
    info!(consumer = names::RETRIEVAL_CONSUMER, "pulling questions");
    loop {
        let slot = tokio::select! {
            () = cancel.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let next = tokio::select! {
            () = cancel.cancelled() => break,
            next = questions.next() => next,
        };
        match next {
            Some(Ok(message)) => {
                let shared = Arc::clone(shared);
                in_hand.spawn(async move {
                    handle(&shared, message).await;
                    drop(slot);
                });
            }
            Some(Err(err)) => {
                warn!(error = %err, "pulling questions failed, retrying");
                tokio::time::sleep(RETRY_DELAY).await;
            }
            None => {
                return Err(Error::jetstream("pull questions")(
                    "the consumer stream ended".into(),
                ));
            }
        }
        while in_hand.try_join_next().is_some() {}
    }
    drop(questions);
    let drained = tokio::time::timeout(DRAIN_DEADLINE, async {
        while in_hand.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            left = in_hand.len(),
            "questions still in hand at shutdown, they will be redelivered"
        );
    }
    Ok(())
}

/// Handles one question; failures are logged and the question is nak'ed or terminated.
async fn handle(shared: &Shared, message: jetstream::Message) {
    let attempt = message
        .info()
        .map(|info| info.delivered)
        .unwrap_or(1)
        .clamp(1, i64::from(u32::MAX)) as u32;
    let request: ChatRequest = match wire::decode(&message.payload) {
        Ok(request) => request,
        Err(err) => {
            warn!(error = %err, kind = err.kind(), attempt, "undecodable question, terminated");
            if let Err(err) = message.ack_with(AckKind::Term).await {
                warn!(error = %err, "terminating an undecodable question failed");
            }
            return;
        }
    };
    if wire::now_ms() > request.deadline_ms {
        warn!(request_id = %request.id, attempt, "deadline passed before retrieval");
        end_failed(shared, &request, attempt, StoredError::deadline_passed()).await;
        if let Err(err) = message.ack().await {
            warn!(request_id = %request.id, error = %err, "question ack failed");
        }
        return;
    }
    let request_id = request.id.clone();
    let request_for_failure = request.clone();
    let opted_out = message
        .headers
        .as_ref()
        .and_then(|h| h.get(names::CACHE_HEADER))
        .is_some_and(|v| v.as_str().eq_ignore_ascii_case("off"));
    let answered = keep_alive(
        &message,
        shared.ack_wait,
        answer(shared, request, attempt, opted_out),
    );
    match answered.await {
        Ok(passages) => {
            if let Err(err) = message.ack().await {
                warn!(request_id = %request_id, error = %err, "question ack failed, it will be redelivered");
            } else {
                debug!(request_id = %request_id, attempt, passages, "question done");
            }
        }
        Err(err) if !is_last(shared.max_deliveries, attempt) => {
            error!(request_id = %request_id, attempt, error = %err, kind = err.kind(), "question failed, will retry");
            if let Err(err) = message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await {
                warn!(request_id = %request_id, error = %err, "nak failed");
            }
        }
        Err(err) => {
            error!(request_id = %request_id, attempt, error = %err, kind = err.kind(), "question failed on its last delivery");
            let error = StoredError {
                kind: ErrorKind::DeliveriesExhausted,
                message: format!(
                    "retrieving the context failed on all {attempt} deliveries ({}); \
                     send the request again later",
                    err.kind()
                ),
            };
            end_failed(shared, &request_for_failure, attempt, error).await;
            if let Err(err) = message.ack_with(AckKind::Term).await {
                warn!(request_id = %request_id, error = %err, "terminating the question failed");
            }
        }
    }
}

/// Runs `work` while sending in-progress acks for `message` every third of the ack
/// wait, so that a question that waits (on a cache claim, a slow search) is not
/// redelivered meanwhile.
async fn keep_alive<T>(
    message: &jetstream::Message,
    ack_wait: Duration,
    work: impl Future<Output = T>,
) -> T {
    let every = (ack_wait / 3).max(Duration::from_millis(100));
    let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = progress.tick() => {
                if let Err(err) = message.ack_with(AckKind::Progress).await {
                    debug!(error = %err, "progress ack failed");
                }
            }
        }
    }
}

/// How long a request may wait for another's claim on its cache key: the configured
/// wait, never past the request's own deadline.
fn cache_wait_until(cache_wait: Duration, deadline_ms: u64) -> std::time::Instant {
    let left = Duration::from_millis(deadline_ms.saturating_sub(wire::now_ms()));
    std::time::Instant::now() + cache_wait.min(left)
}

fn is_last(max_deliveries: i64, attempt: u32) -> bool {
    max_deliveries > 0 && i64::from(attempt) >= max_deliveries
}

/// Ends a request that retrieval gives up on (its last delivery failed, its deadline
/// passed), as the inference worker does: a `failed` record, then the `error` event,
/// unless it has ended already.
async fn end_failed(shared: &Shared, request: &ChatRequest, attempt: u32, error: StoredError) {
    let failed = StoredResult {
        attempt,
        replay_of: request.replay_of.clone(),
        ..StoredResult::queued(
            request.id.clone(),
            request.model.clone(),
            request.created_at_ms,
        )
    }
    .into_failed(error.clone());
    match shared.results.advance(&failed, FAIL_WRITE_LIMIT).await {
        Ok(cauce_nats::Written::Stored) => {}
        Ok(cauce_nats::Written::Refused(_)) => return,
        // the dead-letter advisory of the terminate ends it instead
        Err(err) => {
            warn!(request_id = %request.id, error = %err, "storing the failure failed");
            return;
        }
    }
    let event = Event {
        request_id: request.id.clone(),
        attempt,
        seq: 0,
        body: EventBody::Error {
            kind: error.kind,
            message: error.message,
        },
    };
    if let Ok(payload) = wire::encode(&event) {
        let subject = names::events_subject(&request.gateway, &request.id);
        if let Err(err) = shared.client.publish(subject, payload).await {
            warn!(request_id = %request.id, error = %err, "publishing the failure failed");
        }
    }
}

/// Searches, sends the sources and publishes the prompt job; returns how many passages.
async fn answer(
    shared: &Shared,
    request: ChatRequest,
    attempt: u32,
    opted_out: bool,
) -> Result<usize> {
    let passages = retrieve(shared, &request).await?;
    let job = PromptJob {
        request,
        passages,
        retrieved_at_ms: wire::now_ms(),
    };
    let mut job = fit_context(shared, job).await?;
    // fitted before the sources are sent: the client sees exactly what the model sees
    // the headers (ids, cache key, fingerprint) ride in the same message
    let room = shared
        .client
        .server_info()
        .max_payload
        .saturating_sub(HEADER_ROOM);
    let dropped = job.fit(room);
    if dropped > 0 {
        warn!(request_id = %job.request.id, dropped, "passages dropped so that the prompt job fits the server's max_payload");
    }
    let count = job.passages.len();
    let lookup = if shared.config.cache && !opted_out {
        let wait_until = cache_wait_until(shared.config.cache_wait, job.request.deadline_ms);
        shared
            .cache
            .lookup(&job.request, &job.passages, wait_until)
            .await
    } else {
        Lookup::Bypass
    };
    let request = &job.request;

    let event = Event {
        request_id: request.id.clone(),
        attempt,
        seq: 0,
        body: EventBody::Sources {
            sources: job.sources(),
        },
    };
    let reply_subject = names::events_subject(&request.gateway, &request.id);
    shared
        .client
        .publish(reply_subject, wire::encode(&event)?)
        .await
        .map_err(|e| Error::jetstream("publish sources")(e.into()))?;

    if let Lookup::Hit(entry) = lookup {
        serve_hit(shared, &job, entry, attempt).await?;
        return Ok(count);
    }
    ensure_model(shared, &request.model).await?;
    let mut headers = names::request_headers(&request.gateway, &request.id);
    if let Lookup::Miss {
        key,
        model_fingerprint,
    } = &lookup
    {
        headers.insert(names::CACHE_KEY_HEADER, key.as_str());
        headers.insert(names::MODEL_FINGERPRINT_HEADER, model_fingerprint.as_str());
    }
    let ack = shared
        .js
        .publish_with_headers(
            names::prompt_subject(&request.model),
            headers,
            wire::encode(&job)?,
        )
        .await
        .map_err(|e| Error::jetstream("publish prompt job")(e.into()))?
        .await
        .map_err(|e| Error::jetstream("prompt job ack")(e.into()))?;
    if ack.duplicate {
        info!(request_id = %request.id, attempt, "prompt job already published, duplicate dropped");
    }
    Ok(count)
}

/// Characters per delta when a cached answer is streamed back.
const CACHED_DELTA_CHARS: usize = 24;

/// Streams a cached answer in the shape of a generated one: the stored result (so
/// that every delta is in the record before it is sent), deltas, then `done` marked as
/// cached. No prompt job is published.
async fn serve_hit(
    shared: &Shared,
    job: &PromptJob,
    entry: CacheEntry,
    attempt: u32,
) -> Result<()> {
    let request = &job.request;
    let reply_subject = names::events_subject(&request.gateway, &request.id);
    // answered from the response cache: none of the prompt was computed
    let usage = wire::Usage {
        cached_tokens: entry.usage.prompt_tokens,
        ..entry.usage
    };
    let result = StoredResult {
        status: ResultStatus::Done,
        text: entry.text.clone(),
        finish_reason: Some(entry.finish_reason),
        usage,
        sources: job.sources(),
        attempt,
        finished_at_ms: wire::now_ms(),
        replay_of: request.replay_of.clone(),
        ..StoredResult::queued(
            request.id.clone(),
            request.model.clone(),
            request.created_at_ms,
        )
    };
    let written = shared
        .results
        .advance(&result, FAIL_WRITE_LIMIT)
        .await
        .map_err(|e| Error::jetstream("store a cached result")(e.into()))?;
    if let cauce_nats::Written::Refused(current) = written {
        debug!(request_id = %request.id, status = current.status.as_str(), "the request had ended; cached answer not sent");
        return Ok(());
    }
    let mut seq = 0;
    let mut at = 0;
    let chars: Vec<char> = entry.text.chars().collect();
    for piece in chars.chunks(CACHED_DELTA_CHARS) {
        let text: String = piece.iter().collect();
        let len = text.len() as u64;
        let event = Event {
            request_id: request.id.clone(),
            attempt,
            seq,
            body: EventBody::Delta { text, at },
        };
        seq += 1;
        at += len;
        shared
            .client
            .publish(reply_subject.clone(), wire::encode(&event)?)
            .await
            .map_err(|e| Error::jetstream("publish a cached delta")(e.into()))?;
    }
    let body = EventBody::Done {
        finish_reason: entry.finish_reason,
        usage,
        timings: Timings::default(),
        cached: true,
        text_bytes: at,
    };
    let event = Event {
        request_id: request.id.clone(),
        attempt,
        seq,
        body,
    };
    shared
        .client
        .publish(reply_subject, wire::encode(&event)?)
        .await
        .map_err(|e| Error::jetstream("publish a cached done")(e.into()))?;
    debug!(request_id = %request.id, chars = chars.len(), "answered from the cache");
    Ok(())
}

/// Drops the passages the model's context cannot hold (see `fit.rs`).
async fn fit_context(shared: &Shared, mut job: PromptJob) -> Result<PromptJob> {
    if job.passages.is_empty() {
        return Ok(job);
    }
    let card = shared.cache.cards.get(&job.request.model).await;
    let counter = shared.config.prompt_counter.clone();
    let (job, fitted) = tokio::task::spawn_blocking(move || {
        let fitted = fit::fit(&mut job, card.as_ref(), counter.as_deref());
        (job, fitted)
    })
    .await
    .map_err(|source| Error::Task {
        what: "fit the context",
        source,
    })?;
    if fitted.dropped > 0 {
        debug!(request_id = %job.request.id, dropped = fitted.dropped, prompt_tokens = ?fitted.prompt_tokens, "passages dropped to fit the model's context");
    }
    Ok(job)
}

async fn retrieve(shared: &Shared, request: &ChatRequest) -> Result<Vec<Passage>> {
    if !request.retrieval.enabled || shared.searcher.passages() == 0 {
        return Ok(Vec::new());
    }
    let top_k = request.retrieval.top_k as usize;
    let searcher = shared.searcher.clone();
    let messages = request.messages.clone();
    let collections = request.retrieval.collections.clone();
    tokio::task::spawn_blocking(move || searcher.search(&messages, top_k, &collections))
        .await
        .map_err(|source| Error::Task {
            what: "search",
            source,
        })?
}

async fn ensure_model(shared: &Shared, model: &ModelName) -> Result<()> {
    if shared
        .ensured_models
        .lock()
        .expect("not poisoned")
        .contains(model)
    {
        return Ok(());
    }
    cauce_nats::ensure_inference_consumer(&shared.js, model).await?;
    shared
        .ensured_models
        .lock()
        .expect("not poisoned")
        .insert(model.clone());
    Ok(())
}
