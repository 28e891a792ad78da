//! The gateway's view of the service: which workers are live (and which models they
//! serve) and whether the streams it needs answer, kept fresh by one background task.
//!
//! `/readyz` and `/v1/models` read the view; they never run a discovery round of their
//! own (a round waits its whole gathering window, longer than a probe's timeout). The
//! view says how old it is and how many rounds made it, so a probe can tell a stale
//! view from a fresh one.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_nats::Client;
use async_nats::jetstream;
use cauce_nats::discovery::{self, META_MODEL};
use cauce_nats::metrics::Metrics;
use cauce_nats::names::{self, WorkerKind};
use tokio_util::sync::CancellationToken;

/// One snapshot of the service as the gateway sees it.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Why the gateway cannot serve, or `None` when it can.
    pub not_ready: Option<String>,
    /// Models with at least one live inference worker.
    pub models: BTreeSet<String>,
    /// Discovery rounds that made the view so far (0: none has finished yet).
    pub rounds: u64,
    /// When the last round finished.
    pub refreshed_at: Option<Instant>,
    /// Every live worker's metrics, with the labels `/metrics` shows them under.
    pub worker_metrics: Vec<(Vec<(&'static str, String)>, Metrics)>,
}

impl Snapshot {
    pub fn age(&self) -> Option<Duration> {
        self.refreshed_at.map(|at| at.elapsed())
    }
}

/// The shared view; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct WorkerView {
    current: Arc<RwLock<Snapshot>>,
}

impl WorkerView {
    pub fn snapshot(&self) -> Snapshot {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn store(&self, snapshot: Snapshot) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = snapshot;
    }

    /// Refreshes the view every `every` until `cancel` fires, each round gathering
    /// answers for `wait`.
    pub async fn keep_fresh(
        self,
        client: Client,
        every: Duration,
        wait: Duration,
        cancel: CancellationToken,
    ) {
        let js = jetstream::new(client.clone());
        let mut rounds = 0;
        loop {
            let (retrieval, inference) = tokio::join!(
                discovery::discover(&client, WorkerKind::Retrieval, wait),
                discovery::discover(&client, WorkerKind::Inference, wait),
            );
            let worker_metrics = [("retrieval", &retrieval), ("inference", &inference)]
                .into_iter()
                .flat_map(|(kind, found)| found.iter().flatten().map(move |w| (kind, w)))
                .filter_map(|(kind, worker)| labelled_metrics(kind, worker))
                .collect();
            let (not_ready, models) = round(&js, retrieval, inference).await;
            rounds += 1;
            self.store(Snapshot {
                not_ready,
                models,
                rounds,
                refreshed_at: Some(Instant::now()),
                worker_metrics,
            });
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// When every retrieval worker reports that its index cannot follow `DOCS`, why.
fn all_indexes_failing(workers: &[discovery::Instance]) -> Option<String> {
    let errors: Vec<&str> = workers
        .iter()
        .map(|w| {
            w.stats_data()
                .and_then(|data| data.get("follower_error"))
                .and_then(|error| error.as_str())
        })
        .collect::<Option<_>>()?;
    let first = errors.first()?;
    Some(format!(
        "no retrieval worker can update its index from DOCS: {first}"
    ))
}

/// A worker's metrics with its kind, id and model as labels.
fn labelled_metrics(
    kind: &'static str,
    worker: &discovery::Instance,
) -> Option<(Vec<(&'static str, String)>, Metrics)> {
    let metrics = Metrics::from_stats(worker.stats_data()?)?;
    let mut labels = vec![
        ("kind", kind.to_string()),
        ("worker", worker.info.id.clone()),
    ];
    if let Some(model) = worker.metadata(META_MODEL) {
        labels.push(("model", model.to_string()));
    }
    Some((labels, metrics))
}

/// What one discovery round (both worker kinds, found at once) and the streams say.
async fn round(
    js: &jetstream::Context,
    retrieval: cauce_nats::Result<Vec<discovery::Instance>>,
    inference: cauce_nats::Result<Vec<discovery::Instance>>,
) -> (Option<String>, BTreeSet<String>) {
    let models: BTreeSet<String> = inference
        .as_ref()
        .map(|workers| {
            workers
                .iter()
                .filter_map(|w| w.metadata(META_MODEL).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for stream in [names::QUESTIONS, names::PROMPTS] {
        if let Err(err) = js.get_stream(stream).await {
            return (
                Some(format!("stream {stream} is not available: {err}")),
                models,
            );
        }
    }
    if let Ok(workers) = &retrieval
        && let Some(reason) = all_indexes_failing(workers)
    {
        return (Some(reason), models);
    }
    for (found, what) in [(retrieval, "retrieval"), (inference, "inference")] {
        match found {
            Ok(found) if found.is_empty() => {
                return (Some(format!("no {what} worker is running")), models);
            }
            Ok(_) => {}
            Err(err) => {
                return (
                    Some(format!("cannot look for {what} workers: {err}")),
                    models,
                );
            }
        }
    }
    (None, models)
}
