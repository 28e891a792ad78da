//! `cauce-inference` owns the llama.cpp engine and the inference worker.
//!
//! The [`engine`] runs on its own thread and owns the `llama-cpp-2` model and context:
//! it renders prompts with the model's own chat template ([`prompt`] documents how
//! retrieved passages become numbered sources), decodes every running sequence in one
//! batch per step (continuous batching with chunked prefill), samples each sequence
//! with its own parameters ([`sampling`]), and turns tokens into UTF-8-safe deltas that
//! never show a stop string ([`text`]).
//!
//! The [`worker`] pulls prompt jobs for one model from the `PROMPTS` stream only while
//! it has free slots, streams `delta` events to each request's reply subject, stores
//! the final result in `cauce-results`, and acks. It does not retrieve context nor
//! talk HTTP.
//!
//! Decisions: the KV cache is unified across sequences, sized `slots × ctx_per_slot`,
//! and each sequence may use at most `ctx_per_slot` tokens, so admitted sequences
//! always fit. A request without `max_tokens` runs until an end token or a full
//! context. A request without a seed samples with a seed derived from its id. A
//! redelivered job does not start again: it continues the answer its record holds
//! (see [`worker`]).

pub mod config;
pub mod engine;
pub mod error;
mod host_cache;
mod job;
mod placement;
pub mod prompt;
pub mod sampling;
pub mod service;
pub mod text;
pub mod vocab;
pub mod worker;

pub use config::{
    DEFAULT_CACHE_RAM, DEFAULT_MODEL_FILE, EngineConfig, default_model_path, installed_model,
    installed_model_path,
};
pub use engine::{Engine, EngineEvent, EngineStats, JobHandle, ModelInfo};
pub use error::{Error, Result};
pub use vocab::Vocabularies;
pub use worker::{WorkerConfig, run};
