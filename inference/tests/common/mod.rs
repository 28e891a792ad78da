//! Shared by the inference tests: the real default model and job builders.
#![allow(dead_code)]

use std::path::PathBuf;

use cauce_inference::{EngineEvent, JobHandle};
use cauce_nats::wire::{
    ChatMessage, ChatRequest, FinishReason, PromptJob, RetrievalOptions, Role, Sampling, Usage,
    now_ms,
};
use cauce_nats::{GatewayId, ModelName, RequestId};

/// The model `ops/setup` installs; missing, the test fails with what to run.
pub fn model_path() -> PathBuf {
    cauce_inference::installed_model().unwrap_or_else(|err| panic!("{err}"))
}

pub fn job(question: &str, sampling: Sampling) -> PromptJob {
    let now = now_ms();
    PromptJob {
        request: ChatRequest {
            id: RequestId::generate(),
            gateway: GatewayId::parse("gw-test").unwrap(),
            model: ModelName::default_model(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: question.into(),
            }],
            sampling,
            retrieval: RetrievalOptions {
                enabled: false,
                top_k: 0,
                collections: Vec::new(),
            },
            created_at_ms: now,
            deadline_ms: now + 600_000,
            replay_of: None,
        },
        passages: vec![],
        retrieved_at_ms: now,
    }
}

pub fn greedy(max_tokens: u32) -> Sampling {
    Sampling {
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        ..Sampling::default()
    }
}

/// Everything a job produced.
#[derive(Debug)]
pub struct Outcome {
    pub deltas: Vec<String>,
    pub text: String,
    pub finish_reason: FinishReason,
    pub usage: Usage,
}

pub async fn collect(mut handle: JobHandle) -> Outcome {
    let mut deltas = Vec::new();
    while let Some(event) = handle.events.recv().await {
        match event {
            EngineEvent::Started { .. } => {}
            EngineEvent::Delta(text) => deltas.push(text),
            EngineEvent::Done {
                finish_reason,
                usage,
                ..
            } => {
                let text = deltas.concat();
                return Outcome {
                    deltas,
                    text,
                    finish_reason,
                    usage,
                };
            }
            EngineEvent::Failed(err) => panic!("job failed: {err}"),
        }
    }
    panic!("the engine dropped the job without an end");
}

use std::time::Duration;

use async_nats::jetstream;
use cauce_inference::{EngineConfig, WorkerConfig};
use cauce_nats::testkit::NatsServer;
use cauce_nats::wire::{Event, EventBody, StoredResult};
use cauce_nats::{Limits, names};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

pub fn nats() -> NatsServer {
    NatsServer::start().unwrap_or_else(|err| panic!("{err}"))
}

pub fn limits() -> Limits {
    Limits {
        inference_ack_wait: Duration::from_secs(3),
        ..Limits::default()
    }
}

pub fn worker_config(slots: u32) -> WorkerConfig {
    let mut engine = EngineConfig::new(model_path());
    engine.slots = slots;
    engine.ctx_per_slot = 1024;
    let mut config = WorkerConfig::new(ModelName::default_model(), engine);
    config.drain_timeout = Duration::from_secs(5);
    config
}

/// Sets up the NATS objects as the owner step would, then starts a worker in this
/// process; cancel the token to stop it.
pub async fn spawn_worker(client: async_nats::Client, config: WorkerConfig) -> CancellationToken {
    cauce_nats::apply(&jetstream::new(client.clone()), &limits())
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    tokio::spawn(async move {
        if let Err(err) = cauce_inference::run(config, client, token).await {
            panic!("worker failed: {err}");
        }
    });
    cancel
}

/// Subscribes to a job's reply subject, then publishes the job.
pub async fn publish(client: &async_nats::Client, job: &PromptJob) -> async_nats::Subscriber {
    let events = client
        .subscribe(names::events_subject(&job.request.gateway, &job.request.id))
        .await
        .unwrap();
    let js = jetstream::new(client.clone());
    cauce_nats::apply(&js, &limits()).await.unwrap();
    js.publish(
        names::prompt_subject(&job.request.model),
        cauce_nats::wire::encode(job).unwrap(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    events
}

/// Events of one request until its `done` or `error`.
pub async fn events_until_end(events: &mut async_nats::Subscriber) -> Vec<Event> {
    let mut out = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(600), events.next())
            .await
            .expect("the answer ends within ten minutes")
            .expect("subscription open");
        let event: Event = cauce_nats::wire::decode(&message.payload).unwrap();
        let end = matches!(event.body, EventBody::Done { .. } | EventBody::Error { .. });
        out.push(event);
        if end {
            return out;
        }
    }
}

pub fn delta_text(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Delta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

pub async fn stored_result(client: &async_nats::Client, id: &RequestId) -> StoredResult {
    let kv = jetstream::new(client.clone())
        .get_key_value(names::RESULTS_BUCKET)
        .await
        .unwrap();
    let value = kv
        .get(names::request_key(id))
        .await
        .unwrap()
        .expect("a stored result");
    cauce_nats::wire::decode_compressed(&value).unwrap()
}
