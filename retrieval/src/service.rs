//! Announcing a worker with the NATS service API: `$SRV.INFO/STATS/PING` under
//! `cauce-retrieval`, with the index size, the last applied `DOCS` sequence, records
//! applied since start, searches and their latency in the stats, and a `status`
//! endpoint answering the same figures.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_nats::Client;
use async_nats::service::{Service, ServiceExt};
use cauce_nats::metrics::Metrics;
use cauce_nats::names::{self, WorkerKind};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::error::{Error, Result};
use crate::follow::FollowStatus;
use crate::search::Searcher;

/// The figures a retrieval worker reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct WorkerStats {
    pub language: String,
    pub index_dir: String,
    /// Passages in the index.
    pub passages: u64,
    /// Bytes the index takes on disk.
    pub index_bytes: u64,
    /// Last `DOCS` sequence applied.
    pub docs_seq: u64,
    /// `DOCS` records applied since the worker started.
    pub applied: u64,
    pub caught_up: bool,
    /// Why the index cannot follow `DOCS` right now (the worker then serves a stale
    /// index and reports it); absent when it follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follower_error: Option<String>,
    pub searches: u64,
    pub search_avg_us: u64,
    pub search_max_us: u64,
    /// The same figures and more for Prometheus (see [`cauce_nats::metrics`]).
    #[serde(default)]
    pub metrics: Metrics,
}

/// What the stats are read from.
#[derive(Clone)]
pub(crate) struct StatsSource {
    pub language: String,
    pub index_dir: std::path::PathBuf,
    pub searcher: Searcher,
    pub follow: watch::Receiver<FollowStatus>,
}

impl StatsSource {
    pub(crate) fn read(&self) -> WorkerStats {
        let follow = self.follow.borrow().clone();
        let stats = Arc::clone(self.searcher.stats());
        let searches = stats.searches.load(Ordering::Relaxed);
        let passages = self.searcher.passages();
        let mut metrics = Metrics::default();
        metrics
            .counter("cauce_retrieval_searches_total", searches as f64)
            .gauge("cauce_retrieval_index_passages", passages as f64)
            .gauge(
                "cauce_retrieval_index_documents",
                self.searcher.documents() as f64,
            )
            .gauge("cauce_retrieval_follower_lag_records", follow.lag as f64)
            .gauge(
                cauce_nats::metrics::RETRIEVAL_DOCS_SEQUENCE,
                follow.docs_seq as f64,
            )
            .histogram("cauce_retrieval_search_time_seconds", &stats.latency);
        if let Some(hybrid) = self.searcher.hybrid() {
            if let Some(pending) = hybrid.pending() {
                metrics.gauge("cauce_retrieval_vectors_pending_passages", pending as f64);
            }
            metrics
                .gauge("cauce_retrieval_vectors", hybrid.vectors() as f64)
                .counter(
                    "cauce_retrieval_hybrid_searches_total",
                    stats.hybrid_fused.load(Ordering::Relaxed) as f64,
                )
                .counter(
                    "cauce_retrieval_hybrid_warming_searches_total",
                    stats.hybrid_warming.load(Ordering::Relaxed) as f64,
                )
                .counter(
                    "cauce_retrieval_hybrid_long_question_searches_total",
                    stats.hybrid_long.load(Ordering::Relaxed) as f64,
                );
        }
        WorkerStats {
            metrics,
            language: self.language.clone(),
            index_dir: self.index_dir.display().to_string(),
            passages,
            index_bytes: dir_size(&self.index_dir),
            docs_seq: follow.docs_seq,
            applied: follow.applied,
            caught_up: follow.caught_up,
            follower_error: follow.error,
            searches,
            search_avg_us: stats
                .total_micros
                .load(Ordering::Relaxed)
                .checked_div(searches)
                .unwrap_or(0),
            search_max_us: stats.max_micros.load(Ordering::Relaxed),
        }
    }
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Starts the service; the returned task answers `status` requests until the service stops.
pub(crate) async fn announce(
    client: &Client,
    source: StatsSource,
) -> Result<(Service, JoinHandle<()>)> {
    let name = names::service_name(WorkerKind::Retrieval);
    let for_stats = source.clone();
    let metadata = HashMap::from([
        ("language".to_string(), source.language.clone()),
        (
            "index_dir".to_string(),
            source.index_dir.display().to_string(),
        ),
    ]);
    let service = client
        .service_builder()
        .description("cauce retrieval worker: BM25 over the local index of DOCS")
        .metadata(metadata)
        .stats_handler(move |_endpoint, _stats| {
            serde_json::to_value(for_stats.read()).unwrap_or_default()
        })
        .start(name, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| Error::jetstream("start the service API")(e))?;
    let mut endpoint = service
        .group(name)
        .endpoint("status")
        .await
        .map_err(|e| Error::jetstream("add the status endpoint")(e))?;
    let task = tokio::spawn(async move {
        while let Some(request) = endpoint.next().await {
            let body = serde_json::to_vec(&source.read()).unwrap_or_default();
            if let Err(err) = request.respond(Ok(body.into())).await {
                debug!(error = %err, "status reply failed");
            }
        }
    });
    Ok((service, task))
}
