//! Every refusal the gateway answers, with its status and OpenAI-style body, against a
//! real nats-server.

mod common;

use std::time::Duration;

use cauce_gateway::RateLimit;
use cauce_nats::{ModelName, names};
use common::*;
use serde_json::{Value, json};

async fn error_of(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        error["type"].is_string() && error["code"].is_string(),
        "{body}"
    );
    error.clone()
}

#[tokio::test]
async fn bad_requests_are_400_naming_the_field() {
    let h = start(config("gw-err1")).await;
    let url = h.url("/v1/chat/completions");
    let raw = h
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"messages\": [")
        .send()
        .await
        .unwrap();
    let error = error_of(raw, 400).await;
    assert_eq!(error["code"], "invalid_json");
    assert_eq!(error["type"], "invalid_request_error");
    // a body a cross-site page could post without asking (text/plain) is never read
    let plain = h
        .http
        .post(&url)
        .header("content-type", "text/plain")
        .body("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}")
        .send()
        .await
        .unwrap();
    let error = error_of(plain, 415).await;
    assert_eq!(error["code"], "unsupported_media_type");

    let cases = [
        (json!({"messages": "hello"}), "messages"),
        (
            json!({"messages": [{"role": "user", "content": 42}]}),
            "messages[0].content",
        ),
        (json!({"messages": []}), "messages"),
        (
            json!({"model": 7, "messages": [{"role": "user", "content": "x"}]}),
            "model",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "n": 2}),
            "n",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": -5}),
            "max_tokens",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "temperature": 9}),
            "temperature",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}),
            "stream",
        ),
    ];
    for (body, param) in cases {
        let error = error_of(h.post("/v1/chat/completions", body.clone()).await, 400).await;
        assert_eq!(error["param"], param, "{body} → {error}");
        assert!(
            error["message"].as_str().unwrap().contains(param),
            "{error}"
        );
    }
    // the tasks API validates the same way
    let error = error_of(h.post("/v1/tasks", json!({"messages": []})).await, 400).await;
    assert_eq!(error["param"], "messages");
}

#[tokio::test]
async fn a_2_mb_body_is_413() {
    let h = start(config("gw-err2")).await;
    let big = "a".repeat(2 * 1024 * 1024);
    let body = json!({"messages": [{"role": "user", "content": big}]});
    let response = h.post("/v1/chat/completions", body).await;
    let error = error_of(response, 413).await;
    assert_eq!(error["code"], "body_too_large");
}

#[tokio::test]
async fn a_question_that_leaves_no_room_for_its_passages_is_413_at_once() {
    let h = start(config("gw-err9")).await;
    // under the 1 MiB body limit, over the server's max_payload less the passage room
    let big = "a".repeat(1_000_000);
    for path in ["/v1/chat/completions", "/v1/tasks"] {
        let body = json!({"messages": [{"role": "user", "content": big}]});
        let error = error_of(h.post(path, body).await, 413).await;
        assert_eq!(error["code"], "question_too_large", "{error}");
        assert_eq!(error["param"], "messages");
        assert!(
            error["message"].as_str().unwrap().contains("shorten"),
            "{error}"
        );
    }
    let info =
        h.js.get_stream(cauce_nats::names::QUESTIONS)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages;
    assert_eq!(info, 0, "nothing reached the queue");
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let h = start(config("gw-err3")).await;
    let response = h.http.get(h.url("/v1/nothing")).send().await.unwrap();
    let error = error_of(response, 404).await;
    assert_eq!(error["code"], "unknown_route");
    assert!(error["message"].as_str().unwrap().contains("/v1/nothing"));

    let response = h
        .http
        .get(h.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    let error = error_of(response, 405).await;
    assert_eq!(error["code"], "method_not_allowed");

    let response = h
        .http
        .get(h.url("/v1/tasks/doesnotexist"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response, 404).await["code"], "not_found");

    // a model no worker ever served is refused before anything is queued
    let body =
        serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let response = h
        .http
        .post(h.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let error = error_of(response, 404).await;
    assert_eq!(error["code"], "model_not_found");
    assert_eq!(error["param"], "model");
    assert!(error["message"].as_str().unwrap().contains("/v1/models"));
}

#[tokio::test]
async fn api_keys_are_checked_with_401() {
    let mut config = config("gw-err4");
    config.api_keys = vec!["sk-good".into()];
    let h = start(config).await;
    let url = h.url("/v1/chat/completions");
    let missing = h.http.post(&url).json(&user("x")).send().await.unwrap();
    let error = error_of(missing, 401).await;
    assert_eq!(error["code"], "missing_api_key");
    let bad = h
        .http
        .post(&url)
        .bearer_auth("sk-bad")
        .json(&user("x"))
        .send()
        .await
        .unwrap();
    let error = error_of(bad, 401).await;
    assert_eq!(error["code"], "invalid_api_key");
    // a good key gets through to validation
    let good = h
        .http
        .post(&url)
        .bearer_auth("sk-good")
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 400);
    // health needs no key
    assert_eq!(
        h.http.get(h.url("/healthz")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let mut config = config("gw-err5");
    config.rate_limit = Some(RateLimit {
        per_second: 0.01,
        burst: 2,
    });
    let h = start(config).await;
    for _ in 0..2 {
        let response = h
            .post("/v1/chat/completions", json!({"messages": []}))
            .await;
        assert_eq!(response.status(), 400);
    }
    let response = h
        .post("/v1/chat/completions", json!({"messages": []}))
        .await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let error = error_of(response, 429).await;
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(error["type"], "rate_limit_error");
}

#[tokio::test]
async fn without_api_keys_a_made_up_token_per_request_does_not_escape_the_limit() {
    let mut config = config("gw-err10");
    config.rate_limit = Some(RateLimit {
        per_second: 0.01,
        burst: 2,
    });
    let h = start(config).await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let response = h
            .http
            .post(h.url("/v1/chat/completions"))
            .bearer_auth(format!("made-up-{i}"))
            .json(&json!({"messages": []}))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [400, 400, 429, 429], "the client is its address");
}

#[tokio::test]
async fn a_trusted_proxy_header_names_the_client() {
    let mut config = config("gw-err11");
    config.rate_limit = Some(RateLimit {
        per_second: 0.01,
        burst: 1,
    });
    config.client_address_header = Some("x-forwarded-for".into());
    let h = start(config).await;
    let mut statuses = Vec::new();
    for client in ["10.0.0.1", "10.0.0.2", "10.0.0.1"] {
        let response = h
            .http
            .post(h.url("/v1/chat/completions"))
            .header("x-forwarded-for", format!("203.0.113.9, {client}"))
            .json(&json!({"messages": []}))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(
        statuses,
        [400, 400, 429],
        "one bucket per forwarded address"
    );
}

#[tokio::test]
async fn an_unacked_publish_is_503_with_retry_after() {
    // the gateway retries an unacked publish until this timeout, then gives up
    let mut config = config("gw-err6");
    config.publish_timeout = std::time::Duration::from_millis(600);
    let h = start(config).await;
    h.js.delete_stream(names::QUESTIONS).await.unwrap();
    let response = h.post("/v1/chat/completions", user("x")).await;
    assert!(response.headers().contains_key("retry-after"));
    let error = error_of(response, 503).await;
    assert_eq!(error["code"], "not_queued");
    assert!(
        error["message"].as_str().unwrap().contains("within 600 ms"),
        "{error}"
    );
    let response = h.post("/v1/tasks", user("x")).await;
    assert_eq!(error_of(response, 503).await["code"], "not_queued");
}

#[tokio::test]
async fn a_full_gateway_is_503() {
    let mut config = config("gw-err7");
    config.max_in_flight = 1;
    let h = start(config).await;
    let body = json!({"messages": [{"role": "user", "content": "hold"}], "stream": true});
    let held = h.post("/v1/chat/completions", body).await;
    assert_eq!(held.status(), 200);
    let response = h.post("/v1/chat/completions", user("x")).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(error_of(response, 503).await["code"], "gateway_full");
    drop(held);
}

#[tokio::test]
async fn a_full_prompts_backlog_is_503() {
    let mut config = config("gw-err8");
    config.max_backlog = 1;
    config.backlog_refresh = Duration::ZERO;
    let h = start(config).await;
    let model = ModelName::default_model();
    cauce_nats::ensure_inference_consumer(&h.js, &model)
        .await
        .unwrap();
    for _ in 0..2 {
        h.js.publish(names::prompt_subject(&model), "job".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let response = h.post("/v1/chat/completions", user("x")).await;
    assert!(response.headers().contains_key("retry-after"));
    let error = error_of(response, 503).await;
    assert_eq!(error["code"], "backlog_full");
}
