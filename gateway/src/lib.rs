//! `cauce-gateway` owns HTTP: the OpenAI-compatible chat API with Server-Sent Events,
//! the tasks API, the chat page, admission control, API keys, the rate limit, health
//! and metrics. It is the only crate that maps errors to HTTP status codes (in
//! [`error`]). It does not search nor run models: everything behind it talks NATS.
//!
//! A request goes through the edge ([`validate`]: JSON body → `ValidChatRequest`, or a
//! `400` naming the field), admission control ([`admission`]: streams in flight,
//! `PROMPTS` backlog), then [`pending`]: subscribe to the reply subject, publish the
//! question with `Nats-Msg-Id`, wait for the ack, and relay events under the rules of
//! [`cauce_nats::relay`] (deltas lined up by their place in the answer, so a redelivered
//! job's continuation follows on without repeating text; holes filled from
//! `cauce-results`).
//!
//! Decisions made here:
//! - A cancelled generation reads as `finish_reason: "stop"` to OpenAI clients; the
//!   `cauce` extension field of the chunk says `cancelled`.
//! - The sources arrive in a chunk with an empty delta and a `cauce.sources` field, so
//!   that clients reading `choices[0].delta.content` see nothing unusual.
//! - The gateway's in-flight bound and the `PROMPTS` backlog bound answer `503` (the
//!   whole service is busy); the per-client rate limit answers `429`. Both carry
//!   `Retry-After`.
//! - A model without a live worker is not refused: its questions wait in the queue
//!   (and time out at their deadline), so workers may start after the gateway.
//! - A task's event stream can be followed from any gateway: it subscribes to the
//!   request's reply subject under any gateway id.

pub mod admission;
pub mod auth;
pub mod config;
pub mod edge;
pub mod error;
pub mod fuzz;
pub mod openai;
pub mod pending;
pub mod ratelimit;
pub mod routes;
mod server;
mod service;
pub mod state;
pub mod submit;
pub mod telemetry;
pub mod validate;
pub mod view;

pub use config::{GatewayConfig, RateLimit};
pub use error::{Error, Result};
pub use server::serve;
