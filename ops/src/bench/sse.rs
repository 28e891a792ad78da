//! One simulated user's request to an OpenAI-compatible endpoint, streamed over SSE and
//! timed: first token, each chunk, the end. Works with cauce's gateway and with
//! llama.cpp's `llama-server`; cauce's own `cauce` extension is only sent to cauce.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use super::run::Sample;

/// How requests to one endpoint are made.
#[derive(Clone, Debug)]
pub struct HttpTarget {
    pub client: reqwest::Client,
    /// The base URL, without `/v1/...`.
    pub base_url: String,
    pub model: String,
    pub max_tokens: u32,
    pub temperature: f32,
    /// A system message before each prompt.
    pub system: Option<String>,
    /// A system message per prompt (cauce's passages for it), used instead of `system`.
    pub systems: Option<std::sync::Arc<std::collections::HashMap<String, String>>>,
    /// Added to each request's number to form its seed: a new base per run keeps
    /// cauce's answer cache from serving an earlier run's answers.
    pub seed_base: u64,
    /// `Some(false)` sends `"cauce": {"retrieval": false}` (only when the target is cauce).
    pub cauce_retrieval: Option<bool>,
    pub timeout: Duration,
}

/// What `GET /v1/models` says about the endpoint.
#[derive(Debug)]
pub struct Discovered {
    pub is_cauce: bool,
    pub first_model: Option<String>,
}

/// Asks `GET /v1/models`, waiting up to `patience` for a model to be listed (cauce lists
/// a model once one of its workers announced itself).
pub async fn discover(
    client: &reqwest::Client,
    base_url: &str,
    patience: Duration,
) -> anyhow::Result<Discovered> {
    let url = format!("{base_url}/v1/models");
    let deadline = Instant::now() + patience;
    let models = loop {
        let body: Value = client
            .get(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|err| anyhow::anyhow!("GET {url}: {err}"))?
            .json()
            .await?;
        let models = body["data"].as_array().cloned().unwrap_or_default();
        if !models.is_empty() || Instant::now() >= deadline {
            break models;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    Ok(Discovered {
        is_cauce: models.iter().any(|m| m["owned_by"] == "cauce"),
        first_model: models
            .first()
            .and_then(|m| m["id"].as_str())
            .map(str::to_string),
    })
}

impl HttpTarget {
    fn body(&self, prompt: &str, number: u64) -> Value {
        let user = json!({"role": "user", "content": prompt});
        let own = self.systems.as_ref().and_then(|s| s.get(prompt));
        let messages = match own.or(self.system.as_ref()) {
            Some(system) => json!([{"role": "system", "content": system}, user]),
            None => json!([user]),
        };
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": (self.seed_base + number) % (1 << 31),
        });
        if let Some(retrieval) = self.cauce_retrieval {
            body["cauce"] = json!({ "retrieval": retrieval });
        }
        body
    }

    /// Sends one request and reads its stream to the end.
    pub async fn send(&self, prompt: &str, number: u64, level_started: Instant) -> Sample {
        let sent = Instant::now();
        let mut sample = Sample {
            start_s: sent.duration_since(level_started).as_secs_f64(),
            ..Sample::default()
        };
        let outcome = tokio::time::timeout(
            self.timeout,
            self.stream(prompt, number, sent, level_started, &mut sample),
        )
        .await
        .unwrap_or(Err("timeout".to_string()));
        sample.e2e_ms = sent.elapsed().as_secs_f64() * 1000.0;
        if let Err(kind) = outcome {
            sample.error = Some(kind);
        } else if sample.ttft_ms.is_none() {
            sample.error = Some("empty_answer".into());
        }
        sample
    }

    async fn stream(
        &self,
        prompt: &str,
        number: u64,
        sent: Instant,
        level_started: Instant,
        sample: &mut Sample,
    ) -> Result<(), String> {
        let response = self
            .client
            .post(format!("{}/v1/chat/completions", self.base_url))
            .json(&self.body(prompt, number))
            .send()
            .await
            .map_err(|err| request_error_kind(&err))?;
        if !response.status().is_success() {
            return Err(format!("http_{}", response.status().as_u16()));
        }
        let mut body = response.bytes_stream();
        let mut buffer = Vec::new();
        let mut chunks = 0u64;
        let mut last_chunk: Option<Instant> = None;
        let mut usage_tokens = None;
        while let Some(bytes) = body.next().await {
            let bytes = bytes.map_err(|_| "stream".to_string())?;
            buffer.extend_from_slice(&bytes);
            while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let Some(data) = line.strip_prefix(b"data:") else {
                    continue;
                };
                let data = data.trim_ascii();
                if data == b"[DONE]" {
                    sample.completion_tokens = usage_tokens.unwrap_or(chunks);
                    return Ok(());
                }
                let event: Value =
                    serde_json::from_slice(data).map_err(|_| "bad_event".to_string())?;
                if event.get("error").is_some_and(|e| !e.is_null()) {
                    return Err("server_error".into());
                }
                if let Some(usage) = event.get("usage").filter(|u| !u.is_null()) {
                    usage_tokens = usage["completion_tokens"].as_u64();
                    sample.prompt_tokens = usage["prompt_tokens"].as_u64();
                    sample.cached_tokens = usage["prompt_tokens_details"]["cached_tokens"].as_u64();
                }
                let has_content = event["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|c| !c.is_empty());
                if !has_content {
                    continue;
                }
                let now = Instant::now();
                chunks += 1;
                match last_chunk {
                    None => sample.ttft_ms = Some(now.duration_since(sent).as_secs_f64() * 1000.0),
                    Some(previous) => sample
                        .gaps_ms
                        .push(now.duration_since(previous).as_secs_f64() * 1000.0),
                }
                sample
                    .chunk_at_s
                    .push(now.duration_since(level_started).as_secs_f64());
                last_chunk = Some(now);
            }
        }
        // a stream that ends without [DONE] was cut
        sample.completion_tokens = usage_tokens.unwrap_or(chunks);
        Err("stream_cut".into())
    }
}

fn request_error_kind(err: &reqwest::Error) -> String {
    // the kind goes into the figures; the full chain into the log, once per failure
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        chain.push_str(": ");
        chain.push_str(&inner.to_string());
        source = inner.source();
    }
    tracing::warn!(error = %chain, "request failed");
    if err.is_connect() {
        "connect".into()
    } else if err.is_timeout() {
        "timeout".into()
    } else {
        "request".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(cauce_retrieval: Option<bool>) -> HttpTarget {
        HttpTarget {
            client: reqwest::Client::new(),
            base_url: "http://127.0.0.1:1".into(),
            model: "m".into(),
            max_tokens: 16,
            temperature: 0.7,
            system: None,
            systems: None,
            seed_base: 10,
            cauce_retrieval,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_cauce_extension_goes_only_where_asked() {
        let body = target(Some(false)).body("hi", 1);
        assert_eq!(body["cauce"]["retrieval"], false);
        assert_eq!(body["seed"], 11);
        assert!(target(None).body("hi", 1).get("cauce").is_none());
    }

    #[test]
    fn a_system_message_goes_first() {
        let mut target = target(None);
        assert_eq!(
            target.body("hi", 1)["messages"].as_array().unwrap().len(),
            1
        );
        target.system = Some("be brief".into());
        let body = target.body("hi", 1);
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][0]["content"], "be brief");
        assert_eq!(body["messages"][1]["content"], "hi");
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_a_connect_error() {
        let sample = target(None).send("hi", 0, Instant::now()).await;
        assert_eq!(sample.error.as_deref(), Some("connect"));
    }
}
