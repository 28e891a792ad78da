//! The inference worker: pulls prompt jobs for one model from `PROMPTS` only while it
//! has free slots, runs them on the [`Engine`], and streams events back.
//!
//! Per job, one task (see `job.rs`) claims the request's record in `cauce-results` for its attempt
//! (the JetStream delivery count) and owner ([`Results::claim`]), and continues the
//! answer the record holds: empty on a first attempt, what an earlier attempt sent when
//! its worker died. Before each batch of deltas it stores the answer so far
//! ([`Results::hold`]), then sends the deltas, each placed by its byte offset in the
//! answer; at the end it stores the result, sends `done` (or `error`), and acks. A
//! write refused means another attempt took the job over (this worker was too slow to
//! ack its progress): the run stops and sends nothing more. While it generates the task
//! sends in-progress acks four times per ack wait; a cancel on `cauce.cancel.<request>`
//! stops the sequence at the next step. A job cancelled while queued, or past its
//! deadline, is answered without being generated. A deterministic failure (a prompt longer than the context, a template
//! error) ends with an `error` event and a terminate ack; a transient one is nak'ed
//! with a delay until its deliveries run out.
//!
//! While it runs, the worker keeps its model's card (fingerprint, context size, file
//! name) in `cauce-cache` for retrieval workers ([`cauce_nats::model_card`]).
//!
//! Shutdown (the cancellation token): stop pulling, let running sequences finish within
//! the drain timeout, then stop the rest and nak them so another worker takes them at
//! once.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, kv};
use cauce_nats::cache::ResponseCache;
use cauce_nats::wire::ModelCard;
use cauce_nats::{ModelName, Need, Results, check, ensure_inference_consumer, names};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::EngineConfig;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::{job, service, vocab};

pub use crate::job::{LOG_CONTINUED, LOG_TAKEN_OVER};

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
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) engine: Engine,
    pub(crate) results: Results,
    pub(crate) cancels: kv::Store,
    pub(crate) cache: Arc<ResponseCache>,
    /// SHA-256 of the model file: answers are cached only under keys made with it.
    pub(crate) fingerprint: String,
    /// The model consumer's settings, as the server holds them.
    pub(crate) delivery: Delivery,
    pub(crate) config: WorkerConfig,
    /// Cancelled when the drain timeout is over: running jobs stop and are handed back.
    pub(crate) hand_back: CancellationToken,
    /// This process, as the owner of the records it holds (`host:pid`).
    pub(crate) worker_id: String,
    /// Job runs started, numbering each run's owner.
    pub(crate) runs: std::sync::atomic::AtomicU64,
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
    let model_path = config.engine.model_path.clone();
    let fingerprint = tokio::task::spawn_blocking(move || vocab::file_fingerprint(&model_path))
        .await
        .map_err(|e| Error::Context(e.to_string()))??;
    let slots = engine.info().slots as usize;
    let announced = service::announce(&client, &config.model, &engine).await?;
    info!(model = %config.model, slots, "inference worker ready");

    let card = ModelCard {
        fingerprint: fingerprint.clone(),
        context_tokens: engine.info().ctx_per_slot,
        file: config
            .engine
            .model_path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let publisher = {
        let (cache, model) = (cache.clone(), config.model.clone());
        let (ttl, cancel) = (limits.cache.max_age, cancel.clone());
        tokio::spawn(async move { cache.cards.keep(&model, &card, ttl, cancel).await })
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
                    jobs.spawn(job::run(shared.clone(), message, permit));
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
pub(crate) struct Delivery {
    pub(crate) ack_wait: Duration,
    /// -1 when the consumer sets no bound.
    pub(crate) max_deliveries: i64,
}

impl Delivery {
    pub(crate) fn is_last(&self, attempt: u32) -> bool {
        self.max_deliveries > 0 && i64::from(attempt) >= self.max_deliveries
    }
}

/// `host:pid`, naming this process in the records it holds.
fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}
