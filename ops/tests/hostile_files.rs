//! Hostile files against `cauce up`, the short version of the suite: crafted files of
//! every reader's kind (`cauce_ingest::testkit::hostile_files`) uploaded at once, with
//! tight conversion limits. Each one ends, `failed` with a reason or `indexed` where its
//! reader handles it safely; `/readyz` never fails and chat keeps answering meanwhile;
//! and a normal PDF uploaded after them is indexed and cited.

mod common;

use std::time::{Duration, Instant};

use common::Cauce;
use serde_json::{Value, json};

/// Only keeps a broken run from hanging.
const PATIENCE: Duration = Duration::from_secs(900);

async fn upload(cauce: &Cauce, files: &[(&str, Vec<u8>)]) -> Vec<String> {
    let mut form = reqwest::multipart::Form::new();
    for (name, bytes) in files {
        let part = reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.to_string());
        form = form.part("file", part);
    }
    let response = cauce
        .http
        .post(cauce.url("/v1/documents"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{accepted}");
    let ids = accepted["data"].as_array().unwrap();
    ids.iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

async fn document(cauce: &Cauce, id: &str) -> Value {
    cauce.get_json(&format!("/v1/documents/{id}"), 200).await
}

async fn assert_still_serving(cauce: &Cauce) {
    let ready = cauce.http.get(cauce.url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "/readyz failed while hostile files converted"
    );
    let answer = cauce
        .post(
            "/v1/chat/completions",
            &common::chat_body("What is cauce?", 4, false),
        )
        .await;
    assert_eq!(answer.status(), 200, "chat stopped answering");
}

#[tokio::test(flavor = "multi_thread")]
async fn crafted_files_each_end_and_the_service_goes_on() {
    // the long suite (ops/hostile-files) scales the files up and keeps the default limits
    let scale: usize = std::env::var("CAUCE_HOSTILE_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let tight = [
        "--convert-time",
        "10s",
        "--convert-time-per-mib",
        "2s",
        "--convert-memory-mib",
        "1024",
        "--convert-max-output-mib",
        "16",
    ];
    let limits: &[&str] = if scale > 1 { &[] } else { &tight };
    let cauce = Cauce::start_with(1, limits).await;
    let files = cauce_ingest::testkit::hostile_files_at(scale);
    let ids = upload(&cauce, &files).await;
    assert_eq!(ids.len(), files.len());

    let deadline = Instant::now() + PATIENCE;
    let mut ended = Vec::new();
    while ended.len() < ids.len() {
        assert!(Instant::now() < deadline, "uploads never ended: {ended:?}");
        assert_still_serving(&cauce).await;
        ended.clear();
        for id in &ids {
            let doc = document(&cauce, id).await;
            if matches!(doc["state"].as_str(), Some("failed" | "indexed")) {
                ended.push(doc);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for doc in &ended {
        eprintln!(
            "hostile: {} {} {}",
            doc["file_name"], doc["state"], doc["reason"]
        );
        if doc["state"] == "failed" {
            let reason = doc["reason"].as_str().unwrap_or_default();
            assert!(!reason.is_empty(), "a failed upload says why: {doc}");
        }
    }

    let normal = cauce_ingest::testkit::pdf_bytes(
        "Harbour guide",
        &["The lighthouse of Puerto Quieto is painted green and white."],
    );
    let id = upload(&cauce, &[("harbour.pdf", normal)]).await.remove(0);
    loop {
        assert!(
            Instant::now() < deadline,
            "the normal PDF was never indexed"
        );
        let doc = document(&cauce, &id).await;
        assert_ne!(doc["state"], "failed", "{doc}");
        if doc["state"] == "indexed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let body = json!({
        "messages": [{"role": "user", "content": "What colour is the lighthouse of Puerto Quieto?"}],
        "max_tokens": 8,
        "temperature": 0,
    });
    let answer: Value = cauce
        .post("/v1/chat/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    let sources = answer["cauce"]["sources"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        sources
            .iter()
            .any(|s| s["doc_id"].as_str() == Some(id.as_str())),
        "the normal PDF is cited: {answer}"
    );
}
