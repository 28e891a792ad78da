//! Dense embeddings for hybrid retrieval: all-MiniLM-L6-v2 (a 6-layer BERT, 384
//! dimensions) run by candle on the CPU, with its own WordPiece tokenizer. A text's
//! vector is the mean of its tokens' last hidden states, L2-normalized, as
//! sentence-transformers computes it, so a dot product is the cosine similarity.
//!
//! `ops/setup` installs the model's three files, each checked by SHA-256, into
//! `<home>/models/all-MiniLM-L6-v2`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The folder name `ops/setup` installs the model under, in the models directory.
pub const MODEL_DIR_NAME: &str = "all-MiniLM-L6-v2";
/// Dimensions of a vector.
pub const DIM: usize = 384;
/// Tokens of a text the model reads, at most: the length it was trained at (it reads
/// up to 256 at twice the cost); the rest of a longer passage is left out of its
/// vector, not of the index.
pub const MAX_TOKENS: usize = 128;

/// Why the model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("the embedding model is not installed in {dir} (run ops/setup): {reason}")]
    Missing { dir: PathBuf, reason: String },
    #[error("the embedding model in {dir} cannot be loaded: {reason}")]
    Load { dir: PathBuf, reason: String },
    #[error("embedding failed: {0}")]
    Run(String),
}

/// A loaded embedding model. Running it is CPU-bound: call it from a blocking thread.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl Embedder {
    /// Loads `model.safetensors`, `config.json` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|err| EmbedError::Missing {
                dir: dir.to_path_buf(),
                reason: format!("{name}: {err}"),
            })
        };
        let load_error = |reason: String| EmbedError::Load {
            dir: dir.to_path_buf(),
            reason,
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|err| load_error(format!("config.json: {err}")))?;
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|err| load_error(format!("tokenizer.json: {err}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|err| load_error(format!("truncation: {err}")))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        let device = Device::Cpu;
        let weights = read("model.safetensors")?;
        let vars = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(|err| load_error(format!("model.safetensors: {err}")))?;
        let model = BertModel::load(vars, &config)
            .map_err(|err| load_error(format!("model.safetensors: {err}")))?;
        if config.hidden_size != DIM {
            return Err(load_error(format!(
                "{} dimensions, not {DIM}",
                config.hidden_size
            )));
        }
        Ok(Self {
            model,
            tokenizer,
            device,
        })
    }

    /// The vectors of `texts`, in order, each of [`DIM`] floats with length 1.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let run = |err: &dyn std::fmt::Display| EmbedError::Run(err.to_string());
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| run(&e))?;
        let rows = |pick: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Result<Tensor, EmbedError> {
            let rows: Vec<Tensor> = encodings
                .iter()
                .map(|e| Tensor::new(pick(e), &self.device))
                .collect::<candle_core::Result<_>>()
                .map_err(|e| run(&e))?;
            Tensor::stack(&rows, 0).map_err(|e| run(&e))
        };
        let ids = rows(&|e| e.get_ids())?;
        let types = rows(&|e| e.get_type_ids())?;
        let mask = rows(&|e| e.get_attention_mask())?;
        let pooled = (|| {
            let hidden = self.model.forward(&ids, &types, Some(&mask))?;
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?.clamp(1.0, f64::MAX)?;
            let mean = summed.broadcast_div(&counts)?;
            let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
            mean.broadcast_div(&norms)?.to_vec2::<f32>()
        })()
        .map_err(|e: candle_core::Error| run(&e))?;
        Ok(pooled)
    }
}

/// The dot product of two vectors of length 1: their cosine similarity.
pub fn similarity(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
