//! `cauce retrieval`: one retrieval worker. Any number can run against the same NATS;
//! each keeps its own index, built from and following the `DOCS` stream. Ctrl-C or
//! SIGTERM stops it gracefully (questions in hand finish or are redelivered); a second
//! signal exits at once.

use std::path::PathBuf;
use std::sync::Arc;

use cauce_inference::Vocabularies;
use cauce_nats::{Need, PromptCounter, connect};
use cauce_retrieval::embed::MODEL_DIR_NAME;
use cauce_retrieval::hybrid::{self, HybridConfig};
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
    pub hybrid: HybridArgs,
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
    let mut config = WorkerConfig::new(index_dir.clone());
    config.hybrid = args.hybrid.config(&args.home, args.language, &index_dir)?;
    config.language = args.language;
    config.prompt_counter = Some(prompt_counter(args.models_dirs.clone(), &args.home)?);
    config.concurrency = args.concurrency;
    args.cache.apply(&mut config);
    info!(?config, nats_url = %args.nats.url_for_logs(), "cauce retrieval");

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

/// Whether searches fuse BM25 with dense vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HybridMode {
    /// On for English when the embedding model is installed (ops/setup installs it)
    Auto,
    /// On; the worker does not start without the model
    On,
    /// BM25 alone
    Off,
}

/// Hybrid ranking: BM25's candidates re-scored with all-MiniLM-L6-v2's vectors.
#[derive(Debug, Clone, Args)]
pub struct HybridArgs {
    /// Fuse BM25 with dense vectors: auto (English, model installed), on or off
    #[arg(long, env = "CAUCE_HYBRID", value_enum, default_value_t = HybridMode::Auto)]
    hybrid: HybridMode,
    /// Weight of the dense similarity in the fused score, 0 to 1
    #[arg(long, env = "CAUCE_HYBRID_WEIGHT", default_value_t = hybrid::DEFAULT_WEIGHT)]
    hybrid_weight: f32,
    /// Passages nearest the question by their vectors that join BM25's candidates (0:
    /// BM25's candidates alone are re-scored)
    #[arg(long, env = "CAUCE_DENSE_CANDIDATES", default_value_t = hybrid::DEFAULT_DENSE_CANDIDATES)]
    dense_candidates: usize,
    /// Folder of the embedding model [default: <home>/models/all-MiniLM-L6-v2]
    #[arg(long, env = "CAUCE_EMBEDDING_MODEL")]
    embedding_model: Option<PathBuf>,
    /// File the passages' vectors are kept in [default: <index dir>/vectors.bin]
    #[arg(long, env = "CAUCE_VECTORS_FILE")]
    vectors_file: Option<PathBuf>,
}

impl HybridArgs {
    /// The hybrid settings for a worker of `language` whose index is `index_dir`, or
    /// `None` when hybrid ranking is off.
    pub fn config(
        &self,
        home: &HomeArgs,
        language: Language,
        index_dir: &std::path::Path,
    ) -> anyhow::Result<Option<HybridConfig>> {
        let model_dir = match &self.embedding_model {
            Some(dir) => dir.clone(),
            None => home.dir()?.join("models").join(MODEL_DIR_NAME),
        };
        let installed = model_dir.join("model.safetensors").is_file();
        let on = match self.hybrid {
            HybridMode::Off => false,
            HybridMode::On => true,
            // all-MiniLM-L6-v2 is an English model
            HybridMode::Auto => installed && language == Language::English,
        };
        if !on {
            info!(mode = ?self.hybrid, installed, %language, "hybrid ranking off: BM25 alone");
            return Ok(None);
        }
        if !(0.0..=1.0).contains(&self.hybrid_weight) {
            anyhow::bail!(
                "--hybrid-weight must be between 0 and 1, not {}",
                self.hybrid_weight
            );
        }
        Ok(Some(HybridConfig {
            model_dir,
            vectors_file: (self.vectors_file.clone())
                .unwrap_or_else(|| index_dir.join("vectors.bin")),
            weight: self.hybrid_weight,
            dense_candidates: self.dense_candidates,
        }))
    }
}
