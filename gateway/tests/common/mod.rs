//! Test harness: a real nats-server, the gateway on 127.0.0.1:0, and helpers that play
//! the workers' side of the protocol by publishing real events on that server.

#![allow(dead_code)]

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use cauce_gateway::GatewayConfig;
use cauce_nats::testkit::NatsServer;
use cauce_nats::wire::{
    self, ChatRequest, Event, EventBody, FinishReason, StoredResult, Timings, Usage,
};
use cauce_nats::{GatewayId, Limits, names};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(20);

/// A gateway running in this process.
pub struct Gateway {
    pub base: String,
    pub cancel: CancellationToken,
    pub task: tokio::task::JoinHandle<cauce_gateway::Result<()>>,
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("gateway stops")
            .unwrap()
            .unwrap();
    }
}

/// The nats-server, a client of it, and one gateway.
pub struct Harness {
    pub nats: NatsServer,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub gateway: Gateway,
    pub http: reqwest::Client,
}

/// A config for tests: a known gateway id, a generous rate limit, short keep-alives.
pub fn config(id: &str) -> GatewayConfig {
    GatewayConfig {
        id: GatewayId::parse(id).unwrap(),
        rate_limit: None,
        keep_alive: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(2),
        discovery_wait: Duration::from_millis(200),
        view_refresh: Duration::from_millis(100),
        ..GatewayConfig::new()
    }
}

pub async fn start(config: GatewayConfig) -> Harness {
    let nats = NatsServer::start().unwrap_or_else(|err| panic!("{err}"));
    let client = nats.client().await;
    let js = jetstream::new(client.clone());
    cauce_nats::apply(&js, &Limits::default()).await.unwrap();
    let gateway = start_gateway(&nats, config).await;
    Harness {
        nats,
        client,
        js,
        gateway,
        http: reqwest::Client::new(),
    }
}

pub async fn start_gateway(nats: &NatsServer, config: GatewayConfig) -> Gateway {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let client = nats.client().await;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(cauce_gateway::serve(
        config,
        client,
        listener,
        cancel.clone(),
    ));
    Gateway { base, cancel, task }
}

impl Harness {
    pub fn url(&self, path: &str) -> String {
        self.gateway.url(path)
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// The next question on `QUESTIONS`, taken the way a retrieval worker takes it.
    pub async fn next_question(&self) -> ChatRequest {
        next_question(&self.js).await
    }

    pub async fn send(&self, request: &ChatRequest, attempt: u32, seq: u64, body: EventBody) {
        send(&self.client, request, attempt, seq, body).await;
    }

    pub async fn store(&self, result: &StoredResult) {
        let results = self.js.get_key_value(names::RESULTS_BUCKET).await.unwrap();
        results
            .put(
                names::request_key(&result.request_id),
                wire::encode_compressed(result).unwrap(),
            )
            .await
            .unwrap();
    }
}

pub async fn next_question(js: &jetstream::Context) -> ChatRequest {
    let consumer: PullConsumer = js
        .get_stream(names::QUESTIONS)
        .await
        .unwrap()
        .get_consumer(names::RETRIEVAL_CONSUMER)
        .await
        .unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(WAIT)
        .messages()
        .await
        .unwrap();
    let message = batch.next().await.expect("a question").unwrap();
    let id = message
        .headers
        .as_ref()
        .and_then(|h| h.get(names::REQUEST_ID_HEADER))
        .map(|v| v.to_string());
    let request: ChatRequest = wire::decode(&message.payload).unwrap();
    assert_eq!(
        id.as_deref(),
        Some(request.id.as_str()),
        "request id header"
    );
    message.ack().await.unwrap();
    request
}

pub async fn send(
    client: &async_nats::Client,
    request: &ChatRequest,
    attempt: u32,
    seq: u64,
    body: EventBody,
) {
    let event = Event {
        request_id: request.id.clone(),
        attempt,
        seq,
        body,
    };
    client
        .publish(
            names::events_subject(&request.gateway, &request.id),
            wire::encode(&event).unwrap(),
        )
        .await
        .unwrap();
    client.flush().await.unwrap();
}

/// A piece of the answer that starts `at` bytes into it.
pub fn delta(at: u64, text: &str) -> EventBody {
    let text = text.into();
    EventBody::Delta { text, at }
}

pub fn done(prompt_tokens: u32, completion_tokens: u32) -> EventBody {
    EventBody::Done {
        finish_reason: FinishReason::Stop,
        usage: Usage {
            prompt_tokens,
            completion_tokens,
            cached_tokens: 0,
        },
        timings: Timings::default(),
        cached: false,
        text_bytes: 0,
    }
}

pub fn stored(request: &ChatRequest, status: wire::ResultStatus, text: &str) -> StoredResult {
    StoredResult {
        status,
        text: text.into(),
        finish_reason: status.is_final().then_some(FinishReason::Stop),
        usage: Usage {
            prompt_tokens: 5,
            completion_tokens: 3,
            cached_tokens: 0,
        },
        attempt: 1,
        finished_at_ms: if status.is_final() { wire::now_ms() } else { 0 },
        ..StoredResult::queued(
            request.id.clone(),
            request.model.clone(),
            request.created_at_ms,
        )
    }
}

pub fn user(text: &str) -> serde_json::Value {
    serde_json::json!({"messages": [{"role": "user", "content": text}]})
}

/// Reads a whole SSE body and returns the `data:` payloads and the named events.
pub async fn sse(response: reqwest::Response) -> Vec<(Option<String>, String)> {
    let body = tokio::time::timeout(WAIT, response.text())
        .await
        .expect("stream ends")
        .unwrap();
    parse_sse(&body)
}

pub fn parse_sse(body: &str) -> Vec<(Option<String>, String)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                }
            }
            (!data.is_empty()).then(|| (name, data.join("\n")))
        })
        .collect()
}

/// The `data:` payloads of a chat stream, parsed as JSON, and whether `[DONE]` ended it.
pub fn chunks(events: &[(Option<String>, String)]) -> (Vec<serde_json::Value>, bool) {
    let done = events.last().is_some_and(|(_, d)| d == "[DONE]");
    let json = events
        .iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    (json, done)
}

/// The concatenated `delta.content` of chat chunks.
pub fn content(chunks: &[serde_json::Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}
