//! Metrics: their names, the request-counting middleware, and the Prometheus recorder
//! behind `GET /metrics`.
//!
//! The recorder is installed once per process; a second gateway in the same process
//! (tests, `cauce up` with several) shares it.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter: HTTP requests by `route` and `status`.
pub const REQUESTS: &str = "cauce_gateway_requests_total";
/// Counter: requests refused before they were queued, by `reason`.
pub const REJECTIONS: &str = "cauce_gateway_rejections_total";
/// Histogram: acceptance to the first token.
pub const TIME_TO_FIRST_TOKEN: &str = "cauce_gateway_time_to_first_token_seconds";
/// Histogram: between two tokens of one answer.
pub const INTER_TOKEN_LATENCY: &str = "cauce_gateway_inter_token_latency_seconds";
/// Histogram: time a job waited for a model, as its worker reports it.
pub const QUEUE_WAIT: &str = "cauce_gateway_queue_wait_seconds";
/// Histogram: acceptance to the last event.
pub const REQUEST_DURATION: &str = "cauce_gateway_request_duration_seconds";
/// Counter: tokens by `kind` (`prompt`, `completion`).
pub const TOKENS: &str = "cauce_gateway_tokens_total";
/// Gauge: streams this gateway holds open.
pub const STREAMS_IN_FLIGHT: &str = "cauce_gateway_streams_in_flight";
/// Counter: events the relay dropped or gaps it saw, by `reason`.
pub const RELAY_DROPPED: &str = "cauce_gateway_relay_dropped_events_total";
/// Counter: cancels sent, by `reason` (`disconnect`, `deadline`, `shutdown`, `api`).
pub const CANCELS: &str = "cauce_gateway_cancels_total";
/// Counter: requests that ended, by `outcome` (`done`, `failed`, `cancelled`).
pub const OUTCOMES: &str = "cauce_gateway_outcomes_total";
/// Counter: answers served from the response cache.
pub const CACHE_HITS: &str = "cauce_cache_hits_total";
/// Counter: deterministic requests a model answered (cache misses).
pub const CACHE_MISSES: &str = "cauce_cache_misses_total";
/// Counter: bytes of answer text served from the cache instead of a model.
pub const CACHE_BYTES_SAVED: &str = "cauce_cache_saved_bytes_total";

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus handle, installing the recorder on first use. When
/// another recorder was installed first, the handle renders nothing.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was already installed: /metrics shows only its own"
                );
            }
            handle
        })
        .clone()
}

/// Drains histogram buckets now and then, as the exporter asks.
pub async fn upkeep(handle: PrometheusHandle, cancel: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

/// Middleware counting requests by matched route and status.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(REQUESTS, "route" => route, "status" => status).increment(1);
    response
}

/// Timing of one request's tokens.
#[derive(Debug)]
pub struct TokenClock {
    accepted: Instant,
    last_token: Option<Instant>,
}

impl TokenClock {
    pub fn start() -> Self {
        Self {
            accepted: Instant::now(),
            last_token: None,
        }
    }

    pub fn token(&mut self) {
        let now = Instant::now();
        match self.last_token {
            None => metrics::histogram!(TIME_TO_FIRST_TOKEN).record(now - self.accepted),
            Some(last) => metrics::histogram!(INTER_TOKEN_LATENCY).record(now - last),
        }
        self.last_token = Some(now);
    }

    pub fn finish(&self) {
        metrics::histogram!(REQUEST_DURATION).record(self.accepted.elapsed());
    }
}
