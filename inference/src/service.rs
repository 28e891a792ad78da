//! Announcing a worker with the NATS service API, so that `cauce status`, `/v1/models`
//! and `/readyz` see it: name `cauce-inference`, the model and slots in its metadata,
//! live counters (busy slots, tokens generated) in its stats and `status` endpoint.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_nats::Client;
use async_nats::service::{Service, ServiceExt};
use cauce_nats::ModelName;
use cauce_nats::discovery::{META_MODEL, META_SLOTS};
use cauce_nats::metrics::{Metrics, STATS_KEY};
use cauce_nats::names::{WorkerKind, service_name};
use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::engine::{Engine, EngineStats, ModelInfo};
use crate::error::{Error, Result};

/// A running announcement; [`Announced::stop`] withdraws it.
pub struct Announced {
    service: Service,
    responder: JoinHandle<()>,
}

impl Announced {
    pub async fn stop(self) {
        self.responder.abort();
        let _ = self.service.stop().await;
    }
}

/// The worker's metrics, named as vLLM's are where they mean the same.
fn metrics(info: &ModelInfo, stats: &EngineStats) -> Metrics {
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed) as f64;
    let capacity = f64::from(info.slots) * f64::from(info.ctx_per_slot);
    let lookups = load(&stats.host_cache_lookups);
    let h = &stats.histograms;
    let mut m = Metrics::default();
    m.counter(
        "cauce_inference_prompt_tokens_total",
        load(&stats.prompt_tokens),
    )
    .counter(
        "cauce_inference_generation_tokens_total",
        load(&stats.tokens_generated),
    )
    .counter(
        "cauce_inference_cached_tokens_total",
        load(&stats.reused_prompt_tokens),
    )
    .counter(
        "cauce_inference_requests_finished_total",
        load(&stats.jobs_finished),
    )
    .counter("cauce_inference_host_cache_lookups_total", lookups)
    .counter(
        "cauce_inference_host_cache_hits_total",
        load(&stats.host_cache_restores),
    )
    .gauge("cauce_inference_running_sequences", load(&stats.busy_slots))
    .gauge("cauce_inference_waiting_sequences", load(&stats.waiting))
    .gauge(
        "cauce_inference_kv_cache_usage_ratio",
        load(&stats.kv_cells_used) / capacity.max(1.0),
    )
    .gauge(
        "cauce_inference_host_cache_bytes",
        load(&stats.host_cache_bytes),
    )
    .gauge(
        "cauce_inference_host_cache_entries",
        load(&stats.host_cache_entries),
    )
    .histogram("cauce_inference_queue_time_seconds", &h.queue)
    .histogram("cauce_inference_prefill_time_seconds", &h.prefill)
    .histogram("cauce_inference_decode_time_seconds", &h.decode)
    .histogram(
        "cauce_inference_time_to_first_token_seconds",
        &h.time_to_first_token,
    )
    .histogram(
        "cauce_inference_inter_token_latency_seconds",
        &h.inter_token,
    )
    .histogram("cauce_inference_batch_size_tokens", &h.batch_tokens);
    m
}

/// The live counters, as JSON, with the worker's metrics under
/// [`cauce_nats::metrics::STATS_KEY`].
pub fn stats_json(model: &ModelName, info: &ModelInfo, stats: &EngineStats) -> serde_json::Value {
    let slots = info.slots;
    serde_json::json!({
        STATS_KEY: metrics(info, stats),
        "model": model.as_str(),
        "slots": slots,
        "busy_slots": stats.busy_slots.load(Ordering::Relaxed),
        "tokens_generated": stats.tokens_generated.load(Ordering::Relaxed),
        "prompt_tokens": stats.prompt_tokens.load(Ordering::Relaxed),
        "reused_prompt_tokens": stats.reused_prompt_tokens.load(Ordering::Relaxed),
        "jobs_finished": stats.jobs_finished.load(Ordering::Relaxed),
        "jobs_continued": stats.jobs_continued.load(Ordering::Relaxed),
        "jobs_lost": stats.jobs_lost.load(Ordering::Relaxed),
        "cache_json_bytes": stats.cache_json_bytes.load(Ordering::Relaxed),
        "cache_stored_bytes": stats.cache_stored_bytes.load(Ordering::Relaxed),
        "host_cache_bytes": stats.host_cache_bytes.load(Ordering::Relaxed),
        "host_cache_entries": stats.host_cache_entries.load(Ordering::Relaxed),
        "host_cache_restores": stats.host_cache_restores.load(Ordering::Relaxed),
        "host_cache_restored_tokens": stats.host_cache_restored_tokens.load(Ordering::Relaxed),
    })
}

pub async fn announce(client: &Client, model: &ModelName, engine: &Engine) -> Result<Announced> {
    let slots = engine.info().slots;
    let stats: Arc<EngineStats> = engine.stats().clone();
    let metadata = HashMap::from([
        (META_MODEL.to_string(), model.to_string()),
        (META_SLOTS.to_string(), slots.to_string()),
        (
            "ctx_per_slot".to_string(),
            engine.info().ctx_per_slot.to_string(),
        ),
    ]);
    let handler_stats = stats.clone();
    let handler_model = model.clone();
    let info = engine.info().clone();
    let handler_info = info.clone();
    let service = client
        .service_builder()
        .description(format!("cauce inference worker for {model}"))
        .metadata(metadata)
        .stats_handler(move |_, _| stats_json(&handler_model, &handler_info, &handler_stats))
        .start(
            service_name(WorkerKind::Inference),
            env!("CARGO_PKG_VERSION"),
        )
        .await
        .map_err(|e| Error::nats("announce service", e))?;
    let mut endpoint = service
        .group(service_name(WorkerKind::Inference))
        .endpoint("status")
        .await
        .map_err(|e| Error::nats("service endpoint", e))?;
    let model = model.clone();
    let responder = tokio::spawn(async move {
        while let Some(request) = endpoint.next().await {
            let body = stats_json(&model, &info, &stats).to_string();
            let _ = request.respond(Ok(body.into())).await;
        }
    });
    Ok(Announced { service, responder })
}
