//! The response cache end to end (`cauce up` with a real nats-server and the real
//! model): hits skip the model, a changed document or a non-deterministic request
//! misses, identical concurrent requests generate once, a corrupt value is replaced.

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use cauce_nats::names;
use cauce_nats::wire::{self, CacheValue};
use common::{Cauce, chat_body};
use futures::StreamExt;
use serde_json::{Value, json};

fn seeded(question: &str) -> Value {
    json!({
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 8,
        "temperature": 0.7,
        "seed": 42,
    })
}

async fn ask(cauce: &Cauce, body: &Value) -> Value {
    let response = cauce.post("/v1/chat/completions", body).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn text(answer: &Value) -> &str {
    answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
}

fn cached(answer: &Value) -> bool {
    answer["cauce"]["cached"].as_bool().unwrap_or(false)
}

async fn prompt_jobs(js: &jetstream::Context) -> u64 {
    js.get_stream(names::PROMPTS)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

async fn answer_keys(kv: &jetstream::kv::Store) -> Vec<String> {
    let keys: Vec<String> = kv
        .keys()
        .await
        .unwrap()
        .filter_map(|k| async { k.ok() })
        .collect()
        .await;
    keys.into_iter()
        .filter(|k| k.starts_with("answer."))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_seeded_question_is_a_hit_that_skips_the_model() {
    let cauce = Cauce::start(2).await;
    let js = jetstream::new(cauce.nats_client().await);
    let question = seeded("What does cauce keep in the cauce-results bucket?");

    let first = ask(&cauce, &question).await;
    assert!(!cached(&first), "{first}");
    let jobs = prompt_jobs(&js).await;
    let second = ask(&cauce, &question).await;
    assert!(
        cached(&second),
        "the second answer comes from the cache: {second}"
    );
    assert_eq!(text(&second), text(&first));
    for count in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(second["usage"][count], first["usage"][count], "{count}");
    }
    // nothing of the prompt was computed for a hit
    assert_eq!(
        second["usage"]["prompt_tokens_details"]["cached_tokens"],
        second["usage"]["prompt_tokens"]
    );
    assert_eq!(second["cauce"]["sources"], first["cauce"]["sources"]);
    assert_eq!(prompt_jobs(&js).await, jobs, "no prompt job for a hit");

    // a hit streams in the same shape, flagged in the last chunk
    let mut streamed = question.clone();
    streamed["stream"] = true.into();
    let body = cauce
        .post("/v1/chat/completions", &streamed)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("\"cached\":true") && body.trim_end().ends_with("data: [DONE]"),
        "{body}"
    );

    // opting out generates again
    let mut opted_out = question.clone();
    opted_out["cauce"] = json!({"cache": false});
    assert!(!cached(&ask(&cauce, &opted_out).await));
    assert_eq!(prompt_jobs(&js).await, jobs + 1);

    let metrics = cauce.get_text("/metrics").await;
    assert!(metrics.contains("cauce_cache_hits_total"), "{metrics}");
    assert!(metrics.contains("cauce_cache_saved_bytes_total"));
}

#[tokio::test(flavor = "multi_thread")]
async fn non_deterministic_requests_are_never_cached() {
    let cauce = Cauce::start(2).await;
    let js = jetstream::new(cauce.nats_client().await);
    let mut question = chat_body("What is cauce?", 8, false);
    question["temperature"] = 0.7.into();
    let before = prompt_jobs(&js).await;
    for _ in 0..2 {
        assert!(!cached(&ask(&cauce, &question).await));
    }
    assert_eq!(prompt_jobs(&js).await, before + 2);
    let kv = js.get_key_value(names::CACHE_BUCKET).await.unwrap();
    assert!(answer_keys(&kv).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_identical_concurrent_questions_generate_once() {
    let cauce = Cauce::start(4).await;
    let js = jetstream::new(cauce.nats_client().await);
    // the model's fingerprint is published when its worker starts; warm up once
    ask(&cauce, &seeded("Warm up: what is NATS?")).await;
    let before = prompt_jobs(&js).await;
    let question = seeded("How do I scale out cauce with more workers?");
    let answers = futures::future::join_all((0..8).map(|_| ask(&cauce, &question))).await;
    assert_eq!(
        prompt_jobs(&js).await,
        before + 1,
        "one generation for eight requests"
    );
    let first = text(&answers[0]);
    assert!(answers.iter().all(|a| text(a) == first), "{answers:#?}");
    assert_eq!(answers.iter().filter(|a| cached(a)).count(), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_cache_value_is_a_miss_and_is_replaced() {
    let cauce = Cauce::start(2).await;
    let js = jetstream::new(cauce.nats_client().await);
    let kv = js.get_key_value(names::CACHE_BUCKET).await.unwrap();
    let question = seeded("What is the QUESTIONS stream for?");
    let first = ask(&cauce, &question).await;
    let keys = answer_keys(&kv).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    kv.put(&keys[0], "not zstd at all".into()).await.unwrap();

    let again = ask(&cauce, &question).await;
    assert!(
        !cached(&again),
        "a corrupt value is a miss, not an error: {again}"
    );
    assert!(!text(&again).is_empty() && !text(&first).is_empty());
    let value = kv.get(&keys[0]).await.unwrap().unwrap();
    assert!(matches!(
        wire::decode_compressed::<CacheValue>(&value),
        Ok(CacheValue::Entry(_))
    ));
    assert!(cached(&ask(&cauce, &question).await));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_document_changes_the_key() {
    let cauce = Cauce::start(2).await;
    let question = seeded("What does the --duplicate-window flag set?");
    let first = ask(&cauce, &question).await;
    assert!(cached(&ask(&cauce, &question).await));
    let cited = first["cauce"]["sources"][0]["doc_id"]
        .as_str()
        .unwrap()
        .to_string();
    let location = first["cauce"]["sources"][0]["location"]
        .as_str()
        .unwrap()
        .to_string();
    let file = location.split('#').next().unwrap();
    let name = std::path::Path::new(file)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    // a new version of the cited page, ingested under the same id
    let folder = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs")
            .join(&name),
    )
    .unwrap();
    std::fs::write(
        folder.path().join(&name),
        format!("{original}\n\nThis page was revised.\n"),
    )
    .unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_cauce"))
        .args([
            "ingest",
            "--id-prefix",
            "guide",
            "--nats-url",
            &cauce.nats_url,
        ])
        .arg(folder.path())
        .status()
        .unwrap();
    assert!(status.success());

    // once the retrieval worker applied the new version, the same question misses
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let answer = ask(&cauce, &question).await;
        if !cached(&answer) {
            assert_eq!(answer["cauce"]["sources"][0]["doc_id"], cited.as_str());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the changed document never changed the cache key"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
