//! Every accepted request ends visibly: a question that JetStream gives up on (its
//! deliveries exhausted, or terminated by a worker) becomes a `failed` task and an
//! `error` event for a client still streaming, through the dead-letter consumer. The
//! test plays the retrieval worker's side (which runs that consumer) against a real
//! nats-server and the real gateway (a protocol test, not a pipeline test).

mod common;

use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use cauce_nats::{Limits, Results, names};
use common::*;
use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The gateway, and the dead-letter notifier a retrieval worker runs.
async fn start_with_notifier(id: &str) -> Harness {
    let h = start(config(id)).await;
    let results = Results::open(&h.js).await.unwrap();
    tokio::spawn(cauce_nats::dead::notify(
        h.js.clone(),
        h.client.clone(),
        results,
        CancellationToken::new(),
    ));
    h
}

async fn retrieval_consumer(h: &Harness) -> PullConsumer {
    h.js.get_stream(names::QUESTIONS)
        .await
        .unwrap()
        .get_consumer(names::RETRIEVAL_CONSUMER)
        .await
        .unwrap()
}

/// Fetches the next question without acking it.
async fn take(
    consumer: &PullConsumer,
    expires: Duration,
) -> Option<async_nats::jetstream::Message> {
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(expires)
        .messages()
        .await
        .unwrap();
    batch.next().await.map(|message| message.unwrap())
}

async fn task_status(h: &Harness, id: &str) -> Value {
    h.http
        .get(h.url(&format!("/v1/tasks/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_terminated_question_ends_its_stream_with_an_error_event() {
    let h = start_with_notifier("gw-dead1").await;
    let body = serde_json::json!({"messages": [{"role": "user", "content": "hi"}], "stream": true});
    let response = h.post("/v1/chat/completions", body).await;
    assert_eq!(response.status(), 200);

    let consumer = retrieval_consumer(&h).await;
    let message = take(&consumer, WAIT).await.expect("the question");
    // a worker gives it up without a word to the client
    message.ack_with(AckKind::Term).await.unwrap();

    let events = sse(response).await;
    let (_, last) = events.last().expect("the stream ends with an event");
    let error: Value = serde_json::from_str(last).unwrap();
    assert_eq!(error["error"]["code"], "terminated", "{events:?}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cauce replay --dead"),
        "{error}"
    );
}

#[tokio::test]
async fn a_question_whose_deliveries_run_out_ends_as_a_failed_task() {
    let h = start_with_notifier("gw-dead2").await;
    let limits = Limits {
        retrieval_ack_wait: Duration::from_secs(1),
        max_deliveries: 1,
        ..Limits::default()
    };
    cauce_nats::apply(&h.js, &limits).await.unwrap();
    let accepted: Value = h
        .post("/v1/tasks", user("never answered"))
        .await
        .json()
        .await
        .unwrap();
    let id = accepted["id"].as_str().unwrap().to_string();
    assert_eq!(accepted["status"], "queued");

    let consumer = retrieval_consumer(&h).await;
    // taken and never acked: a worker that died holding it
    take(&consumer, WAIT).await.expect("the question");
    // the server gives up on it when it would deliver it again
    assert!(take(&consumer, Duration::from_secs(3)).await.is_none());

    let mut status = Value::Null;
    for _ in 0..200 {
        status = task_status(&h, &id).await;
        if status["status"] != "queued" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status["status"], "failed", "{status}");
    assert_eq!(status["error"]["code"], "deliveries_exhausted", "{status}");
}
