//! Announcing the gateway with the NATS service API, so that `cauce status` and other
//! tools find every running gateway and its streams in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_nats::service::ServiceExt;
use cauce_nats::discovery::META_GATEWAY;
use cauce_nats::names::{WorkerKind, service_name};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::state::AppState;

/// Starts the service and answers its `status` endpoint until `cancel`.
pub async fn announce(
    state: AppState,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    let in_flight: Arc<AtomicUsize> = state.admission.in_flight_counter();
    let stats_in_flight = in_flight.clone();
    let gateway = state.config.id.to_string();
    let service = state
        .client
        .service_builder()
        .description("cauce HTTP gateway")
        .metadata(HashMap::from([(META_GATEWAY.to_string(), gateway.clone())]))
        .stats_handler(move |_endpoint, _stats| {
            json!({"streams_in_flight": stats_in_flight.load(Ordering::Relaxed)})
        })
        .start(service_name(WorkerKind::Gateway), env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|err| Error::Announce(err.to_string()))?;
    let mut endpoint = service
        .group(service_name(WorkerKind::Gateway))
        .endpoint("status")
        .await
        .map_err(|err| Error::Announce(err.to_string()))?;
    Ok(tokio::spawn(async move {
        loop {
            let request = tokio::select! {
                _ = cancel.cancelled() => break,
                request = endpoint.next() => request,
            };
            let Some(request) = request else { break };
            let body = json!({
                "gateway": gateway,
                "streams_in_flight": in_flight.load(Ordering::Relaxed),
            });
            if let Err(err) = request.respond(Ok(body.to_string().into())).await {
                tracing::debug!(error = %err, "status reply failed");
            }
        }
        if let Err(err) = service.stop().await {
            tracing::debug!(error = %err, "stopping the service announcement failed");
        }
    }))
}
