//! Events on a request's reply subject `cauce.events.<gateway>.<request>`.

use serde::{Deserialize, Serialize};

use super::{Source, Wire};
use crate::ids::RequestId;

/// One event of a request's answer.
///
/// `attempt` is the JetStream delivery count of the job that produced the event (a
/// redelivered job starts a new attempt, which continues the same answer) and `seq`
/// numbers the events of one attempt from 0. A delta says where in the whole answer
/// its text goes (`at`), so a reader lines up the pieces of every attempt without
/// counting them; see [`crate::relay`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub request_id: RequestId,
    pub attempt: u32,
    pub seq: u64,
    #[serde(flatten)]
    pub body: EventBody,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// The retrieved sources, sent before the first token.
    Sources { sources: Vec<Source> },
    /// The next piece of the answer: whole UTF-8 characters, never a retracted stop
    /// string. `at` is the byte offset of `text` in the whole answer; the request's
    /// record held at least the answer up to the end of `text` before it was sent.
    Delta {
        text: String,
        #[serde(default)]
        at: u64,
    },
    /// The answer is complete.
    Done {
        finish_reason: FinishReason,
        usage: Usage,
        #[serde(default)]
        timings: Timings,
        /// The answer came from the response cache, not from a model.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        cached: bool,
        /// The length in bytes of the whole answer's text, so that a reader knows
        /// whether it missed the end (0: not said).
        #[serde(default)]
        text_bytes: u64,
    },
    /// The request failed; this is its last event.
    Error { kind: ErrorKind, message: String },
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached, or the context is full.
    Length,
    /// Cancelled by the client or an operator.
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// Token counts, as OpenAI reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Prompt tokens whose KV came from a cache instead of being computed (OpenAI's
    /// `prompt_tokens_details.cached_tokens`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_tokens: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Usage {
    pub fn total_tokens(&self) -> u32 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// Where the time of one request went, measured by the worker that answered it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timings {
    /// From acceptance by the gateway to the start of prefill.
    pub queue_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
}

/// The stable kinds of error a request can end with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The job's deadline passed before it could be generated.
    DeadlineExceeded,
    /// The prompt does not fit the model's context.
    ContextOverflow,
    /// The chat template could not render the conversation.
    Template,
    /// The job failed on every delivery.
    DeliveriesExhausted,
    /// A worker gave the job up without saying why (a message it could not read).
    Terminated,
    /// The request is malformed.
    InvalidRequest,
    /// A fault inside a worker.
    Internal,
    /// A kind this build does not know, from a newer writer.
    #[serde(other)]
    Other,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
            ErrorKind::ContextOverflow => "context_overflow",
            ErrorKind::Template => "template",
            ErrorKind::DeliveriesExhausted => "deliveries_exhausted",
            ErrorKind::Terminated => "terminated",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Internal => "internal",
            ErrorKind::Other => "other",
        }
    }
}

impl Wire for Event {
    const WHAT: &'static str = "event";
}
