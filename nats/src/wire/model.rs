//! The model card: what an inference worker publishes about the model it serves.

use serde::{Deserialize, Serialize};

use super::Wire;

/// Written by inference workers to `cauce-cache` under [`crate::names::model_card_key`],
/// read by retrieval workers (cache keys, and fitting passages into the context).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelCard {
    /// SHA-256 of the GGUF file, hex: another file under the same name never shares
    /// cached answers.
    pub fingerprint: String,
    /// Tokens one sequence may hold, prompt and answer together.
    pub context_tokens: u32,
    /// The GGUF's file name (no folder), where another process looks for the
    /// model's vocabulary.
    pub file: String,
}

impl Wire for ModelCard {
    const WHAT: &'static str = "model card";
}
