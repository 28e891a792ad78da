//! The chat request: what the gateway publishes to `QUESTIONS` once it has validated
//! an HTTP request.

use serde::{Deserialize, Serialize};

use super::Wire;
use crate::ids::{Collection, GatewayId, ModelName, RequestId};

/// Who said a message of the conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One turn of the conversation, with its content flattened to text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// Sampling parameters of one request. `None` means "the worker's default".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sampling {
    /// Most tokens to generate; `None` runs until an end token or a full context.
    pub max_tokens: Option<u32>,
    /// 0 is greedy decoding.
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    /// Same seed, same prompt, same build: same answer.
    pub seed: Option<u64>,
    /// Generation stops before any of these strings; they are not part of the answer.
    pub stop: Vec<String>,
}

/// The most passages a request may ask for: the gateway refuses more, and retrieval
/// never gives more.
pub const MAX_TOP_K: u32 = 32;

/// Whether and how to retrieve context for a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetrievalOptions {
    pub enabled: bool,
    /// How many passages to put in the prompt, at most [`MAX_TOP_K`]: fewer when the
    /// model's context cannot hold them.
    pub top_k: u32,
    /// The collections to search; empty searches every document.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub collections: Vec<Collection>,
}

/// The most collections one request may name.
pub const MAX_COLLECTIONS: usize = 16;

impl Default for RetrievalOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            top_k: 4,
            collections: Vec::new(),
        }
    }
}

/// A validated chat request, as published to `cauce.questions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub id: RequestId,
    /// The gateway that owns the reply subject.
    pub gateway: GatewayId,
    pub model: ModelName,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub sampling: Sampling,
    #[serde(default)]
    pub retrieval: RetrievalOptions,
    /// When the gateway accepted the request, in Unix milliseconds.
    pub created_at_ms: u64,
    /// After this instant (Unix milliseconds) the request is answered with an error,
    /// not generated.
    pub deadline_ms: u64,
    /// The request this one re-runs, when it was made by `cauce replay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<RequestId>,
}

impl ChatRequest {
    /// Whether the answer is a function of the request alone: greedy decoding or an
    /// explicit seed. Only such answers are cached.
    pub fn is_deterministic(&self) -> bool {
        self.sampling.temperature.is_some_and(|t| t <= 0.0) || self.sampling.seed.is_some()
    }

    /// The last user turn, which retrieval searches for.
    pub fn last_user_message(&self) -> Option<&ChatMessage> {
        self.messages.iter().rev().find(|m| m.role == Role::User)
    }
}

impl Wire for ChatRequest {
    const WHAT: &'static str = "chat request";
}
