//! `cauce-inference` will own the llama.cpp engine (model, chat template, continuous
//! batching, sampling, stop handling) on its own thread, and the worker that pulls
//! prompt jobs for one model from `PROMPTS` and streams token deltas to reply subjects.
//!
//! It does not retrieve context nor talk HTTP. Not built yet; the foundation only
//! reserves the crate.
