//! Dense embeddings for hybrid retrieval: all-MiniLM-L6-v2 (a 6-layer BERT, 384
//! dimensions) run on the CPU by its own forward pass ([`bert`]), with its WordPiece
//! tokenizer. A text's vector is the mean of its tokens' last hidden states,
//! L2-normalized, as sentence-transformers computes it, so a dot product is the cosine
//! similarity.
//!
//! `ops/setup` installs the model's three files, each checked by SHA-256, into
//! `<home>/models/all-MiniLM-L6-v2`.

use std::path::{Path, PathBuf};

use tokenizers::{Tokenizer, TruncationParams};

mod bert;

/// The folder name `ops/setup` installs the model under, in the models directory.
pub const MODEL_DIR_NAME: &str = "all-MiniLM-L6-v2";
/// Dimensions of a vector.
pub const DIM: usize = 384;
/// Tokens of a text the model reads, at most: the length it was trained at (it reads
/// up to 256 at twice the cost); the rest of a longer passage is left out of its
/// vector, not of the index.
pub const MAX_TOKENS: usize = 128;
/// Tokens of a search's question the model reads, at most, counting the two it adds (so
/// 30 word pieces). A search waits for its question's vector, about 0.4 ms a token
/// here; a longer question (a pasted paragraph, an error log) is ranked by its words
/// alone, which find its page better than a vector of part of it.
pub const QUESTION_TOKENS: usize = 32;

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
    model: bert::Bert,
    tokenizer: Tokenizer,
    /// The same, cut to a question's [`QUESTION_TOKENS`].
    question_tokenizer: Tokenizer,
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
        let shape: bert::Shape = serde_json::from_slice(&read("config.json")?)
            .map_err(|err| load_error(format!("config.json: {err}")))?;
        if shape.hidden_size != DIM {
            return Err(load_error(format!(
                "{} dimensions, not {DIM}",
                shape.hidden_size
            )));
        }
        let tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|err| load_error(format!("tokenizer.json: {err}")))?;
        let truncated = |max_length| {
            let mut tokenizer = tokenizer.clone();
            tokenizer
                .with_truncation(Some(TruncationParams {
                    max_length,
                    ..TruncationParams::default()
                }))
                .map_err(|err| load_error(format!("truncation: {err}")))?;
            tokenizer.with_padding(None);
            Ok::<_, EmbedError>(tokenizer)
        };
        let question_tokenizer = truncated(QUESTION_TOKENS)?;
        let tokenizer = truncated(MAX_TOKENS)?;
        let model = bert::Bert::load(&read("model.safetensors")?, shape)
            .map_err(|err| load_error(format!("model.safetensors: {err}")))?;
        Ok(Self {
            model,
            tokenizer,
            question_tokenizer,
        })
    }

    /// The vector of a search's question from `turns` (the earlier user turns, then the
    /// question): of all of them when they fit in [`QUESTION_TOKENS`], else of the
    /// question alone; `None` when that does not fit either (or there is no turn).
    pub fn embed_question(&self, turns: &[&str]) -> Result<Option<Vec<f32>>, EmbedError> {
        let Some(question) = turns.last() else {
            return Ok(None);
        };
        let joined = turns.join("\n");
        let texts = [joined.as_str(), question];
        // one turn: joined is the question
        for text in &texts[usize::from(turns.len() == 1)..] {
            let encoding = self
                .question_tokenizer
                .encode(*text, true)
                .map_err(|e| EmbedError::Run(e.to_string()))?;
            if encoding.get_overflowing().is_empty() {
                return self.mean(encoding.get_ids()).map(Some);
            }
        }
        Ok(None)
    }

    /// The vectors of `texts`, in order, each of [`DIM`] floats with length 1. Several
    /// texts are shared among the CPU's cores; one runs on the calling thread.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(texts.len());
        if threads <= 1 {
            return texts.iter().map(|text| self.embed_one(text)).collect();
        }
        let share = texts.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let parts: Vec<_> = texts
                .chunks(share)
                .map(|part| {
                    scope.spawn(move || -> Result<Vec<_>, EmbedError> {
                        part.iter().map(|text| self.embed_one(text)).collect()
                    })
                })
                .collect();
            let mut vectors = Vec::with_capacity(texts.len());
            for part in parts {
                let part = part
                    .join()
                    .map_err(|_| EmbedError::Run("an embedding thread panicked".into()))?;
                vectors.extend(part?);
            }
            Ok(vectors)
        })
    }

    /// The vector of one text, on this thread.
    fn embed_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbedError::Run(e.to_string()))?;
        self.mean(encoding.get_ids())
    }

    /// The normalized mean of the last hidden states of `ids`.
    fn mean(&self, ids: &[u32]) -> Result<Vec<f32>, EmbedError> {
        let mut mean = self.model.mean_hidden(ids).map_err(EmbedError::Run)?;
        let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        mean.iter_mut().for_each(|v| *v /= norm);
        Ok(mean)
    }
}

/// The dot product of two vectors of length 1: their cosine similarity (summed in
/// vector lanes: the nearest search takes one per passage of the index).
pub fn similarity(a: &[f32], b: &[f32]) -> f32 {
    bert::dot(a, b)
}
