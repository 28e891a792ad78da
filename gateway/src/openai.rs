//! OpenAI's chat completion API as it travels over HTTP: the request body as clients
//! send it, and the `chat.completion` / `chat.completion.chunk` objects they expect
//! back. Nothing here is checked beyond JSON types; [`crate::validate`] turns a request
//! into a [`crate::validate::ValidChatRequest`].
//!
//! The sources and the request id travel in a `cauce` extension field, which OpenAI
//! clients ignore.

use cauce_nats::wire::{FinishReason, Source, Usage};
use serde::{Deserialize, Serialize};

/// The body of `POST /v1/chat/completions` and `POST /v1/tasks`. Unknown fields are
/// ignored, as OpenAI-compatible servers do.
#[derive(Debug, Default, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: Option<String>,
    pub messages: Vec<MessageIn>,
    pub stream: Option<bool>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<i64>,
    pub stop: Option<Stop>,
    pub n: Option<i64>,
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
    /// cauce's own options.
    pub cauce: Option<CauceOptions>,
}

#[derive(Debug, Deserialize)]
pub struct MessageIn {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

/// Message content: a string, or an array of parts of which only text parts are read.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    pub r#type: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The `cauce` extension object of a request.
#[derive(Debug, Default, Deserialize)]
pub struct CauceOptions {
    /// `false` answers from the model alone.
    pub retrieval: Option<bool>,
    /// How many passages go into the prompt.
    pub top_k: Option<i64>,
    /// `false` keeps a deterministic answer out of the response cache.
    pub cache: Option<bool>,
    /// Retrieval uses only these collections' documents.
    pub collections: Option<Vec<String>>,
}

/// `usage` as OpenAI reports it.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct UsageOut {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    pub prompt_tokens_details: PromptTokensDetails,
}

/// What of the prompt was reused, as OpenAI and vLLM report it.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: u32,
}

impl From<Usage> for UsageOut {
    fn from(usage: Usage) -> Self {
        Self {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total_tokens(),
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: usage.cached_tokens,
            },
        }
    }
}

/// OpenAI's `finish_reason`; a cancelled generation reads as `stop`, cauce's own
/// reason stays in the extension field.
pub fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::Cancelled => "stop",
        FinishReason::Length => "length",
    }
}

/// The `chatcmpl-…` id clients see for a request.
pub fn completion_id(request_id: &str) -> String {
    format!("chatcmpl-{request_id}")
}

/// What every object of one completion shares.
#[derive(Clone, Debug)]
pub struct Head {
    pub id: String,
    pub request_id: String,
    pub model: String,
    pub created: u64,
}

#[derive(Serialize)]
struct Extension<'a> {
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sources: Option<&'a [Source]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'static str>,
    /// The answer came from the response cache.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    cached: bool,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: UsageOut,
    cauce: Extension<'a>,
}

/// The whole `chat.completion` object of a non-streamed answer.
pub fn completion(
    head: &Head,
    text: &str,
    reason: FinishReason,
    usage: Usage,
    sources: &[Source],
) -> serde_json::Value {
    let completion = Completion {
        id: &head.id,
        object: "chat.completion",
        created: head.created,
        model: &head.model,
        choices: [Choice {
            index: 0,
            message: Message {
                role: "assistant",
                content: text,
            },
            logprobs: None,
            finish_reason: finish_reason(reason),
        }],
        usage: usage.into(),
        cauce: Extension {
            request_id: &head.request_id,
            sources: Some(sources),
            finish_reason: Some(reason.as_str()),
            cached: false,
        },
    };
    serde_json::to_value(completion).unwrap_or_default()
}

#[derive(Default, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    /// Absent unless usage was asked for; then `null` on every chunk but the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<UsageOut>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cauce: Option<Extension<'a>>,
}

/// Writes the `chat.completion.chunk` objects of one streamed answer.
#[derive(Clone, Debug)]
pub struct ChunkWriter {
    pub head: Head,
    pub include_usage: bool,
}

impl ChunkWriter {
    fn write(&self, choices: &[ChunkChoice<'_>], cauce: Option<Extension<'_>>) -> String {
        self.write_with_usage(choices, cauce, None)
    }

    fn write_with_usage(
        &self,
        choices: &[ChunkChoice<'_>],
        cauce: Option<Extension<'_>>,
        usage: Option<UsageOut>,
    ) -> String {
        let chunk = Chunk {
            id: &self.head.id,
            object: "chat.completion.chunk",
            created: self.head.created,
            model: &self.head.model,
            choices,
            usage: self.include_usage.then_some(usage),
            cauce,
        };
        serde_json::to_string(&chunk).unwrap_or_default()
    }

    fn extension(&self) -> Extension<'_> {
        Extension {
            request_id: &self.head.request_id,
            sources: None,
            finish_reason: None,
            cached: false,
        }
    }

    /// The first chunk: the assistant role and empty content.
    pub fn role(&self) -> String {
        let delta = Delta {
            role: Some("assistant"),
            content: Some(""),
        };
        let choice = ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason: None,
        };
        self.write(&[choice], Some(self.extension()))
    }

    /// The sources, in the extension field of a chunk with an empty delta.
    pub fn sources(&self, sources: &[Source]) -> String {
        let choice = ChunkChoice {
            index: 0,
            delta: Delta::default(),
            logprobs: None,
            finish_reason: None,
        };
        let cauce = Extension {
            sources: Some(sources),
            ..self.extension()
        };
        self.write(&[choice], Some(cauce))
    }

    /// A piece of the answer.
    pub fn content(&self, text: &str) -> String {
        let delta = Delta {
            role: None,
            content: Some(text),
        };
        let choice = ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason: None,
        };
        self.write(&[choice], None)
    }

    /// The last chunk with a choice: an empty delta and the finish reason.
    pub fn finish(&self, reason: FinishReason) -> String {
        self.finish_with(reason, false)
    }

    /// The last chunk with a choice, saying whether the answer came from the cache.
    pub fn finish_with(&self, reason: FinishReason, cached: bool) -> String {
        let choice = ChunkChoice {
            index: 0,
            delta: Delta::default(),
            logprobs: None,
            finish_reason: Some(finish_reason(reason)),
        };
        let cauce = Extension {
            finish_reason: Some(reason.as_str()),
            cached,
            ..self.extension()
        };
        self.write(&[choice], Some(cauce))
    }

    /// The usage chunk: no choices, the usage of the whole request.
    pub fn usage(&self, usage: Usage) -> String {
        self.write_with_usage(&[], None, Some(usage.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn writer(include_usage: bool) -> ChunkWriter {
        ChunkWriter {
            head: Head {
                id: "chatcmpl-r1".into(),
                request_id: "r1".into(),
                model: "m".into(),
                created: 7,
            },
            include_usage,
        }
    }

    fn parse(s: String) -> Value {
        serde_json::from_str(&s).unwrap()
    }

    #[test]
    fn chunks_have_openai_shapes() {
        let w = writer(false);
        let role = parse(w.role());
        assert_eq!(role["object"], "chat.completion.chunk");
        assert_eq!(
            role["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(role["choices"][0]["finish_reason"], Value::Null);
        assert!(role.get("usage").is_none());
        let content = parse(w.content("hi"));
        assert_eq!(content["choices"][0]["delta"], json!({"content": "hi"}));
        assert!(content.get("cauce").is_none());
        let finish = parse(w.finish(FinishReason::Length));
        assert_eq!(finish["choices"][0]["finish_reason"], "length");
        assert_eq!(finish["choices"][0]["delta"], json!({}));
    }

    #[test]
    fn usage_is_null_until_the_usage_chunk() {
        let w = writer(true);
        assert_eq!(parse(w.content("a"))["usage"], Value::Null);
        let usage = parse(w.usage(Usage {
            prompt_tokens: 3,
            completion_tokens: 2,
            cached_tokens: 1,
        }));
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(
            usage["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                   "prompt_tokens_details": {"cached_tokens": 1}})
        );
    }
}
