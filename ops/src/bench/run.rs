//! What a benchmark run records, as written to `--out run.json` and read back by
//! `--compare` and `cauce bench report`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One request as the simulated user saw it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Sample {
    /// When the request was sent, in seconds from the start of its level.
    pub start_s: f64,
    /// Time to first token (first non-empty content), when one came.
    pub ttft_ms: Option<f64>,
    /// From sending the request to the end of the stream.
    pub e2e_ms: f64,
    /// Completion tokens: from `usage` when the server sent it, else content chunks.
    pub completion_tokens: u64,
    /// Prompt tokens, when the server reported them.
    pub prompt_tokens: Option<u64>,
    /// Prompt tokens the server reused from a cache (`prompt_tokens_details`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Gaps between consecutive content chunks, in milliseconds.
    #[serde(skip)]
    pub gaps_ms: Vec<f64>,
    /// Arrival of each content chunk, in seconds from the start of the level.
    #[serde(skip)]
    pub chunk_at_s: Vec<f64>,
    /// Set when the request failed: a stable label (`connect`, `http_503`, `stream`…).
    pub error: Option<String>,
}

/// Percentiles of one latency, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub mean: f64,
}

/// The figures of one concurrency level.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LevelSummary {
    pub users: u32,
    pub requests_ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// From the first request sent to the last one finished.
    pub wall_s: f64,
    pub requests_per_min: f64,
    pub completion_tokens: u64,
    pub prompt_tokens: u64,
    /// Prompt tokens served from the server's caches.
    #[serde(default)]
    pub cached_tokens: u64,
    /// Completion tokens of every request over the wall time.
    pub tokens_per_s: f64,
    pub ttft_ms: Percentiles,
    /// Gaps between content chunks.
    pub itl_ms: Percentiles,
    pub e2e_ms: Percentiles,
    /// Worker mode only: prompt tokens over the time until the last first token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_tokens_per_s: Option<f64>,
    /// Worker mode only: completion tokens over the wall time after the last first
    /// token (llama-batched-bench's `S_TG`, measured the same way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_tokens_per_s: Option<f64>,
}

/// One level: its figures, every request, and completion tokens per second of the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Level {
    pub summary: LevelSummary,
    pub samples: Vec<Sample>,
    /// Content chunks that arrived in each second of the level.
    pub throughput_per_s: Vec<u64>,
}

/// A whole run: what was loaded, how, and each level's figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Run {
    pub label: String,
    /// `http` (an OpenAI-compatible endpoint) or `nats` (one worker through NATS).
    pub mode: String,
    pub target: String,
    /// Whether the target answered as cauce (its `/v1/models` says `owned_by: cauce`).
    pub cauce: bool,
    pub retrieval: bool,
    pub model: String,
    pub max_tokens: u32,
    pub started_at: String,
    /// With `--prompts-from`: the share of the prompts (in the model's tokens with
    /// `--tokenizer`, else in characters) that each prompt has in common with the start
    /// of an earlier one, the most an exact prefix cache serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_ceiling: Option<f64>,
    pub levels: Vec<Level>,
}

impl Run {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read(path)
            .with_context(|| format!("reading the benchmark run {}", path.display()))?;
        serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a cauce bench run", path.display()))
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
    }

    /// The level with `users` users, if the run has one.
    pub fn level(&self, users: u32) -> Option<&Level> {
        self.levels.iter().find(|l| l.summary.users == users)
    }
}
