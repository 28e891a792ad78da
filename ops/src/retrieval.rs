//! `cauce retrieval`: one retrieval worker. Any number can run against the same NATS;
//! each keeps its own index, built from and following the `DOCS` stream. Ctrl-C or
//! SIGTERM stops it gracefully (questions in hand finish or are redelivered); a second
//! signal exits at once.

use std::path::PathBuf;
use std::sync::Arc;

use cauce_inference::Vocabularies;
use cauce_nats::{Need, PromptCounter, connect};
use cauce_retrieval::{Language, WorkerConfig};
use clap::Args;
use tracing::info;

use crate::cache::CacheArgs;
use crate::cli::{HomeArgs, LimitsArgs, NatsArgs};
use crate::signals;

#[derive(Debug, Args)]
pub struct RetrievalArgs {
    /// Language of the corpus: english or spanish (stop words and stemming)
    #[arg(long, env = "CAUCE_LANGUAGE", default_value = "english")]
    language: Language,
    /// Index directory [default: <home>/index/<language>]
    #[arg(long, env = "CAUCE_INDEX_DIR")]
    index_dir: Option<PathBuf>,
    /// Folders searched for the inference workers' model files, whose vocabulary
    /// counts prompts exactly [default: <home>/models and the installed model's folder]
    #[arg(long = "models-dir", env = "CAUCE_MODELS_DIR", value_delimiter = ',')]
    models_dirs: Vec<PathBuf>,
    /// Questions handled at once
    #[arg(long, env = "CAUCE_RETRIEVAL_CONCURRENCY", default_value_t = 8)]
    concurrency: usize,
    #[command(flatten)]
    pub cache: CacheArgs,
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
    config.prompt_counter = Some(prompt_counter(args.models_dirs.clone(), &args.home)?);
    config.concurrency = args.concurrency;
    args.cache.apply(&mut config);
    info!(?config, nats_url = %args.nats.nats_url, "cauce retrieval");

    let client = connect(
        &args
            .nats
            .connect_options(cauce_nats::permissions::Role::Retrieval, "cauce-retrieval")?,
    )
    .await?;
    let js = cauce_nats::async_nats::jetstream::new(client.clone());
    args.limits.check(&js, Need::RETRIEVAL).await?;
    let cancel = signals::shutdown_token()?;
    cauce_retrieval::run(config, client.clone(), cancel).await?;
    client.drain().await.ok();
    Ok(())
}

/// Counts prompts with the vocabulary of the model files found in `dirs` (the
/// default folders when empty), for fitting passages into a model's context.
pub fn prompt_counter(
    mut dirs: Vec<PathBuf>,
    home: &HomeArgs,
) -> anyhow::Result<Arc<dyn PromptCounter>> {
    if dirs.is_empty() {
        dirs.push(home.dir()?.join("models"));
        if let Some(installed) = cauce_inference::installed_model_path().parent() {
            dirs.push(installed.to_path_buf());
        }
    }
    Ok(Arc::new(Vocabularies::new(dirs)))
}
