//! `POST /v1/search` through a real gateway and retrieval worker: ranked sources with
//! scores, titles, locations and snippets, no model run; bad input is a `400` naming
//! the field, and no retrieval worker is a `503` saying so.

mod procs;

use std::time::Duration;

use async_nats::jetstream;
use cauce_nats::Limits;
use cauce_nats::testkit::NatsServer;
use procs::{free_port, wait_healthy};
use serde_json::{Value, json};

async fn search(http: &reqwest::Client, port: u16, body: Value) -> (u16, Value) {
    let response = http
        .post(format!("http://127.0.0.1:{port}/v1/search"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A test server with cauce's streams.
async fn nats() -> NatsServer {
    let server = NatsServer::start().unwrap_or_else(|err| panic!("{err}"));
    cauce_nats::apply(&jetstream::new(server.client().await), &Limits::default())
        .await
        .unwrap();
    server
}

fn ingest(url: &str, flags: &[&str], path: &std::path::Path) {
    let mut args = vec!["ingest"];
    args.extend(flags);
    let ingested = procs::cauce(url, &args).arg(path).status().unwrap();
    assert!(ingested.success());
}

/// A gateway without rate limit, healthy, with its HTTP client and port.
async fn gateway(url: &str, name: &str) -> (reqwest::Client, u16, procs::Proc) {
    let http = reqwest::Client::new();
    let port = free_port();
    let gateway = procs::gateway(url, name, port, &["--rate-limit", "0"]);
    wait_healthy(&http, port).await;
    (http, port, gateway)
}

#[tokio::test(flavor = "multi_thread")]
async fn search_returns_ranked_sources_without_a_model() {
    let server = nats().await;
    let url = server.url();
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../retrieval/tests/fixtures");
    ingest(&url, &["--id-prefix", "fx"], &fixtures);
    let (http, port, _gateway) = gateway(&url, "gw-search").await;

    // no retrieval worker yet: a clear 503, not a hang
    let (status, body) = search(&http, port, json!({"query": "pelican retention"})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "search_unavailable");

    let home = tempfile::tempdir().unwrap();
    let _retrieval = procs::retrieval(&url, home.path(), &[]);
    let mut found = Value::Null;
    for _ in 0..300 {
        let (status, body) = search(
            &http,
            port,
            json!({"query": "How long does the pelican retention rule keep answers?", "top_k": 2}),
        )
        .await;
        if status == 200 && body["results"].as_array().is_some_and(|r| !r.is_empty()) {
            found = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let results = found["results"]
        .as_array()
        .expect("the search found sources");
    assert!(results.len() <= 2, "{found}");
    let first = &results[0];
    assert_eq!(first["rank"], 1);
    assert_eq!(first["doc_id"], "fx-storage", "{found}");
    assert!(first["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        first["location"]
            .as_str()
            .is_some_and(|l| l.contains("storage"))
    );
    assert!(first["score"].as_f64().is_some_and(|s| s > 0.0));
    assert!(
        first["snippet"]
            .as_str()
            .is_some_and(|s| s.contains("pelican")),
        "{found}"
    );
    let text = first["text"].as_str().unwrap();
    assert!(
        text.starts_with(first["snippet"].as_str().unwrap().trim_end_matches('…')),
        "{found}"
    );
    assert!(found["indexed_passages"].as_u64().is_some_and(|n| n > 0));

    // a conversation searches like a chat request
    let (status, body) = search(
        &http,
        port,
        json!({"messages": [{"role": "user", "content": "How do I scale out the workers?"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["doc_id"], "fx-workers", "{body}");

    for (bad, param) in [
        (json!({}), "query"),
        (json!({"query": "a", "messages": []}), "query"),
        (json!({"query": "  "}), "query"),
        (json!({"query": "a", "top_k": 0}), "top_k"),
        (json!({"query": "a", "top_k": 1000}), "top_k"),
        (json!({"messages": []}), "messages"),
    ] {
        let (status, body) = search(&http, port, bad.clone()).await;
        assert_eq!(status, 400, "{bad} → {body}");
        assert_eq!(body["error"]["param"], param, "{bad} → {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}

/// Documents ingested into a collection are searched only by requests that name it (or
/// name none); the same folder in two collections is two sets of documents.
#[tokio::test(flavor = "multi_thread")]
async fn collections_limit_the_documents_a_search_uses() {
    let server = nats().await;
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    for (course, collection, text) in [
        (
            "a",
            "biology-1",
            "The osmosis lab uses a potato slice and salt water.",
        ),
        ("b", "default", "The osmosis essay is due on Friday."),
    ] {
        let notes = dir.path().join(course).join("notes");
        std::fs::create_dir_all(&notes).unwrap();
        std::fs::write(notes.join("osmosis.md"), format!("# Osmosis\n\n{text}\n")).unwrap();
        ingest(&url, &["--collection", collection], &notes);
    }
    let (http, port, _gateway) = gateway(&url, "gw-collections").await;
    let home = tempfile::tempdir().unwrap();
    let _retrieval = procs::retrieval(&url, home.path(), &[]);

    let ids = |body: &Value| -> Vec<String> {
        body["results"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|hit| hit["doc_id"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut every = Vec::new();
    for _ in 0..300 {
        let (status, body) = search(&http, port, json!({"query": "osmosis"})).await;
        every = ids(&body);
        if status == 200 && every.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    every.sort();
    assert_eq!(every, ["biology-1-notes-osmosis", "notes-osmosis"]);

    let (status, body) = search(
        &http,
        port,
        json!({"query": "osmosis", "collections": ["biology-1"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), ["biology-1-notes-osmosis"], "{body}");
    let (_, body) = search(
        &http,
        port,
        json!({"query": "osmosis", "collections": ["default", "default"]}),
    )
    .await;
    assert_eq!(ids(&body), ["notes-osmosis"], "{body}");
    let (status, body) = search(
        &http,
        port,
        json!({"query": "osmosis", "collections": ["chemistry"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(ids(&body).is_empty(), "{body}");

    for (bad, param) in [
        (json!({"query": "a", "collections": []}), "collections"),
        (
            json!({"query": "a", "collections": ["a.b"]}),
            "collections[0]",
        ),
        (
            json!({"query": "a", "collections": vec!["x"; 17]}),
            "collections",
        ),
    ] {
        let (status, body) = search(&http, port, bad.clone()).await;
        assert_eq!(status, 400, "{bad} → {body}");
        assert_eq!(body["error"]["param"], param, "{bad} → {body}");
    }
}
