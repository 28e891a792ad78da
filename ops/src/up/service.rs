//! `cauce up` on the NATS service API, as the workers are: `cauce status` finds it and
//! shows each child, its pid, restarts and how its last run ended.

use async_nats::service::{Service, ServiceExt};
use cauce_nats::names::{WorkerKind, service_name};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::children::ChildState;

/// The running announcement.
pub struct Announced {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Announced {
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// The children's states, as the stats and the `children` endpoint give them.
fn children_json(children: &[watch::Receiver<ChildState>]) -> serde_json::Value {
    let states: Vec<ChildState> = children.iter().map(|c| c.borrow().clone()).collect();
    json!({ "children": states })
}

/// Announces `cauce up` with its children's states until [`Announced::stop`].
pub async fn announce(
    client: &async_nats::Client,
    children: Vec<watch::Receiver<ChildState>>,
) -> anyhow::Result<Announced> {
    let for_stats = children.clone();
    let service: Service = client
        .service_builder()
        .description("cauce up: the launcher of one process per component")
        .stats_handler(move |_endpoint, _stats| children_json(&for_stats))
        .start(
            service_name(WorkerKind::Launcher),
            env!("CARGO_PKG_VERSION"),
        )
        .await
        .map_err(|err| anyhow::anyhow!("announcing cauce up: {err}"))?;
    let mut endpoint = service
        .group(service_name(WorkerKind::Launcher))
        .endpoint("children")
        .await
        .map_err(|err| anyhow::anyhow!("announcing cauce up: {err}"))?;
    let cancel = CancellationToken::new();
    let stopped = cancel.clone();
    let task = tokio::spawn(async move {
        loop {
            let request = tokio::select! {
                _ = stopped.cancelled() => break,
                request = endpoint.next() => request,
            };
            let Some(request) = request else { break };
            let body = children_json(&children).to_string();
            if let Err(err) = request.respond(Ok(body.into())).await {
                tracing::debug!(error = %err, "children reply failed");
            }
        }
        if let Err(err) = service.stop().await {
            tracing::debug!(error = %err, "stopping the service announcement failed");
        }
    });
    Ok(Announced { cancel, task })
}
