//! Health, readiness, metrics, models and the chat page, against a real nats-server.
//! Workers are stood in for by NATS service announcements (a relay/protocol test,
//! not a pipeline test).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use async_nats::service::ServiceExt;
use cauce_nats::discovery::META_MODEL;
use cauce_nats::names::{WorkerKind, service_name};
use common::*;
use serde_json::Value;

#[tokio::test]
async fn readiness_needs_workers_and_metrics_are_exposed() {
    let h = start(config("gw-health1")).await;
    let health = h.http.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let (status, body) = readyz_after_round(&h, 1).await;
    assert_eq!(status, 503);
    assert!(
        body["reason"].as_str().unwrap().contains("retrieval"),
        "{body}"
    );

    let (_retrieval, _inference) = announce_workers(&h).await;
    let seen = body["view"]["rounds"].as_u64().unwrap();
    let (status, body) = readyz_after_round(&h, seen + 2).await;
    assert_eq!(status, 200, "{body}");

    let models = models(&h).await;
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "tiny-model");
    assert_eq!(models["data"][0]["object"], "model");

    // the gateway announces itself too
    let gateways = cauce_nats::discovery::discover(
        &h.client,
        WorkerKind::Gateway,
        std::time::Duration::from_millis(300),
    )
    .await
    .unwrap();
    assert!(
        gateways
            .iter()
            .any(|g| g.metadata(cauce_nats::discovery::META_GATEWAY) == Some("gw-health1"))
    );

    let _ = h
        .post("/v1/chat/completions", serde_json::json!({"messages": []}))
        .await;
    let metrics = h
        .http
        .get(h.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("cauce_gateway_requests_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("route=\"/v1/chat/completions\""),
        "{metrics}"
    );

    let page = h.http.get(h.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
}

async fn models(h: &Harness) -> Value {
    let response = h.http.get(h.url("/v1/models")).send().await.unwrap();
    response.json().await.unwrap()
}

/// `/readyz` once the background view has made at least `rounds` rounds.
async fn readyz_after_round(h: &Harness, rounds: u64) -> (u16, Value) {
    for _ in 0..400 {
        let response = h.http.get(h.url("/readyz")).send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        if body["view"]["rounds"].as_u64().unwrap() >= rounds {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the worker view never made {rounds} rounds");
}

/// Stands in for one retrieval and one inference worker (model `tiny-model`).
async fn announce_workers(
    h: &Harness,
) -> (async_nats::service::Service, async_nats::service::Service) {
    let retrieval = h
        .client
        .service_builder()
        .start(service_name(WorkerKind::Retrieval), "0.1.0")
        .await
        .unwrap();
    let inference = h
        .client
        .service_builder()
        .metadata(HashMap::from([(
            META_MODEL.to_string(),
            "tiny-model".to_string(),
        )]))
        .start(service_name(WorkerKind::Inference), "0.1.0")
        .await
        .unwrap();
    (retrieval, inference)
}

#[tokio::test]
async fn readiness_and_models_answer_from_the_view_not_a_discovery_round_per_call() {
    let mut config = config("gw-health4");
    // one round at start and no other for the length of the test
    config.view_refresh = Duration::from_secs(3600);
    let h = start(config).await;
    let (status, _) = readyz_after_round(&h, 1).await;
    assert_eq!(status, 503);

    let (_retrieval, _inference) = announce_workers(&h).await;
    for _ in 0..20 {
        let (status, body) = readyz_after_round(&h, 1).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["view"]["rounds"], 1, "{body}");
        assert!(body["reason"].as_str().unwrap().contains("retrieval"));
    }
    let models = models(&h).await;
    assert_eq!(models["data"], serde_json::json!([]), "{models}");
}

#[tokio::test]
async fn shutdown_is_graceful() {
    let h = start(config("gw-health2")).await;
    assert_eq!(
        h.http.get(h.url("/healthz")).send().await.unwrap().status(),
        200
    );
    let base = h.gateway.base.clone();
    h.gateway.stop().await;
    assert!(
        h.http.get(format!("{base}/healthz")).send().await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn a_running_stream_finishes_during_shutdown() {
    let h = start(config("gw-health3")).await;
    let body = serde_json::json!({"messages": [{"role": "user", "content": "hi"}], "stream": true});
    let response = h.post("/v1/chat/completions", body).await;
    assert_eq!(response.status(), 200);
    let question = h.next_question().await;
    // shutdown starts while the answer is being generated
    h.gateway.cancel.cancel();
    h.send(&question, 1, 0, delta(0, "still ")).await;
    h.send(&question, 1, 1, delta(6, "here")).await;
    h.send(&question, 1, 2, done(1, 2)).await;
    let (chunks, finished) = chunks(&sse(response).await);
    assert!(finished, "the stream ran to its end");
    assert_eq!(content(&chunks), "still here");
    tokio::time::timeout(WAIT, h.gateway.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
