//! Counting prompts in a model's own tokens outside the engine: the
//! [`PromptCounter`] that `cauce` hands to retrieval workers, so that the passages
//! they put into a prompt leave it room in the model's context.
//!
//! A [`ModelCard`] names the GGUF file an inference worker serves and its SHA-256.
//! [`Vocabularies`] looks for that file in its folders, checks the hash, and loads the
//! model's vocabulary alone (no weights, a few MiB), once per fingerprint; then a
//! prompt is counted by rendering and tokenizing it exactly as the engine does
//! ([`prompt::tokens`]). The first count of a model hashes its file (a second or so
//! per GiB) and loads the vocabulary; counts wait for it once. Without the file (looked
//! for again after a minute) the count is an upper bound: one token
//! per byte of the messages (no token of these vocabularies is shorter than a byte)
//! plus a generous allowance per message for the template.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cauce_nats::PromptCounter;
use cauce_nats::wire::{ModelCard, PromptJob};
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatTemplate, LlamaModel};
use tracing::{info, warn};

use crate::engine::backend;
use crate::error::{Error, Result};
use crate::prompt;

/// Tokens allowed per message for the template's markup when counting by bytes.
const TEMPLATE_ALLOWANCE: usize = 64;

/// The vocabularies of the models whose cards were seen, loaded once each.
#[derive(Debug)]
pub struct Vocabularies {
    folders: Vec<PathBuf>,
    /// By fingerprint, with when it was first asked for; `None` once the file was not
    /// found or did not load (looked for again after [`RETRY_MISSING`]).
    loaded: Mutex<HashMap<String, (Instant, Slot)>>,
}

type Slot = Arc<OnceLock<Option<Vocabulary>>>;

/// How long a model file that was not found is not looked for again.
const RETRY_MISSING: Duration = Duration::from_secs(60);

struct Vocabulary {
    model: LlamaModel,
    template: LlamaChatTemplate,
}

impl std::fmt::Debug for Vocabulary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vocabulary")
    }
}

impl Vocabularies {
    /// Looks for model files in `folders`, in order.
    pub fn new(folders: Vec<PathBuf>) -> Self {
        Self {
            folders,
            loaded: Mutex::default(),
        }
    }

    fn vocabulary(&self, card: &ModelCard) -> Slot {
        let slot = {
            let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            let entry = loaded
                .entry(card.fingerprint.clone())
                .or_insert_with(|| (Instant::now(), Slot::default()));
            if matches!(entry.1.get(), Some(None)) && entry.0.elapsed() > RETRY_MISSING {
                *entry = (Instant::now(), Slot::default());
            }
            entry.1.clone()
        };
        // loaded outside the map's lock: other models' prompts are counted meanwhile
        slot.get_or_init(|| self.load(card));
        slot
    }

    fn load(&self, card: &ModelCard) -> Option<Vocabulary> {
        // a bare file name: a card never points outside the folders
        let bare = Path::new(&card.file).file_name() == Some(std::ffi::OsStr::new(&card.file));
        if !bare {
            warn!(file = %card.file, "a model card names a path, not a file name: ignored");
            return None;
        }
        let found = self
            .folders
            .iter()
            .map(|f| f.join(&card.file))
            .find(|path| {
                path.is_file() && file_fingerprint(path).is_ok_and(|f| f == card.fingerprint)
            });
        let Some(path) = found else {
            warn!(file = %card.file, folders = ?self.folders, "the model file of an inference worker is not here (or differs): passages are fitted by a byte count, which leaves unused room");
            return None;
        };
        match load_vocabulary(&path) {
            Ok(vocabulary) => {
                info!(path = %path.display(), "model vocabulary loaded for counting prompts");
                Some(vocabulary)
            }
            Err(err) => {
                warn!(path = %path.display(), error = %err, "the model vocabulary did not load: passages are fitted by a byte count");
                None
            }
        }
    }
}

impl PromptCounter for Vocabularies {
    fn prompt_tokens(&self, card: &ModelCard, job: &PromptJob) -> usize {
        let slot = self.vocabulary(card);
        let exact = slot
            .get()
            .and_then(Option::as_ref)
            .and_then(|v| prompt::tokens(&v.model, &v.template, job).ok());
        exact.map_or_else(|| byte_bound(job), |tokens| tokens.len())
    }
}

fn load_vocabulary(path: &Path) -> Result<Vocabulary> {
    let params = LlamaModelParams::default().with_vocab_only(true);
    let model =
        LlamaModel::load_from_file(backend()?, path, &params).map_err(|e| Error::ModelLoad {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let template = prompt::template(&model)?;
    Ok(Vocabulary { model, template })
}

/// Each job's whole prompt in the tokens of the model file at `path` (its vocabulary
/// alone is loaded), as the engine would prefill it: for a benchmark to compare prompts.
pub fn prompt_token_ids(path: &Path, jobs: &[PromptJob]) -> Result<Vec<Vec<i32>>> {
    let vocabulary = load_vocabulary(path)?;
    (jobs.iter())
        .map(|job| {
            let tokens = prompt::tokens(&vocabulary.model, &vocabulary.template, job)?;
            Ok(tokens.iter().map(|t| t.0).collect())
        })
        .collect()
}

/// At least as many tokens as the job's prompt has, whatever the vocabulary.
pub fn byte_bound(job: &PromptJob) -> usize {
    let messages = prompt::messages(job);
    let text: usize = messages.iter().map(|m| m.content.len()).sum();
    text + TEMPLATE_ALLOWANCE * (messages.len() + 1)
}

/// SHA-256 of a model file, hex: what a [`ModelCard`] names a file by.
pub fn file_fingerprint(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let read_error = |e: std::io::Error| Error::ModelLoad {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(read_error)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
