//! Shutdown on signals: the first Ctrl-C or SIGTERM cancels the returned token so the
//! process drains in order; a second one exits at once. Service managers (systemd,
//! Kubernetes, `docker stop`) send SIGTERM and wait a grace period before SIGKILL: the
//! first signal starts the phased shutdown.

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A token cancelled by the first Ctrl-C or SIGTERM.
pub fn shutdown_token() -> anyhow::Result<CancellationToken> {
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        let Some(name) = next_signal(&mut terminate).await else {
            return;
        };
        info!(
            signal = name,
            "shutting down, a second signal exits at once"
        );
        on_signal.cancel();
        let Some(name) = next_signal(&mut terminate).await else {
            return;
        };
        warn!(signal = name, "exiting at once");
        crate::local_nats::kill_now();
        std::process::exit(130);
    });
    Ok(cancel)
}

/// The name of the next Ctrl-C or SIGTERM; `None` when neither can be received.
async fn next_signal(terminate: &mut Signal) -> Option<&'static str> {
    tokio::select! {
        Ok(()) = tokio::signal::ctrl_c() => Some("interrupt"),
        Some(()) = terminate.recv() => Some("terminate"),
        else => None,
    }
}
