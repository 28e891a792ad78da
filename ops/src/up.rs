//! `cauce up`: the whole service in one process, with defaults that need no flag.
//!
//! Today it finds or starts NATS and sets up every stream, consumer and bucket, then
//! waits for Ctrl-C. The retrieval worker, inference worker and gateway join it as
//! their crates are built.

use anyhow::Context;
use cauce_nats::{Action, connect, ensure};
use clap::Args;
use tracing::info;

use crate::cli::{HomeArgs, LimitsArgs, NatsArgs};
use crate::local_nats;

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    home: HomeArgs,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    limits: LimitsArgs,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let home = args.home.dir()?;
    std::fs::create_dir_all(&home)
        .with_context(|| format!("creating the cauce home directory {}", home.display()))?;
    let limits = args.limits.limits();
    info!(home = %home.display(), nats_url = %args.nats.nats_url, ?limits, "cauce up");

    let nats_url = args.nats.nats_url.clone();
    let home_for_nats = home.clone();
    let local_nats =
        tokio::task::spawn_blocking(move || local_nats::find_or_start(&nats_url, &home_for_nats))
            .await??;

    let client = connect(&args.nats.connect_options("cauce-up")?).await?;
    let js = cauce_nats::async_nats::jetstream::new(client.clone());
    for ensured in ensure(&js, &limits).await? {
        let action = match ensured.action {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Unchanged => "ready",
        };
        info!(object = %ensured.object, action, "jetstream");
    }
    println!(
        "cauce is up: NATS at {}, streams and buckets ready. Ctrl-C stops it.",
        args.nats.nats_url
    );

    shutdown_signal().await;
    info!("shutting down");
    client.drain().await.ok();
    if let Some(local_nats) = local_nats {
        tokio::task::spawn_blocking(move || local_nats.stop()).await?;
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
