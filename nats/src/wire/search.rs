//! A search request and its answer: the retrieval-only API (`POST /v1/search`), asked
//! of the retrieval workers over NATS request/reply ([`crate::search`]).

use serde::{Deserialize, Serialize};

use super::{ChatMessage, Source, Wire};
use crate::ids::Collection;

/// What to search for: the conversation (its last user turn, leaning on the earlier
/// ones), as a chat request's retrieval does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchRequest {
    pub messages: Vec<ChatMessage>,
    pub top_k: u32,
    /// The collections to search; empty searches every document.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collections: Vec<Collection>,
}

/// One ranked source, the start of its text, and its whole text as a prompt carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    #[serde(flatten)]
    pub source: Source,
    pub snippet: String,
    #[serde(default)]
    pub text: String,
}

/// The answer: ranked hits, or why there are none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchResponse {
    #[serde(default)]
    pub hits: Vec<SearchHit>,
    /// Passages in the index of the worker that answered.
    #[serde(default)]
    pub indexed_passages: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Wire for SearchRequest {
    const WHAT: &'static str = "search request";
}

impl Wire for SearchResponse {
    const WHAT: &'static str = "search response";
}
