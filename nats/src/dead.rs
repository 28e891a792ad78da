//! Dead letters: questions and prompt jobs that JetStream gave up on.
//!
//! No worker writes them: the server itself publishes an advisory when a message
//! exhausts its deliveries (`MAX_DELIVERIES`) or a worker terminates it
//! (`MSG_TERMINATED`), and the [`DEAD`](crate::names::DEAD) stream captures the
//! advisories of cauce's consumers. An advisory names the stream sequence of the
//! original message, which stays in `QUESTIONS` or `PROMPTS` until it ages out, so an
//! operator can read it and replay it once the cause is fixed.

use serde::Deserialize;

use crate::error::WireError;
use crate::names;

/// Why a message became a dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeadReason {
    /// Delivered `deliveries` times without an ack (workers crashed or timed out).
    MaxDeliveries { deliveries: u64 },
    /// A worker terminated it, for the reason given when the server knows one.
    Terminated { reason: Option<String> },
}

impl DeadReason {
    /// A stable snake_case label.
    pub fn kind(&self) -> &'static str {
        match self {
            DeadReason::MaxDeliveries { .. } => "max_deliveries",
            DeadReason::Terminated { .. } => "terminated",
        }
    }
}

impl std::fmt::Display for DeadReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeadReason::MaxDeliveries { deliveries } => {
                write!(f, "max_deliveries ({deliveries} deliveries)")
            }
            DeadReason::Terminated {
                reason: Some(reason),
            } if !reason.is_empty() => {
                write!(f, "terminated ({reason})")
            }
            DeadReason::Terminated { .. } => f.write_str("terminated"),
        }
    }
}

/// One dead-letter advisory, as the `DEAD` stream holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The stream the original message is in (`QUESTIONS` or `PROMPTS`).
    pub stream: String,
    /// The consumer that gave up on it.
    pub consumer: String,
    /// The original message's sequence in `stream`.
    pub stream_seq: u64,
    pub reason: DeadReason,
    /// When the server gave up, RFC 3339 as the advisory states it.
    pub timestamp: String,
}

/// The JSON fields of both advisory kinds that matter here.
#[derive(Deserialize)]
struct Advisory {
    stream: String,
    consumer: String,
    stream_seq: u64,
    #[serde(default)]
    deliveries: u64,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    timestamp: String,
}

impl DeadLetter {
    /// Reads an advisory published on `subject`.
    pub fn parse(subject: &str, payload: &[u8]) -> Result<Self, WireError> {
        const WHAT: &str = "dead-letter advisory";
        let advisory: Advisory = serde_json::from_slice(payload).map_err(|source| {
            if source.is_syntax() || source.is_eof() {
                WireError::NotJson { what: WHAT, source }
            } else {
                WireError::Schema { what: WHAT, source }
            }
        })?;
        let reason = if subject.starts_with(names::MAX_DELIVERIES_ADVISORY_PREFIX) {
            DeadReason::MaxDeliveries {
                deliveries: advisory.deliveries,
            }
        } else {
            DeadReason::Terminated {
                reason: advisory.reason.filter(|r| !r.is_empty()),
            }
        };
        Ok(Self {
            stream: advisory.stream,
            consumer: advisory.consumer,
            stream_seq: advisory.stream_seq,
            reason,
            timestamp: advisory.timestamp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_advisory_kinds_parse() {
        let max = br#"{"type":"io.nats.jetstream.advisory.v1.max_deliver","id":"x","timestamp":"2024-01-01T00:00:00Z","stream":"QUESTIONS","consumer":"retrieval","stream_seq":7,"deliveries":5}"#;
        let dead = DeadLetter::parse(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.QUESTIONS.retrieval",
            max,
        )
        .unwrap();
        assert_eq!(dead.stream_seq, 7);
        assert_eq!(dead.reason, DeadReason::MaxDeliveries { deliveries: 5 });
        assert_eq!(dead.reason.to_string(), "max_deliveries (5 deliveries)");

        let term = br#"{"type":"io.nats.jetstream.advisory.v1.terminated","stream":"PROMPTS","consumer":"inference-m","consumer_seq":3,"stream_seq":9,"deliveries":1,"reason":""}"#;
        let dead = DeadLetter::parse(
            "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.PROMPTS.inference-m",
            term,
        )
        .unwrap();
        assert_eq!((dead.stream.as_str(), dead.stream_seq), ("PROMPTS", 9));
        assert_eq!(dead.reason, DeadReason::Terminated { reason: None });
        assert!(DeadLetter::parse("x", b"nope").is_err());
    }
}
