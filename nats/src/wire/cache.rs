//! The response cache: entries of the `cauce-cache` bucket and how their keys are made.
//!
//! A key is the SHA-256 of the model (its name and the fingerprint of its file), the
//! sampling parameters, the normalized conversation, and the ids and versions of the
//! retrieved passages. So the lookup happens after retrieval, and a new version of a
//! cited document, another model file or other parameters give another key: a cached
//! answer is never stale.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ChatMessage, FinishReason, Passage, Sampling, Source, Usage, Wire};
use crate::ids::ModelName;

/// A cached answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub model: ModelName,
    pub text: String,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    #[serde(default)]
    pub sources: Vec<Source>,
    pub created_at_ms: u64,
}

/// What a cache key holds: an answer, or a claim by the request generating it (the
/// single flight: identical requests wait for that answer instead of generating).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CacheValue {
    Pending {
        request_id: crate::ids::RequestId,
        since_ms: u64,
    },
    Entry(CacheEntry),
}

impl Wire for CacheValue {
    const WHAT: &'static str = "cache value";
}

/// How prompts are laid out (passages by document, numbered as cited): an answer
/// cached under another layout cites its sources by other numbers.
const PROMPT_LAYOUT: u32 = 2;

#[derive(Serialize)]
struct KeyMaterial<'a> {
    prompt_layout: u32,
    model: &'a str,
    model_fingerprint: &'a str,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<u32>,
    seed: Option<u64>,
    stop: &'a [String],
    messages: Vec<(&'static str, String)>,
    passages: Vec<(&'a str, &'a str)>,
}

/// The cache key of a request with its retrieved passages.
pub fn cache_key(
    model: &ModelName,
    model_fingerprint: &str,
    sampling: &Sampling,
    messages: &[ChatMessage],
    passages: &[Passage],
) -> String {
    let material = KeyMaterial {
        prompt_layout: PROMPT_LAYOUT,
        model: model.as_str(),
        model_fingerprint,
        max_tokens: sampling.max_tokens,
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        top_k: sampling.top_k,
        seed: sampling.seed,
        stop: &sampling.stop,
        messages: messages
            .iter()
            .map(|m| (role_name(m), normalize(&m.content)))
            .collect(),
        passages: passages
            .iter()
            .map(|p| (p.doc_id.as_str(), p.version.as_str()))
            .collect(),
    };
    let json = serde_json::to_vec(&material).expect("key material serializes");
    let digest = Sha256::digest(&json);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn role_name(message: &ChatMessage) -> &'static str {
    match message.role {
        super::Role::System => "system",
        super::Role::User => "user",
        super::Role::Assistant => "assistant",
    }
}

/// Whitespace runs collapse to one space and the ends are trimmed: "What is  cauce? "
/// and "What is cauce?" are the same question.
fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::DocId;
    use crate::wire::Role;

    fn user(text: &str) -> Vec<ChatMessage> {
        vec![ChatMessage {
            role: Role::User,
            content: text.into(),
        }]
    }

    fn passage(version: &str) -> Passage {
        Passage {
            doc_id: DocId::parse("guide-api").unwrap(),
            version: version.into(),
            title: "API".into(),
            heading_path: vec![],
            location: "docs/api.md".into(),
            score: 1.0,
            text: "text".into(),
        }
    }

    #[test]
    fn keys_cover_model_parameters_conversation_and_passage_versions() {
        let model = ModelName::default_model();
        let greedy = Sampling {
            temperature: Some(0.0),
            ..Sampling::default()
        };
        let base = cache_key(
            &model,
            "f1",
            &greedy,
            &user("What is cauce?"),
            &[passage("v1")],
        );
        assert_eq!(base.len(), 64);
        assert_eq!(
            base,
            cache_key(
                &model,
                "f1",
                &greedy,
                &user("  What is\n cauce? "),
                &[passage("v1")]
            )
        );
        assert_ne!(
            base,
            cache_key(
                &model,
                "f2",
                &greedy,
                &user("What is cauce?"),
                &[passage("v1")]
            )
        );
        assert_ne!(
            base,
            cache_key(
                &model,
                "f1",
                &greedy,
                &user("What is cauce?"),
                &[passage("v2")]
            )
        );
        assert_ne!(
            base,
            cache_key(
                &model,
                "f1",
                &greedy,
                &user("What is NATS?"),
                &[passage("v1")]
            )
        );
        let seeded = Sampling {
            seed: Some(1),
            ..greedy.clone()
        };
        assert_ne!(
            base,
            cache_key(
                &model,
                "f1",
                &seeded,
                &user("What is cauce?"),
                &[passage("v1")]
            )
        );
    }
}
