//! What every handler shares: the configuration, the NATS handles, admission control.

use std::sync::Arc;

use async_nats::Client;
use async_nats::jetstream::{self, kv};
use cauce_nats::uploads::Uploads;
use cauce_nats::{Results, names};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::auth::ApiKeys;
use crate::config::GatewayConfig;
use crate::error::{Error, Result};
use crate::ratelimit::RateLimiter;
use crate::view::WorkerView;

/// Shared by every handler; cheap to clone.
pub type AppState = Arc<Shared>;

pub struct Shared {
    pub config: GatewayConfig,
    pub client: Client,
    pub js: jetstream::Context,
    pub results: Results,
    pub cancels: kv::Store,
    pub admission: Admission,
    pub rate_limiter: Option<RateLimiter>,
    pub api_keys: ApiKeys,
    /// Keys that may also write documents.
    pub admin_keys: ApiKeys,
    /// Uploaded documents: files, records and jobs.
    pub uploads: Uploads,
    pub metrics: PrometheusHandle,
    /// Live workers and models, refreshed in the background.
    pub view: WorkerView,
    /// Cancelled when shutdown starts: `/readyz` turns 503, new requests get 503.
    pub shutting_down: CancellationToken,
    /// Cancelled when the shutdown grace is over: running streams end.
    pub stop_streams: CancellationToken,
}

impl Shared {
    pub async fn new(
        config: GatewayConfig,
        client: Client,
        metrics: PrometheusHandle,
        shutting_down: CancellationToken,
    ) -> Result<Self> {
        let js = jetstream::new(client.clone());
        let results = Results::new(bucket(&js, names::RESULTS_BUCKET).await?);
        let cancels = bucket(&js, names::CANCELS_BUCKET).await?;
        let admission = Admission::new(
            config.max_in_flight,
            config.max_backlog,
            config.backlog_refresh,
        );
        Ok(Self {
            rate_limiter: config.rate_limit.map(RateLimiter::new),
            api_keys: keys(&config.api_keys, config.api_keys_file.as_deref())?,
            admin_keys: keys(
                &config.admin_api_keys,
                config.admin_api_keys_file.as_deref(),
            )?,
            uploads: Uploads::open(&js)
                .await
                .map_err(|err| Error::nats("open the uploads", err))?,
            config,
            client,
            js,
            results,
            cancels,
            admission,
            metrics,
            view: WorkerView::default(),
            stop_streams: CancellationToken::new(),
            shutting_down,
        })
    }
}

fn keys(keys: &[String], file: Option<&std::path::Path>) -> Result<ApiKeys> {
    ApiKeys::with_file(keys, file).map_err(|err| {
        Error::Serve(std::io::Error::other(format!(
            "reading the API keys file {}: {err}",
            file.unwrap_or(std::path::Path::new("")).display()
        )))
    })
}

async fn bucket(js: &jetstream::Context, name: &str) -> Result<kv::Store> {
    js.get_key_value(name).await.map_err(|err| Error::Nats {
        action: "open bucket",
        reason: format!("{name}: {err} (run `cauce nats apply` or `cauce up` once to create the streams and buckets)"),
    })
}
