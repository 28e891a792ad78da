//! `cauce retrieval`: one retrieval worker. Any number can run against the same NATS;
//! each keeps its own index, built from and following the `DOCS` stream. Ctrl-C or
//! SIGTERM stops it gracefully (questions in hand finish or are redelivered); a second
//! signal exits at once.

use std::path::PathBuf;

use anyhow::Context;
use cauce_nats::connect;
use cauce_retrieval::{Language, WorkerConfig};
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cli::{HomeArgs, LimitsArgs, NatsArgs};

#[derive(Debug, Args)]
pub struct RetrievalArgs {
    /// Language of the corpus: english or spanish (stop words and stemming)
    #[arg(long, env = "CAUCE_LANGUAGE", default_value = "english")]
    language: Language,
    /// Index directory [default: <home>/index/<language>]
    #[arg(long, env = "CAUCE_INDEX_DIR")]
    index_dir: Option<PathBuf>,
    /// Most passages a request may ask for
    #[arg(long, env = "CAUCE_MAX_TOP_K", default_value_t = 16)]
    max_top_k: usize,
    /// Characters of passage text put in one prompt
    #[arg(long, env = "CAUCE_CONTEXT_BUDGET", default_value_t = 6000)]
    context_budget: usize,
    /// Questions handled at once
    #[arg(long, env = "CAUCE_RETRIEVAL_CONCURRENCY", default_value_t = 8)]
    concurrency: usize,
    #[command(flatten)]
    home: HomeArgs,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    limits: LimitsArgs,
}

pub async fn run(args: RetrievalArgs) -> anyhow::Result<()> {
    let index_dir = match args.index_dir {
        Some(dir) => dir,
        None => cauce_retrieval::default_dir(&args.home.dir()?, args.language),
    };
    let mut config = WorkerConfig::new(index_dir);
    config.language = args.language;
    config.limits = args.limits.limits();
    config.max_top_k = args.max_top_k;
    config.context_budget_chars = args.context_budget;
    config.concurrency = args.concurrency;
    info!(?config, nats_url = %args.nats.nats_url, "cauce retrieval");

    let client = connect(&args.nats.connect_options("cauce-retrieval")?).await?;
    let cancel = cancel_on_signals()?;
    cauce_retrieval::run(config, client.clone(), cancel).await?;
    client.drain().await.ok();
    Ok(())
}

/// A token cancelled by the first Ctrl-C or SIGTERM; a second one of either exits at
/// once. Service managers (systemd, Kubernetes, `docker stop`) send SIGTERM and wait a
/// grace period before SIGKILL: the first signal starts the phased shutdown.
pub(crate) fn cancel_on_signals() -> anyhow::Result<CancellationToken> {
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = tokio::signal::ctrl_c() => "interrupt",
            _ = terminate.recv() => "terminate",
        };
        info!(
            signal = name,
            "shutting down, a second signal exits at once"
        );
        on_signal.cancel();
        let name = tokio::select! {
            _ = tokio::signal::ctrl_c() => "interrupt",
            _ = terminate.recv() => "terminate",
        };
        warn!(signal = name, "exiting at once");
        std::process::exit(130);
    });
    Ok(cancel)
}
