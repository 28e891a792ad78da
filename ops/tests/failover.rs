//! An inference worker process killed (SIGKILL) mid-answer: its job is redelivered to
//! another worker, and the reply subject sees attempt 2 and a complete answer.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use cauce_nats::testkit::NatsServer;
use cauce_nats::wire::{
    ChatMessage, ChatRequest, Event, EventBody, PromptJob, RetrievalOptions, Role, Sampling,
    StoredResult, now_ms,
};
use cauce_nats::{GatewayId, Limits, ModelName, RequestId, names};
use futures::StreamExt;

fn worker(url: &str) -> Child {
    let model = cauce_inference::installed_model().unwrap_or_else(|err| panic!("{err}"));
    Command::new(env!("CARGO_BIN_EXE_cauce"))
        .args([
            "inference",
            "--nats-url",
            url,
            "--slots",
            "1",
            "--ctx-size",
            "1024",
            "--inference-ack-wait",
            "3s",
        ])
        .arg("--model")
        .arg(model)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

async fn next_event(events: &mut async_nats::Subscriber) -> Event {
    let message = tokio::time::timeout(Duration::from_secs(600), events.next())
        .await
        .expect("an event within ten minutes")
        .unwrap();
    cauce_nats::wire::decode(&message.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_s_job_is_redelivered_and_completed_by_another() {
    let server = NatsServer::start().unwrap_or_else(|err| panic!("{err}"));
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    let limits = Limits {
        inference_ack_wait: Duration::from_secs(3),
        ..Limits::default()
    };
    cauce_nats::apply(&js, &limits).await.unwrap();

    let now = now_ms();
    let job = PromptJob {
        request: ChatRequest {
            id: RequestId::generate(),
            gateway: GatewayId::parse("gw-test").unwrap(),
            model: ModelName::default_model(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: "Write a long essay about the history of Rome.".into(),
            }],
            sampling: Sampling {
                max_tokens: Some(200),
                temperature: Some(0.0),
                ..Sampling::default()
            },
            retrieval: RetrievalOptions {
                enabled: false,
                top_k: 0,
            },
            created_at_ms: now,
            deadline_ms: now + 600_000,
            replay_of: None,
        },
        passages: vec![],
        retrieved_at_ms: now,
    };
    let mut events = client
        .subscribe(names::events_subject(&job.request.gateway, &job.request.id))
        .await
        .unwrap();
    let mut first = worker(&server.url());
    js.publish(
        names::prompt_subject(&job.request.model),
        cauce_nats::wire::encode(&job).unwrap(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    // the first worker is answering: kill it mid-answer
    let event = next_event(&mut events).await;
    assert_eq!(event.attempt, 1);
    assert!(matches!(event.body, EventBody::Delta { .. }));
    first.kill().unwrap();
    first.wait().unwrap();

    let mut second = worker(&server.url());
    let mut retry_text = String::new();
    let done = loop {
        let event = next_event(&mut events).await;
        if event.attempt < 2 {
            continue; // deltas the first worker sent before it died
        }
        match event.body {
            EventBody::Delta { text } => retry_text.push_str(&text),
            EventBody::Done {
                finish_reason,
                usage,
                ..
            } => break (finish_reason, usage),
            other => panic!("unexpected {other:?}"),
        }
    };
    second.kill().unwrap();
    second.wait().unwrap();

    assert!(done.1.completion_tokens > 0);
    let kv = js.get_key_value(names::RESULTS_BUCKET).await.unwrap();
    let stored: StoredResult = cauce_nats::wire::decode_compressed(
        &kv.get(names::request_key(&job.request.id))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored.attempt, 2);
    assert_eq!(
        stored.text, retry_text,
        "the stored answer is the complete second attempt"
    );
    assert_eq!(stored.usage.completion_tokens, done.1.completion_tokens);
}
