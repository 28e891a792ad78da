//! Relay/protocol tests: the test plays the worker side of the protocol by publishing
//! real events on a real nats-server, and checks what the gateway relays over HTTP.
//! These are not pipeline tests: no retrieval or inference worker runs here.

mod common;

use std::time::Duration;

use cauce_nats::wire::{ErrorKind, EventBody, ResultStatus, Source};
use cauce_nats::{DocId, names};
use common::*;
use futures::StreamExt;
use serde_json::json;

fn source() -> Source {
    Source {
        number: 1,
        doc_id: DocId::parse("guide").unwrap(),
        title: "Guide".into(),
        heading_path: vec!["Intro".into()],
        location: "docs/guide.md#intro".into(),
        score: 2.5,
    }
}

#[tokio::test]
async fn stream_relays_openai_chunks_with_sources_first_and_usage() {
    let h = start(config("gw-relay1")).await;
    let body = json!({
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": "what is cauce?"}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let response = tokio::spawn({
        let (http, url) = (h.http.clone(), h.url("/v1/chat/completions"));
        async move { http.post(url).json(&body).send().await.unwrap() }
    });
    let question = h.next_question().await;
    assert_eq!(question.gateway.as_str(), "gw-relay1");
    assert_eq!(question.messages[0].content, "what is cauce?");
    h.send(
        &question,
        1,
        0,
        EventBody::Sources {
            sources: vec![source()],
        },
    )
    .await;
    h.send(&question, 1, 0, delta(0, "Cauce ")).await;
    h.send(&question, 1, 1, delta(6, "is a ")).await;
    h.send(&question, 1, 2, delta(11, "pipeline.")).await;
    h.send(&question, 1, 3, done(12, 3)).await;

    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(response.headers()["x-request-id"], question.id.as_str());
    let (chunks, finished) = chunks(&sse(response).await);
    assert!(finished, "the stream ends with [DONE]");
    let id = format!("chatcmpl-{}", question.id);
    for chunk in &chunks {
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "smollm2-135m-instruct");
        assert!(chunk["created"].is_u64());
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(chunks[0]["usage"], serde_json::Value::Null);
    assert_eq!(
        chunks[1]["cauce"]["sources"][0]["location"],
        "docs/guide.md#intro"
    );
    assert_eq!(chunks[1]["choices"][0]["delta"], json!({}));
    assert_eq!(
        chunks[2]["choices"][0]["delta"],
        json!({"content": "Cauce "})
    );
    assert_eq!(content(&chunks), "Cauce is a pipeline.");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
               "prompt_tokens_details": {"cached_tokens": 0}})
    );
}

#[tokio::test]
async fn non_streamed_answer_is_one_completion_with_usage_and_sources() {
    let h = start(config("gw-relay2")).await;
    let response = tokio::spawn({
        let (http, url) = (h.http.clone(), h.url("/v1/chat/completions"));
        async move { http.post(url).json(&user("hi")).send().await.unwrap() }
    });
    let question = h.next_question().await;
    h.send(
        &question,
        1,
        0,
        EventBody::Sources {
            sources: vec![source()],
        },
    )
    .await;
    h.send(&question, 1, 0, delta(0, "Hello")).await;
    h.send(&question, 1, 1, delta(5, " there")).await;
    h.send(&question, 1, 2, done(4, 2)).await;
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"],
        json!({"role": "assistant", "content": "Hello there"})
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["total_tokens"], 6);
    assert_eq!(body["cauce"]["sources"][0]["doc_id"], "guide");
}

#[tokio::test]
async fn duplicates_are_dropped_and_a_continuing_attempt_follows_on() {
    let h = start(config("gw-relay3")).await;
    let body = json!({"messages": [{"role": "user", "content": "count"}], "stream": true});
    let response = tokio::spawn({
        let (http, url) = (h.http.clone(), h.url("/v1/chat/completions"));
        async move { http.post(url).json(&body).send().await.unwrap() }
    });
    let q = h.next_question().await;
    h.send(&q, 1, 0, delta(0, "one ")).await;
    h.send(&q, 1, 0, delta(0, "one ")).await; // duplicate
    h.send(&q, 1, 1, delta(4, "two ")).await;
    // the worker stored "th" and died before sending it; the redelivered job
    // continues the answer its record holds
    h.store(&stored(&q, ResultStatus::Running, "one two th"))
        .await;
    h.send(&q, 2, 0, delta(10, "ree ")).await;
    h.send(&q, 2, 1, delta(14, "four")).await;
    h.send(&q, 2, 1, delta(14, "four")).await; // duplicate
    h.send(&q, 1, 2, done(3, 2)).await; // never sent by a worker that lost its job
    h.send(&q, 2, 2, done(3, 4)).await;
    let (chunks, finished) = chunks(&sse(response.await.unwrap()).await);
    assert!(finished);
    assert_eq!(content(&chunks), "one two three four");
    let pieces: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(pieces, ["", "one ", "two ", "th", "ree ", "four"]);
}

#[tokio::test]
async fn a_gap_is_recovered_from_the_results_bucket() {
    let h = start(config("gw-relay4")).await;
    let body = json!({"messages": [{"role": "user", "content": "gap"}], "stream": true});
    let response = tokio::spawn({
        let (http, url) = (h.http.clone(), h.url("/v1/chat/completions"));
        async move { http.post(url).json(&body).send().await.unwrap() }
    });
    let q = h.next_question().await;
    h.send(&q, 1, 0, delta(0, "alpha ")).await;
    // "beta " is lost; the record held it before it was sent
    h.store(&stored(&q, ResultStatus::Running, "alpha beta gamma "))
        .await;
    h.send(&q, 1, 2, delta(11, "gamma ")).await;
    h.send(&q, 1, 3, delta(17, "delta")).await;
    h.store(&stored(&q, ResultStatus::Done, "alpha beta gamma delta"))
        .await;
    h.send(&q, 1, 4, done(2, 4)).await;
    let (chunks, finished) = chunks(&sse(response.await.unwrap()).await);
    assert!(finished);
    assert_eq!(content(&chunks), "alpha beta gamma delta");
}

#[tokio::test]
async fn a_worker_error_mid_stream_is_an_error_object_then_the_end() {
    let h = start(config("gw-relay5")).await;
    let body = json!({"messages": [{"role": "user", "content": "fail"}], "stream": true});
    let response = tokio::spawn({
        let (http, url) = (h.http.clone(), h.url("/v1/chat/completions"));
        async move { http.post(url).json(&body).send().await.unwrap() }
    });
    let q = h.next_question().await;
    h.send(&q, 1, 0, delta(0, "par")).await;
    let error = EventBody::Error {
        kind: ErrorKind::ContextOverflow,
        message: "the prompt is too long".into(),
    };
    h.send(&q, 1, 1, error).await;
    let (chunks, finished) = chunks(&sse(response.await.unwrap()).await);
    assert!(!finished, "no [DONE] after an error");
    let last = chunks.last().unwrap();
    assert_eq!(last["error"]["code"], "context_overflow");
    assert_eq!(last["error"]["message"], "the prompt is too long");
    assert_eq!(content(&chunks), "par");
}

#[tokio::test]
async fn a_worker_error_without_stream_is_an_http_error() {
    let h = start(config("gw-relay6")).await;
    let response = tokio::spawn({
        let (http, url) = (h.http.clone(), h.url("/v1/chat/completions"));
        async move { http.post(url).json(&user("x")).send().await.unwrap() }
    });
    let q = h.next_question().await;
    let error = EventBody::Error {
        kind: ErrorKind::ContextOverflow,
        message: "too long".into(),
    };
    h.send(&q, 1, 0, error).await;
    let response = response.await.unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "context_overflow");
    assert_eq!(body["error"]["param"], "messages");
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_its_request() {
    let h = start(config("gw-relay7")).await;
    let mut cancels = h.client.subscribe("cauce.cancel.*").await.unwrap();
    h.client.flush().await.unwrap();
    let body = json!({"messages": [{"role": "user", "content": "long"}], "stream": true});
    let response = tokio::spawn({
        let (http, url) = (h.http.clone(), h.url("/v1/chat/completions"));
        async move { http.post(url).json(&body).send().await.unwrap() }
    });
    let q = h.next_question().await;
    h.send(&q, 1, 0, delta(0, "tok")).await;
    let response = response.await.unwrap();
    let mut body = response.bytes_stream();
    // read until the first token arrived, then go away
    let mut seen = String::new();
    while !seen.contains("tok") {
        let bytes = tokio::time::timeout(WAIT, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&bytes));
    }
    drop(body);
    let cancel = tokio::time::timeout(WAIT, cancels.next())
        .await
        .expect("a cancel")
        .unwrap();
    assert_eq!(cancel.subject.as_str(), names::cancel_subject(&q.id));
    // the cancel bucket holds it too, for a worker that picks the job up later
    let bucket = h.js.get_key_value(names::CANCELS_BUCKET).await.unwrap();
    let mut found = false;
    for _ in 0..50 {
        if bucket
            .get(names::request_key(&q.id))
            .await
            .unwrap()
            .is_some()
        {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "cancel key stored");
}

#[tokio::test]
async fn keep_alive_comments_flow_while_the_request_waits() {
    let h = start(config("gw-relay8")).await;
    let body = json!({"messages": [{"role": "user", "content": "wait"}], "stream": true});
    let response = h.post("/v1/chat/completions", body).await;
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains(": keep-alive") {
        let bytes = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&bytes));
    }
    assert!(
        seen.starts_with("data: "),
        "the role chunk comes first: {seen}"
    );
}
