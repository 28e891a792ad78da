//! The tasks API against a real nats-server, with the test playing the workers' side
//! of the protocol (a relay/protocol test, not a pipeline test): status is read from
//! `cauce-results`, so a second gateway answers for a task the first one accepted.

mod common;

use cauce_nats::names;
use cauce_nats::wire::{EventBody, ResultStatus};
use common::*;
use futures::StreamExt;
use serde_json::Value;

async fn task(h: &Harness, base: &str, id: &str) -> Value {
    let response = h
        .http
        .get(format!("{base}/v1/tasks/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_task_is_answered_from_any_gateway() {
    let h = start(config("gw-task1")).await;
    let second = start_gateway(&h.nats, config("gw-task2")).await;

    let response = h.post("/v1/tasks", user("what is cauce?")).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["object"], "task");
    assert_eq!(accepted["status"], "queued");
    let id = accepted["id"].as_str().unwrap().to_string();

    let question = h.next_question().await;
    assert_eq!(question.id.as_str(), id);
    assert_eq!(task(&h, &second.base, &id).await["status"], "queued");

    // a worker starts it
    h.store(&stored(&question, ResultStatus::Running, "")).await;
    assert_eq!(task(&h, &second.base, &id).await["status"], "running");

    // the second gateway streams the remaining events
    let events = h
        .http
        .get(second.url(&format!("/v1/tasks/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let mut body = events.bytes_stream();
    // the stream is open (first bytes are keep-alives): the subscription exists
    let first = tokio::time::timeout(WAIT, body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("keep-alive"));
    h.send(&question, 1, 0, delta(0, "Cauce is ")).await;
    h.send(&question, 1, 1, delta(9, "a pipeline.")).await;
    h.store(&stored(
        &question,
        ResultStatus::Done,
        "Cauce is a pipeline.",
    ))
    .await;
    h.send(&question, 1, 2, done(5, 3)).await;
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, body.next()).await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let events = parse_sse(&text);
    let deltas: String = events
        .iter()
        .filter(|(name, _)| name.as_deref() == Some("delta"))
        .map(|(_, data)| {
            serde_json::from_str::<Value>(data).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(deltas, "Cauce is a pipeline.");
    let (name, last) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("done"));
    let last: Value = serde_json::from_str(last).unwrap();
    assert_eq!(last["status"], "done");

    for base in [&h.gateway.base, &second.base] {
        let done = task(&h, base, &id).await;
        assert_eq!(done["status"], "done");
        assert_eq!(done["result"]["object"], "chat.completion");
        assert_eq!(
            done["result"]["choices"][0]["message"]["content"],
            "Cauce is a pipeline."
        );
        assert_eq!(done["result"]["usage"]["total_tokens"], 8);
    }
    second.stop().await;
}

#[tokio::test]
async fn a_queued_task_is_cancelled_by_delete() {
    let h = start(config("gw-task3")).await;
    let mut cancels = h.client.subscribe("cauce.cancel.*").await.unwrap();
    h.client.flush().await.unwrap();
    let accepted: Value = h
        .post("/v1/tasks", user("never mind"))
        .await
        .json()
        .await
        .unwrap();
    let id = accepted["id"].as_str().unwrap().to_string();
    let response = h
        .http
        .delete(h.url(&format!("/v1/tasks/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cancelled: Value = response.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    let message = tokio::time::timeout(WAIT, cancels.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.subject.as_str(), format!("cauce.cancel.{id}"));
    let bucket = h.js.get_key_value(names::CANCELS_BUCKET).await.unwrap();
    assert!(
        bucket.get(&id).await.unwrap().is_some(),
        "a queued job is dropped when picked up"
    );
    assert_eq!(task(&h, &h.gateway.base, &id).await["status"], "cancelled");
    // a finished task's events end at once with its final state
    let events = h
        .http
        .get(h.url(&format!("/v1/tasks/{id}/events")))
        .send()
        .await
        .unwrap();
    let events = sse(events).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0.as_deref(), Some("done"));
}

#[tokio::test]
async fn a_failed_task_shows_its_error() {
    let h = start(config("gw-task4")).await;
    let accepted: Value = h
        .post("/v1/tasks", user("fail"))
        .await
        .json()
        .await
        .unwrap();
    let id = accepted["id"].as_str().unwrap().to_string();
    let question = h.next_question().await;
    let mut failed = stored(&question, ResultStatus::Failed, "");
    failed.error = Some(cauce_nats::wire::StoredError {
        kind: cauce_nats::wire::ErrorKind::DeliveriesExhausted,
        message: "failed on every delivery".into(),
    });
    h.store(&failed).await;
    h.send(
        &question,
        5,
        0,
        EventBody::Error {
            kind: cauce_nats::wire::ErrorKind::DeliveriesExhausted,
            message: "failed on every delivery".into(),
        },
    )
    .await;
    let status = task(&h, &h.gateway.base, &id).await;
    assert_eq!(status["status"], "failed");
    assert_eq!(status["error"]["code"], "deliveries_exhausted");
    assert_eq!(status["result"], Value::Null);
}
