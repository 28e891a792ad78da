//! The edge: an HTTP body becomes a [`ValidChatRequest`] or a `400` that names the bad
//! field in `param`. The rest of the gateway only sees validated requests, and bad
//! input never reaches NATS.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use cauce_nats::wire::{
    self, ChatMessage, ChatRequest, MAX_COLLECTIONS, RetrievalOptions, Role, Sampling,
};
use cauce_nats::{Collection, GatewayId, ModelName, RequestId};
use serde::de::DeserializeOwned;

use crate::config::GatewayConfig;
use crate::error::{Error, Result};
use crate::openai::{ChatCompletionRequest, Content, Stop};

/// OpenAI accepts at most this many stop sequences.
const MAX_STOP: usize = 4;
/// Passages a request may ask for: the one bound retrieval also keeps.
const MAX_TOP_K: i64 = wire::MAX_TOP_K as i64;

/// A chat request whose every field has been checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidChatRequest {
    pub model: ModelName,
    pub messages: Vec<ChatMessage>,
    pub sampling: Sampling,
    pub retrieval: RetrievalOptions,
    pub stream: bool,
    pub include_usage: bool,
    /// Whether a deterministic answer may come from, and go to, the response cache.
    pub cache: bool,
}

impl ValidChatRequest {
    /// The wire request, as published to `cauce.questions`.
    pub fn to_wire(
        &self,
        id: RequestId,
        gateway: GatewayId,
        now_ms: u64,
        timeout_ms: u64,
    ) -> ChatRequest {
        ChatRequest {
            id,
            gateway,
            model: self.model.clone(),
            messages: self.messages.clone(),
            sampling: self.sampling.clone(),
            retrieval: self.retrieval.clone(),
            created_at_ms: now_ms,
            deadline_ms: now_ms.saturating_add(timeout_ms),
            replay_of: None,
        }
    }
}

/// Reads a JSON body, mapping a body over the limit to `413` and a type error to a
/// `400` naming the field.
pub fn parse_json<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<T> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::BodyTooLarge { limit }
        } else {
            Error::BodyRead(rejection.body_text())
        }
    })?;
    let mut deserializer = serde_json::Deserializer::from_slice(&body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return Error::InvalidJson(inner.to_string());
        }
        let message = inner.to_string();
        let param = match missing_field(&message) {
            Some(field) if path == "." => field.to_string(),
            Some(field) => format!("{path}.{field}"),
            None => path.clone(),
        };
        let message = strip_position(&message);
        Error::Invalid {
            message: format!("{param}: {message}"),
            param: Some(param),
        }
    })?;
    deserializer
        .end()
        .map_err(|err| Error::InvalidJson(err.to_string()))?;
    Ok(value)
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// serde_json appends " at line 1 column 42", which tells a client nothing useful.
fn strip_position(message: &str) -> &str {
    message
        .rsplit_once(" at line ")
        .map_or(message, |(head, _)| head)
}

/// The body of `POST /v1/search`: a query, or a conversation whose last user turn is
/// searched as a chat request's retrieval would.
#[derive(Debug, serde::Deserialize)]
pub struct SearchBody {
    pub query: Option<String>,
    pub messages: Option<Vec<crate::openai::MessageIn>>,
    pub top_k: Option<i64>,
    pub collections: Option<Vec<String>>,
}

/// Sources a search returns unless it asks for another number.
pub const DEFAULT_SEARCH_TOP_K: u32 = 4;

/// Checks a search body: the wire search request, or a `400` naming the field.
pub fn validate_search(
    body: SearchBody,
    config: &GatewayConfig,
) -> Result<cauce_nats::wire::SearchRequest> {
    let messages = match (body.query, body.messages) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "query",
                "give either query or messages, not both",
            ));
        }
        (None, None) => {
            return Err(Error::invalid(
                "query",
                "give the text to search for as query, or a conversation as messages",
            ));
        }
        (Some(query), None) if query.trim().is_empty() => {
            return Err(Error::invalid("query", "query is empty"));
        }
        (Some(query), None) => vec![ChatMessage {
            role: Role::User,
            content: query,
        }],
        (None, Some(messages)) => {
            let chat = ChatCompletionRequest {
                messages,
                ..ChatCompletionRequest::default()
            };
            validate(chat, config)?.messages
        }
    };
    let top_k = body.top_k.unwrap_or(i64::from(DEFAULT_SEARCH_TOP_K));
    if !(1..=MAX_TOP_K).contains(&top_k) {
        return Err(Error::invalid(
            "top_k",
            format!("top_k must be between 1 and {MAX_TOP_K}, got {top_k}"),
        ));
    }
    Ok(cauce_nats::wire::SearchRequest {
        messages,
        top_k: top_k as u32,
        collections: collections("collections", body.collections)?,
    })
}

/// The collections a request names under `field`: none given is every document.
fn collections(field: &str, names: Option<Vec<String>>) -> Result<Vec<Collection>> {
    let Some(names) = names else {
        return Ok(Vec::new());
    };
    if names.is_empty() {
        return Err(Error::invalid(
            field,
            format!(
                "{field} is empty: name at least one collection, or leave it out to search every document"
            ),
        ));
    }
    if names.len() > MAX_COLLECTIONS {
        return Err(Error::invalid(
            field,
            format!(
                "{field} names {} collections, the limit is {MAX_COLLECTIONS}",
                names.len()
            ),
        ));
    }
    let mut parsed = Vec::with_capacity(names.len());
    for (index, name) in names.into_iter().enumerate() {
        let collection = Collection::parse(name)
            .map_err(|err| Error::invalid(format!("{field}[{index}]"), err.to_string()))?;
        if !parsed.contains(&collection) {
            parsed.push(collection);
        }
    }
    Ok(parsed)
}

/// Checks every field of a chat request.
pub fn validate(
    request: ChatCompletionRequest,
    config: &GatewayConfig,
) -> Result<ValidChatRequest> {
    let model = match request.model.as_deref() {
        None | Some("") => config.default_model.clone(),
        Some(name) => {
            ModelName::parse(name).map_err(|err| Error::invalid("model", err.to_string()))?
        }
    };
    if request.messages.is_empty() {
        return Err(Error::invalid(
            "messages",
            "messages must hold at least one message",
        ));
    }
    let mut messages = Vec::with_capacity(request.messages.len());
    for (index, message) in request.messages.into_iter().enumerate() {
        let role = match message.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(Error::invalid(
                    format!("messages[{index}].role"),
                    format!("role {other:?} is not supported: use system, user or assistant"),
                ));
            }
        };
        let content = flatten_content(message.content, index)?;
        messages.push(ChatMessage { role, content });
    }
    if !messages.iter().any(|m| m.role == Role::User) {
        return Err(Error::invalid(
            "messages",
            "messages must hold at least one user message",
        ));
    }
    if let Some(n) = request.n
        && n != 1
    {
        return Err(Error::invalid(
            "n",
            format!("n must be 1, got {n}: one answer per request"),
        ));
    }
    let (max_param, max_tokens) = match (request.max_completion_tokens, request.max_tokens) {
        (Some(value), _) => ("max_completion_tokens", Some(value)),
        (None, value) => ("max_tokens", value),
    };
    let max_tokens = match max_tokens {
        None => None,
        Some(value) if value < 1 => {
            return Err(Error::invalid(
                max_param,
                format!("{max_param} must be at least 1, got {value}"),
            ));
        }
        Some(value) if value > i64::from(config.max_tokens_limit) => {
            return Err(Error::invalid(
                max_param,
                format!(
                    "{max_param} must be at most {}, got {value}",
                    config.max_tokens_limit
                ),
            ));
        }
        Some(value) => Some(value as u32),
    };
    let temperature = range("temperature", request.temperature, 0.0, 2.0)?;
    let top_p = range("top_p", request.top_p, 0.0, 1.0)?;
    if top_p == Some(0.0) {
        return Err(Error::invalid("top_p", "top_p must be greater than 0"));
    }
    let seed = match request.seed {
        Some(seed) if seed < 0 => {
            return Err(Error::invalid(
                "seed",
                format!("seed must not be negative, got {seed}"),
            ));
        }
        seed => seed.map(|s| s as u64),
    };
    let stop = match request.stop {
        None => Vec::new(),
        Some(Stop::One(one)) => vec![one],
        Some(Stop::Many(many)) => many,
    };
    if stop.len() > MAX_STOP {
        return Err(Error::invalid(
            "stop",
            format!("stop takes at most {MAX_STOP} sequences"),
        ));
    }
    if stop.iter().any(String::is_empty) {
        return Err(Error::invalid("stop", "stop sequences must not be empty"));
    }
    let options = request.cauce.unwrap_or_default();
    let mut retrieval = RetrievalOptions::default();
    if let Some(enabled) = options.retrieval {
        retrieval.enabled = enabled;
    }
    if let Some(top_k) = options.top_k {
        if !(1..=MAX_TOP_K).contains(&top_k) {
            return Err(Error::invalid(
                "cauce.top_k",
                format!("cauce.top_k must be between 1 and {MAX_TOP_K}, got {top_k}"),
            ));
        }
        retrieval.top_k = top_k as u32;
    }
    retrieval.collections = collections("cauce.collections", options.collections)?;
    Ok(ValidChatRequest {
        model,
        messages,
        sampling: Sampling {
            max_tokens,
            temperature: temperature.map(|t| t as f32),
            top_p: top_p.map(|p| p as f32),
            top_k: None,
            seed,
            stop,
        },
        retrieval,
        stream: request.stream.unwrap_or(false),
        include_usage: request.stream_options.is_some_and(|o| o.include_usage),
        cache: options.cache.unwrap_or(true),
    })
}

fn flatten_content(content: Option<Content>, index: usize) -> Result<String> {
    match content {
        None => Err(Error::invalid(
            format!("messages[{index}].content"),
            "content is missing",
        )),
        Some(Content::Text(text)) => Ok(text),
        Some(Content::Parts(parts)) => {
            let mut text = String::new();
            for (part_index, part) in parts.into_iter().enumerate() {
                let param = format!("messages[{index}].content[{part_index}]");
                if part.r#type != "text" {
                    return Err(Error::invalid(
                        format!("{param}.type"),
                        format!(
                            "content part type {:?} is not supported: only text",
                            part.r#type
                        ),
                    ));
                }
                let Some(part_text) = part.text else {
                    return Err(Error::invalid(
                        format!("{param}.text"),
                        "a text part needs text",
                    ));
                };
                text.push_str(&part_text);
            }
            Ok(text)
        }
    }
}

fn range(param: &'static str, value: Option<f64>, min: f64, max: f64) -> Result<Option<f64>> {
    match value {
        Some(v) if !(min..=max).contains(&v) => Err(Error::invalid(
            param,
            format!("{param} must be between {min} and {max}, got {v}"),
        )),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) -> Result<ValidChatRequest> {
        let request: ChatCompletionRequest = parse_json(Ok(Bytes::from(json.to_string())), 1000)?;
        validate(request, &GatewayConfig::new())
    }

    fn param_of(json: &str) -> String {
        match check(json).unwrap_err() {
            Error::Invalid { param, .. } => param.unwrap_or_default(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_full_request_is_read() {
        let valid = check(
            r#"{"model":"m1","messages":[{"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"hel"},{"type":"text","text":"lo"}]}],
            "stream":true,"max_tokens":5,"temperature":0,"seed":3,"stop":"\n",
            "stream_options":{"include_usage":true},"cauce":{"retrieval":false,"top_k":2,"collections":["physics-101"]},"unknown":1}"#,
        )
        .unwrap();
        assert_eq!(valid.model.as_str(), "m1");
        assert_eq!(valid.messages[1].content, "hello");
        assert_eq!(valid.sampling.max_tokens, Some(5));
        assert_eq!(valid.sampling.stop, vec!["\n".to_string()]);
        assert!(valid.stream && valid.include_usage && !valid.retrieval.enabled);
        assert_eq!(valid.retrieval.top_k, 2);
        assert_eq!(valid.retrieval.collections[0].as_str(), "physics-101");
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(param_of(r#"{"messages":[]}"#), "messages");
        assert_eq!(param_of(r#"{}"#), "messages");
        assert_eq!(param_of(r#"{"messages":"hi"}"#), "messages");
        assert_eq!(
            param_of(r#"{"messages":[{"role":"user","content":"x"}],"n":2}"#),
            "n"
        );
        assert_eq!(
            param_of(r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#),
            "max_tokens"
        );
        assert_eq!(
            param_of(r#"{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#),
            "temperature"
        );
        assert_eq!(
            param_of(r#"{"messages":[{"role":"wizard","content":"x"}]}"#),
            "messages[0].role"
        );
        assert_eq!(
            param_of(r#"{"messages":[{"role":"user"}]}"#),
            "messages[0].content"
        );
        assert_eq!(
            param_of(r#"{"model":"a.b","messages":[{"role":"user","content":"x"}]}"#),
            "model"
        );
        assert_eq!(
            param_of(
                r#"{"messages":[{"role":"user","content":"x"}],"cauce":{"collections":["a b"]}}"#
            ),
            "cauce.collections[0]"
        );
    }

    #[test]
    fn malformed_json_is_not_a_field_error() {
        assert!(matches!(
            check("{\"messages\": ["),
            Err(Error::InvalidJson(_))
        ));
        assert!(matches!(check("nope"), Err(Error::InvalidJson(_))));
    }
}
