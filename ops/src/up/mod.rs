//! `cauce up`: the whole service in one process, with defaults that need no flag.
//!
//! It uses the NATS at `--nats-url` or starts a `nats-server` child when nothing answers
//! there, sets up every stream and bucket, ingests the bundled corpus when `DOCS` is
//! empty, then runs one retrieval worker, one inference worker, one ingest worker (uploads)
//! and the gateway — the same code `cauce retrieval`, `cauce inference`, `cauce ingest
//! --follow` and `cauce gateway` run alone. Ctrl-C
//! shuts down in order: the gateway stops accepting and finishes its streams, the
//! workers drain, the NATS child goes last. A second Ctrl-C exits at once.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cauce_ingest::{IngestOptions, ProgressMode};
use cauce_nats::async_nats::jetstream;
use cauce_nats::{connect, names};
use cauce_retrieval::Language;
use clap::Args;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cache::CacheArgs;
use crate::cli::{HomeArgs, LimitsArgs, NatsArgs};
use crate::gateway::GatewayHttpArgs;
use crate::inference::ModelArgs;
use crate::{local_nats, signals};

include!(concat!(env!("OUT_DIR"), "/bundled_docs.rs"));

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    home: HomeArgs,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    limits: LimitsArgs,
    #[command(flatten)]
    http: GatewayHttpArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    hybrid: crate::retrieval::HybridArgs,
    /// Language of the corpus: english or spanish
    #[arg(long, env = "CAUCE_LANGUAGE", default_value = "english")]
    language: Language,
    /// Folder ingested when DOCS is empty [default: ./docs if present, else the copy
    /// bundled in the binary]
    #[arg(long, env = "CAUCE_DOCS")]
    docs: Option<PathBuf>,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let home = args.home.dir()?;
    std::fs::create_dir_all(&home)
        .with_context(|| format!("creating the cauce home directory {}", home.display()))?;
    let inference_config = args.model.worker_config(&args.home)?;
    let mut gateway_config = args.http.config()?;
    let address = args.http.address()?;
    info!(home = %home.display(), nats_url = %args.nats.nats_url, "cauce up");

    let nats_url = args.nats.nats_url.clone();
    let nats_home = home.clone();
    let local_nats =
        tokio::task::spawn_blocking(move || local_nats::find_or_start(&nats_url, &nats_home))
            .await??;
    let shutdown = signals::shutdown_token()?;

    let client = connect(
        &args
            .nats
            .connect_options(cauce_nats::permissions::Role::Operator, "cauce-up")?,
    )
    .await?;
    let js = jetstream::new(client.clone());
    let limits = args.limits.apply(&js).await?;
    info!(?limits, "nats objects");
    let docs_dir = ingest_bundled_docs(&js, &home, args.docs.as_deref(), &shutdown).await?;
    gateway_config.docs_dir = Some(docs_dir);

    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address}; pass --port to use another port"))?;
    let url = format!("http://{}", listener.local_addr()?);

    let workers = CancellationToken::new();
    // cancelled when a component stops with an error, which stops the whole service
    let failed = CancellationToken::new();
    let index_dir = cauce_retrieval::default_dir(&home, args.language);
    let mut retrieval_config = cauce_retrieval::WorkerConfig::new(index_dir.clone());
    retrieval_config.language = args.language;
    retrieval_config.hybrid = args.hybrid.config(&args.home, args.language, &index_dir)?;
    // the inference worker's own file first
    let mut models_dirs: Vec<PathBuf> = (inference_config.engine.model_path.parent())
        .map(Path::to_path_buf)
        .into_iter()
        .collect();
    models_dirs.push(home.join("models"));
    retrieval_config.prompt_counter =
        Some(crate::retrieval::prompt_counter(models_dirs, &args.home)?);
    args.cache.apply(&mut retrieval_config);
    let retrieval = tokio::spawn(watch(
        failed.clone(),
        cauce_retrieval::run(retrieval_config, client.clone(), workers.clone()),
    ));
    let inference = tokio::spawn(watch(
        failed.clone(),
        cauce_inference::run(inference_config, client.clone(), workers.clone()),
    ));
    let ingest = tokio::spawn(watch(
        failed.clone(),
        follow_uploads(js.clone(), workers.clone()),
    ));
    let gateway_cancel = CancellationToken::new();
    let gateway = tokio::spawn(watch(
        failed.clone(),
        cauce_gateway::serve(
            gateway_config,
            client.clone(),
            listener,
            gateway_cancel.clone(),
        ),
    ));

    println!("cauce is up: the chat page is at {url}/");
    println!(
        "try: curl -N {url}/v1/chat/completions -H 'Content-Type: application/json' \
         -d '{{\"model\":\"{}\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"What is cauce?\"}}]}}'",
        args.model.model_name
    );

    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = failed.cancelled() => {}
    }
    info!("stopping the gateway");
    gateway_cancel.cancel();
    let gateway_result = gateway.await.context("gateway task")?;
    info!("draining the workers");
    workers.cancel();
    let retrieval_result = retrieval.await.context("retrieval task")?;
    let inference_result = inference.await.context("inference task")?;
    let ingest_result = ingest.await.context("ingest task")?;
    client.drain().await.ok();
    if let Some(local_nats) = local_nats {
        tokio::task::spawn_blocking(move || local_nats.stop()).await?;
    }
    gateway_result.context("gateway")?;
    retrieval_result.context("retrieval worker")?;
    inference_result.context("inference worker")?;
    ingest_result.context("ingest worker")?;
    info!("cauce stopped");
    Ok(())
}

/// The ingest worker of uploads, as `cauce ingest --follow` runs it.
async fn follow_uploads(
    js: jetstream::Context,
    cancel: CancellationToken,
) -> Result<(), cauce_ingest::Error> {
    cauce_ingest::follow(&js, cauce_ingest::ChunkOptions::default(), &cancel).await
}

/// Runs a component; an error cancels `failed`, so the service stops as a whole.
async fn watch<E>(
    failed: CancellationToken,
    component: impl Future<Output = Result<(), E>>,
) -> Result<(), E> {
    let result = component.await;
    if result.is_err() {
        failed.cancel();
    }
    result
}

/// Ingests the bundled corpus when `DOCS` holds nothing yet; returns its folder, which
/// the gateway serves under `/docs/` so that source links open.
async fn ingest_bundled_docs(
    js: &jetstream::Context,
    home: &Path,
    docs: Option<&Path>,
    cancel: &CancellationToken,
) -> anyhow::Result<PathBuf> {
    let folder = match docs {
        Some(folder) => folder.to_path_buf(),
        None if Path::new("docs").is_dir() => PathBuf::from("docs"),
        None => write_bundled_docs(home)?,
    };
    let mut stream = js
        .get_stream(names::DOCS)
        .await
        .context("looking up DOCS")?;
    if stream.info().await.context("reading DOCS")?.state.messages > 0 {
        return Ok(folder);
    }
    info!(folder = %folder.display(), "DOCS is empty: ingesting the bundled corpus");
    let options = IngestOptions {
        paths: vec![folder.clone()],
        id_prefix: Some("guide".into()),
        location_base: Some("docs/".into()),
        progress: ProgressMode::Quiet,
        ..IngestOptions::default()
    };
    let summary = cauce_ingest::run(options, js, cancel)
        .await
        .context("ingesting the bundled corpus")?;
    info!(%summary, "bundled corpus ingested");
    Ok(folder)
}

/// Writes the corpus bundled in the binary to `home/docs`.
pub(crate) fn write_bundled_docs(home: &Path) -> anyhow::Result<PathBuf> {
    let folder = home.join("docs");
    std::fs::create_dir_all(&folder)?;
    for (name, text) in BUNDLED_DOCS {
        std::fs::write(folder.join(name), text)?;
    }
    Ok(folder)
}
