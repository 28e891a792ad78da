//! The knowledge cache and the workers' metrics through `cauce up`: a second student
//! asking the first one's question in another wording, sampled afresh (so the response
//! cache cannot answer), retrieves the same passages and restores their prompt prefix
//! from the inference worker's host cache; `usage` says how many prompt tokens were
//! reused, and the gateway's `/metrics` and `cauce status` show every worker's figures.

mod common;

use std::time::Duration;

use common::{Cauce, chat_body};
use serde_json::Value;

async fn ask(cauce: &Cauce, question: &str, seed: u64) -> Value {
    let mut body = chat_body(question, 8, false);
    body["temperature"] = 0.7.into();
    body["seed"] = seed.into();
    let response = cauce.post("/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn cached(answer: &Value) -> u64 {
    answer["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or(0)
}

/// The value of the first sample of `name` in a Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// `/metrics` once it shows a host cache hit (the gateway refreshes its view of the
/// workers every 2 s).
async fn metrics_after_a_hit(cauce: &Cauce) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        text = cauce.get_text("/metrics").await;
        if sample(&text, "cauce_inference_host_cache_hits_total").is_some_and(|n| n >= 1.0) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("/metrics never showed a host cache hit:\n{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reworded_question_restores_the_passages_prefix_and_metrics_show_it() {
    let cauce = Cauce::start(2).await;
    let first = ask(&cauce, "How do I stop cauce cleanly?", 1).await;
    let second = ask(&cauce, "Stopping cauce cleanly: how?", 2).await;
    assert_eq!(
        first["cauce"]["sources"], second["cauce"]["sources"],
        "both wordings retrieve the same passages"
    );
    let prompt = second["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(cached(&first) < 16, "{first}");
    // all of the prompt but the question's own words came from the host cache
    assert!(
        cached(&second) + 20 >= prompt && cached(&second) > 100,
        "{} of {prompt} prompt tokens reused",
        cached(&second)
    );

    let text = metrics_after_a_hit(&cauce).await;
    let line = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    for histogram in [
        "cauce_inference_time_to_first_token_seconds_count",
        "cauce_inference_inter_token_latency_seconds_bucket",
        "cauce_retrieval_search_time_seconds_bucket",
    ] {
        assert!(text.contains(histogram), "no {histogram} in:\n{text}");
    }
    assert!(line("cauce_inference_cached_tokens_total") >= cached(&second) as f64);
    assert!(line("cauce_inference_host_cache_bytes") > 0.0);
    let generated = line("cauce_inference_generation_tokens_total");
    assert!((2.0..=16.0).contains(&generated), "{generated}");
    assert!(line("cauce_retrieval_index_documents") >= 5.0, "{text}");
    assert_eq!(line("cauce_retrieval_follower_lag_records"), 0.0);

    let status = std::process::Command::new(env!("CARGO_BIN_EXE_cauce"))
        .args(["status", "--nats-url", &cauce.nats_url])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("% cached") && status.contains("host cache"),
        "{status}"
    );
    assert!(status.contains("records behind DOCS"), "{status}");
}
