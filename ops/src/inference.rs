//! `cauce inference`: one inference worker for one model. Any number can run against
//! the same NATS; workers of one model share its `PROMPTS` consumer.

use std::path::PathBuf;

use anyhow::Context;
use cauce_inference::{EngineConfig, WorkerConfig, default_model_path};
use cauce_nats::{ModelName, Need, connect};
use clap::Args;
use tracing::info;

use crate::cli::{HomeArgs, LimitsArgs, NatsArgs};
use crate::signals;

/// How the model is loaded and run.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// GGUF model file [default: <home>/models/SmolLM2-135M-Instruct.Q4_1.gguf]
    #[arg(long, env = "CAUCE_MODEL")]
    pub model: Option<PathBuf>,
    /// Name the model is served under (the `model` of API requests)
    #[arg(long, env = "CAUCE_MODEL_NAME", default_value = ModelName::DEFAULT)]
    pub model_name: ModelName,
    /// Sequences decoded together: the most requests one worker serves at once
    #[arg(long, env = "CAUCE_SLOTS", default_value_t = 8)]
    pub slots: u32,
    /// Context length of each sequence, in tokens (prompt and answer)
    #[arg(long, env = "CAUCE_CTX_SIZE", default_value_t = 2048)]
    pub ctx_size: u32,
    /// CPU threads for decoding [default: all cores]
    #[arg(long, env = "CAUCE_THREADS", default_value_t = 0)]
    pub threads: u32,
    /// Most tokens in one decode step
    #[arg(long, env = "CAUCE_BATCH_SIZE", default_value_t = 512)]
    pub batch_size: u32,
    /// Layers to offload to the GPU (needs a build with `--features cuda`)
    #[arg(long, env = "CAUCE_N_GPU_LAYERS", default_value_t = 0)]
    pub n_gpu_layers: u32,
    /// MiB of host memory for idle prompts' KV, restored by prompts that share their
    /// prefix (0: idle prompts stay in their slots)
    #[arg(long, env = "CAUCE_CACHE_RAM", default_value_t = (cauce_inference::DEFAULT_CACHE_RAM >> 20) as u64)]
    pub cache_ram: u64,
}

impl ModelArgs {
    pub fn worker_config(&self, home: &HomeArgs) -> anyhow::Result<WorkerConfig> {
        let model_path = match &self.model {
            Some(path) => path.clone(),
            None => default_model_path(&home.dir()?),
        };
        let engine = EngineConfig {
            model_path,
            ctx_per_slot: self.ctx_size,
            slots: self.slots,
            threads: self.threads,
            batch_size: self.batch_size,
            n_gpu_layers: self.n_gpu_layers,
            cache_ram: (self.cache_ram as usize) << 20,
        };
        Ok(WorkerConfig::new(self.model_name.clone(), engine))
    }
}

#[derive(Debug, Args)]
pub struct InferenceArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    home: HomeArgs,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    limits: LimitsArgs,
}

pub async fn run(args: InferenceArgs) -> anyhow::Result<()> {
    let config = args.model.worker_config(&args.home)?;
    info!(?config, nats_url = %args.nats.url_for_logs(), "cauce inference");
    let client = connect(&args.nats.connect_options(
        cauce_nats::permissions::Role::Inference,
        &format!("cauce-inference {}", config.model),
    )?)
    .await?;
    let js = cauce_nats::async_nats::jetstream::new(client.clone());
    args.limits.check(&js, Need::INFERENCE).await?;
    let cancel = signals::shutdown_token()?;
    cauce_inference::run(config, client.clone(), cancel)
        .await
        .context("inference worker")?;
    client.drain().await.ok();
    Ok(())
}
