//! What fuzzing the HTTP request validation checks, for `tests/fuzz_validate.rs` (a
//! short run) and `examples/fuzz_validate.rs` (the long one), which feed it mutated
//! chat bodies (`cauce_nats::fuzz`): each body goes through the same JSON reading and
//! validation as `POST /v1/chat/completions` and `/v1/tasks`.
//! Each gives a valid request or a `4xx` whose body says what was wrong: never a panic,
//! never a `5xx`, never an empty message.

use bytes::Bytes;

use crate::config::GatewayConfig;
use crate::openai::ChatCompletionRequest;
use crate::validate::{parse_json, validate};

/// Valid chat bodies, the mutator's seeds.
pub fn seeds() -> Vec<Vec<u8>> {
    [
        r#"{"messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"model":"smollm2-135m-instruct","stream":true,"stream_options":{"include_usage":true},"max_tokens":64,"temperature":0.7,"top_p":0.9,"seed":7,"stop":["\n\n"],"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"¿qué es cauce?"}]}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"cauce":{"top_k":3,"retrieval":true,"cache":false}}"#,
        r#"{"messages":[{"role":"developer","content":"x"},{"role":"assistant","content":"y"},{"role":"user","content":"z"}],"max_completion_tokens":5,"stop":"END"}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// One body through the gateway's reading and validation: `Ok(valid)` or the error's
/// status and message.
pub fn check(body: &[u8], config: &GatewayConfig) -> Result<bool, String> {
    let parsed = parse_json::<ChatCompletionRequest>(
        Ok(Bytes::copy_from_slice(body)),
        config.max_body_bytes,
    );
    let error = match parsed.and_then(|request| validate(request, config)) {
        Ok(_) => return Ok(true),
        Err(error) => error,
    };
    let status = error.status();
    let body = serde_json::to_value(error.body()).map_err(|e| e.to_string())?;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    if !status.is_client_error() || message.is_empty() {
        return Err(format!("{status} with body {body}"));
    }
    Ok(false)
}

/// [`check`] as a fuzzing run counts it (`cauce_nats::fuzz::fuzz`): one call, and
/// whether it gave a valid request. A body answered otherwise than with a `4xx` and a
/// message panics, which fails the run with the body saved.
pub fn counted(body: &[u8], config: &GatewayConfig) -> (u64, u64) {
    match check(body, config) {
        Ok(valid) => (1, u64::from(valid)),
        Err(wrong) => panic!("{wrong}"),
    }
}
