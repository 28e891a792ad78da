//! `cauce-nats` is the one place that knows NATS: the names of every subject, stream,
//! consumer and bucket ([`names`]), the typed ids that go into them ([`ids`]), the
//! versioned JSON wire types ([`wire`]), the idempotent setup of JetStream objects
//! ([`apply()`] by the one owner step, [`check()`] by everyone else), how a process connects ([`connect()`]), and how a local
//! `nats-server` is run ([`server`], and [`testkit`] for tests).
//!
//! It does not know HTTP, search or models: the component crates use these types and
//! never format a subject string themselves.

pub mod cache;
pub mod connect;
pub mod dead;
pub mod discovery;
pub mod ensure;
pub mod error;
#[cfg(feature = "testkit")]
pub mod fuzz;
pub mod ids;
pub mod metrics;
pub mod model_card;
pub mod names;
pub mod permissions;
pub mod relay;
pub mod results;
pub mod retry;
pub mod search;
pub mod server;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod uploads;
pub mod wire;

pub use async_nats;
pub use connect::{Auth, ConnectOptions, Tls, connect};
pub use ensure::{
    Action, Ensured, Limits, Need, Retention, apply, check, ensure_inference_consumer, read,
};
pub use error::{Error, IdError, NotAcked, Result, WireError};
pub use ids::{Collection, DocId, GatewayId, ModelName, RequestId};
pub use model_card::{ModelCards, PromptCounter};
pub use results::{Claimed, Hold, Results, Written};
pub use retry::{Transient, until_acked};
