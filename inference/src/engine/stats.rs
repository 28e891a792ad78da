//! The counters and histograms an engine keeps for its worker's stats and metrics.

use std::sync::atomic::AtomicU64;

use cauce_nats::metrics::{self, Histogram};

/// Counters a worker announces; written by the engine thread, except the job and
/// cache counters the worker keeps.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub busy_slots: AtomicU64,
    pub tokens_generated: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub reused_prompt_tokens: AtomicU64,
    pub jobs_finished: AtomicU64,
    /// Jobs that continued an answer an earlier attempt began.
    pub jobs_continued: AtomicU64,
    /// Jobs this worker stopped because another attempt took them over (the worker
    /// was too slow to say it was alive).
    pub jobs_lost: AtomicU64,
    /// Answers stored in the response cache: their JSON size and their stored (zstd) size.
    pub cache_json_bytes: AtomicU64,
    pub cache_stored_bytes: AtomicU64,
    /// The host cache of idle prompts' KV: bytes and entries held, restores, and the
    /// prompt tokens those restores gave.
    pub host_cache_bytes: AtomicU64,
    pub host_cache_entries: AtomicU64,
    pub host_cache_restores: AtomicU64,
    pub host_cache_restored_tokens: AtomicU64,
    /// Admissions that looked in the host cache (its hit rate is restores over these).
    pub host_cache_lookups: AtomicU64,
    /// Jobs waiting for a slot inside the engine (few: the worker pulls jobs only for
    /// free slots, so queued work waits in `PROMPTS`, whose backlog `cauce status`
    /// shows).
    pub waiting: AtomicU64,
    /// KV cells the slots' sequences hold (shared cells counted once per sequence).
    pub kv_cells_used: AtomicU64,
    pub histograms: EngineHistograms,
}

/// Latency and size distributions of the engine's work, for the worker's metrics.
#[derive(Debug)]
pub struct EngineHistograms {
    /// From acceptance by the gateway to admission into a slot.
    pub queue: Histogram,
    /// From admission to the first token.
    pub prefill: Histogram,
    /// From the first token to the last.
    pub decode: Histogram,
    /// From acceptance to the first token.
    pub time_to_first_token: Histogram,
    /// Between two tokens of one sequence.
    pub inter_token: Histogram,
    /// Tokens of each decode step.
    pub batch_tokens: Histogram,
}

impl Default for EngineHistograms {
    fn default() -> Self {
        Self {
            queue: Histogram::new(metrics::SECONDS),
            prefill: Histogram::new(metrics::SECONDS),
            decode: Histogram::new(metrics::SECONDS),
            time_to_first_token: Histogram::new(metrics::SECONDS),
            inter_token: Histogram::new(metrics::SECONDS),
            batch_tokens: Histogram::new(metrics::TOKENS),
        }
    }
}
