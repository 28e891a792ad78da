//! Engine options, with defaults sized for a small CPU machine.

use std::path::{Path, PathBuf};

/// File name of the default model that `ops/setup` installs.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where `ops/setup` puts the default model under a cauce home directory.
pub fn default_model_path(home: &Path) -> PathBuf {
    home.join("models").join(DEFAULT_MODEL_FILE)
}

/// The model `ops/setup` installed, as tests and tools find it: `$CAUCE_MODEL`, else
/// the default model under `$CAUCE_HOME`, else under `~/.local/share/cauce`.
pub fn installed_model_path() -> PathBuf {
    if let Some(path) = std::env::var_os("CAUCE_MODEL").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("CAUCE_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/share/cauce")
        });
    default_model_path(&home)
}

/// [`installed_model_path`], checked: a missing file is an error that says to run
/// `./ops/setup`.
pub fn installed_model() -> crate::Result<PathBuf> {
    let path = installed_model_path();
    if path.is_file() {
        Ok(path)
    } else {
        Err(crate::Error::ModelMissing { path })
    }
}

/// How the engine loads and runs a model.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The GGUF file.
    pub model_path: PathBuf,
    /// Context length of each sequence, in tokens (prompt and answer together).
    pub ctx_per_slot: u32,
    /// Sequences decoded together (the most concurrent requests one worker serves).
    pub slots: u32,
    /// CPU threads for decoding; 0 picks the number of available cores.
    pub threads: u32,
    /// Most tokens one decode step carries (prompt chunks plus one per running sequence).
    pub batch_size: u32,
    /// Layers offloaded to a GPU (needs a build with the `cuda` feature).
    pub n_gpu_layers: u32,
    /// Bytes of host memory for idle prompts' KV (the host cache); 0 keeps idle
    /// prompts in their slots instead.
    pub cache_ram: usize,
}

/// Host memory for idle prompts' KV unless configured: 2 GiB.
pub const DEFAULT_CACHE_RAM: usize = 2 << 30;

impl EngineConfig {
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        Self {
            model_path: model_path.into(),
            ctx_per_slot: 2048,
            slots: 8,
            threads: 0,
            batch_size: 512,
            n_gpu_layers: 0,
            cache_ram: DEFAULT_CACHE_RAM,
        }
    }

    /// The thread count to use: the configured one, or every available core.
    pub fn effective_threads(&self) -> i32 {
        if self.threads > 0 {
            return self.threads as i32;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get() as i32)
    }
}
