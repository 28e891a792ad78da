//! Running the gateway: the HTTP server, its NATS service announcement, and shutdown
//! in phases (stop accepting, let running streams finish within the grace period, then
//! cut what is left).

use std::net::SocketAddr;
use std::sync::Arc;

use async_nats::Client;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::edge::{self, Edge};
use crate::error::Result;
use crate::state::{AppState, Shared};
use crate::{routes, service, telemetry};

/// Refuses to serve beyond loopback with no API key unless told to, and warns when told.
fn open_network_allowed(state: &AppState, address: SocketAddr) -> std::io::Result<()> {
    let keys = state.api_keys.required() || state.admin_keys.required();
    if keys || address.ip().is_loopback() {
        return Ok(());
    }
    if !state.config.open_without_keys {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "listening on {address}, beyond this machine, with no API key: anyone who \
                 reaches it could chat, upload and delete. Give --api-keys-file and \
                 --admin-api-keys-file, or --open-without-keys to serve it open anyway"
            ),
        ));
    }
    tracing::warn!(%address, "serving beyond this machine with no API key (--open-without-keys): anyone who reaches it may chat, upload and delete");
    Ok(())
}

/// Serves the gateway on `listener` until `cancel`, then shuts down gracefully.
///
/// The streams and buckets must exist (`cauce_nats::apply`, run by `cauce up` or
/// `cauce nats apply`); the caller owns the NATS client and drains it after this
/// returns.
pub async fn serve(
    config: GatewayConfig,
    client: Client,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<()> {
    let address = listener.local_addr()?;
    tracing::info!(%address, ?config, "gateway starting");
    let edge = Arc::new(
        Edge::new(address, &config.allowed_hosts, &config.allowed_origins)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
    );
    let metrics = telemetry::handle();
    let grace = config.shutdown_grace;
    let state = Arc::new(Shared::new(config, client, metrics.clone(), cancel.clone()).await?);
    let background = CancellationToken::new();
    let upkeep = tokio::spawn(telemetry::upkeep(metrics, background.clone()));
    let announcement = service::announce(state.clone(), background.clone()).await?;
    let view = tokio::spawn(state.view.clone().keep_fresh(
        state.client.clone(),
        state.config.view_refresh,
        state.config.discovery_wait,
        background.clone(),
    ));
    let every = std::time::Duration::from_secs(2);
    let keys_reloaders: Vec<_> = [
        (&state.api_keys, &state.config.api_keys_file),
        (&state.admin_keys, &state.config.admin_api_keys_file),
    ]
    .into_iter()
    .filter_map(|(keys, file)| {
        let file = file.clone()?;
        Some(tokio::spawn(keys.clone().keep_fresh(
            file,
            every,
            background.clone(),
        )))
    })
    .collect();
    let sweeper = tokio::spawn(sweep_rate_limits(state.clone(), background.clone()));
    open_network_allowed(&state, address)?;

    let app = routes::router(state.clone())
        .layer(axum::middleware::from_fn_with_state(edge, edge::check))
        .into_make_service_with_connect_info::<SocketAddr>();
    // small SSE events must leave at once, not wait on Nagle for the client's ACK
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
    });
    let server =
        axum::serve(listener, app).with_graceful_shutdown(cancel.clone().cancelled_owned());
    let server = std::future::IntoFuture::into_future(server);
    tokio::pin!(server);
    tracing::info!(%address, gateway = %state.config.id, "gateway listening");
    let outcome = tokio::select! {
        outcome = &mut server => outcome,
        () = async { cancel.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(streams = state.admission.in_flight(), "shutdown grace over, ending running streams");
            state.stop_streams.cancel();
            server.await
        }
    };
    state.stop_streams.cancel();
    background.cancel();
    let _ = announcement.await;
    let _ = view.await;
    let _ = sweeper.await;
    for reloader in keys_reloaders {
        let _ = reloader.await;
    }
    upkeep.abort();
    tracing::info!(gateway = %state.config.id, "gateway stopped");
    Ok(outcome?)
}

/// Drops idle rate-limit buckets now and then, off the request path.
async fn sweep_rate_limits(state: AppState, cancel: CancellationToken) {
    let Some(limiter) = &state.rate_limiter else {
        return;
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => limiter.sweep(),
        }
    }
}
