//! An inference worker killed (SIGKILL) mid-answer, with the real model and real
//! processes: the job goes on at another worker, which continues the same answer.
//!
//! Two inference workers share the load (other requests in their batches), answers are
//! sampled at temperature 1.0 (so a second run from the start would differ), and the
//! worker that holds the request — the owner its record names — is killed. The client
//! sees one answer: what it saw before the kill is a prefix of it, nothing is repeated,
//! it equals the stored result, and the stream ends with `[DONE]`. The same for a task
//! no client follows.

mod common;
mod procs;

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use cauce_nats::discovery;
use cauce_nats::names::{self, WorkerKind};
use cauce_nats::testkit::NatsServer;
use cauce_nats::wire::{ResultStatus, StoredResult};
use cauce_nats::{Limits, RequestId};
use common::SseReader;
use procs::{Proc, free_port, wait_healthy};
use serde_json::{Value, json};

const MAX_TOKENS: u32 = 160;

fn story(stream: bool) -> Value {
    json!({
        "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse keeper and a storm."}],
        "max_tokens": MAX_TOKENS,
        "temperature": 1.0,
        "stream": stream,
        "cauce": {"cache": false},
    })
}

fn worker(url: &str) -> Proc {
    procs::inference(url, 2, &["--threads", "1"])
}

async fn wait_workers(client: &async_nats::Client, count: usize) {
    for _ in 0..600 {
        let found = discovery::discover(client, WorkerKind::Inference, Duration::from_millis(300))
            .await
            .unwrap()
            .len();
        if found >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{count} inference workers never announced themselves");
}

async fn record(results: &kv::Store, id: &RequestId) -> Option<StoredResult> {
    let bytes = results.get(names::request_key(id)).await.unwrap()?;
    Some(cauce_nats::wire::decode_compressed(&bytes).unwrap())
}

/// Kills the worker process the record's owner (`host:pid#run`) names.
fn kill_holder(workers: &mut Vec<Proc>, running: &StoredResult) {
    let pid: u32 = running
        .owner
        .split('#')
        .next()
        .and_then(|process| process.rsplit(':').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("owner {:?} names no process", running.owner));
    let at = workers
        .iter()
        .position(|w| w.pid() == Some(pid))
        .unwrap_or_else(|| panic!("no worker has pid {pid}"));
    workers.remove(at).kill();
}

/// Background questions that keep both workers' batches shared.
fn other_users(http: &reqwest::Client, port: u16) -> Vec<tokio::task::JoinHandle<u16>> {
    (0..3)
        .map(|_| {
            let http = http.clone();
            tokio::spawn(async move {
                let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
                let response = http.post(url).json(&story(false)).send().await.unwrap();
                response.status().as_u16()
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_s_answer_is_continued_by_another_without_a_seam() {
    let server = NatsServer::start().unwrap_or_else(|err| panic!("{err}"));
    let url = server.url();
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    cauce_nats::apply(&js, &Limits::default()).await.unwrap();
    let results = js.get_key_value(names::RESULTS_BUCKET).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let port = free_port();
    let _gateway = procs::gateway(&url, "gw-failover", port, &["--rate-limit", "0"]);
    let _retrieval = procs::retrieval(&url, home.path(), &[]);
    let mut workers = vec![worker(&url), worker(&url)];
    wait_healthy(&http, port).await;
    wait_workers(&client, 2).await;

    // a streamed answer, killed at its holder after some text
    let others = other_users(&http, port);
    let response = http
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .json(&story(true))
        .send()
        .await
        .unwrap();
    let mut stream = SseReader::new(response);
    let mut pieces = Vec::new();
    let mut id = None;
    while pieces.len() < 20 {
        let chunk = stream.next_json().await;
        id.get_or_insert_with(|| chunk["id"].as_str().unwrap().to_string());
        if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str()
            && !text.is_empty()
        {
            pieces.push(text.to_string());
        }
        assert!(
            chunk["choices"][0]["finish_reason"].is_null(),
            "the story ended before the kill: {chunk}"
        );
    }
    let id = RequestId::parse(id.unwrap().trim_start_matches("chatcmpl-")).unwrap();
    let running = record(&results, &id).await.expect("the request's record");
    assert_eq!(running.status, ResultStatus::Running);
    kill_holder(&mut workers, &running);
    let before: String = pieces.concat();
    workers.push(worker(&url));
    loop {
        let data = stream.next_data().await.expect("the stream goes on");
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(&data).unwrap();
        assert!(chunk.get("error").is_none(), "{chunk}");
        if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str() {
            pieces.push(text.to_string());
        }
    }
    let shown = pieces.concat();
    let stored = record(&results, &id).await.unwrap();
    assert_eq!(stored.status, ResultStatus::Done);
    assert!(stored.attempt >= 2, "the job was redelivered: {stored:?}");
    assert!(
        shown.starts_with(&before),
        "the text before the kill begins the answer"
    );
    assert_eq!(shown, stored.text, "the client saw the stored answer");
    assert!(stored.usage.completion_tokens <= MAX_TOKENS);
    for other in others {
        assert_eq!(other.await.unwrap(), 200, "the other users' answers end");
    }

    // a task no client follows
    wait_workers(&client, 2).await;
    let task = procs::create_task(&http, port, &story(false)).await;
    let id = RequestId::parse(&task).unwrap();
    let running = loop {
        if let Some(running) = record(&results, &id).await
            && running.status == ResultStatus::Running
            && running.text.len() > 40
        {
            break running;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    kill_holder(&mut workers, &running);
    let done = procs::wait_task(&http, port, &task).await;
    assert_eq!(done["status"], "done", "{done}");
    let stored = record(&results, &id).await.unwrap();
    assert!(stored.attempt >= 2, "the task was redelivered: {stored:?}");
    assert!(
        stored.text.starts_with(&running.text),
        "the task's answer continues what its record held: {:?} then {:?}",
        running.text,
        stored.text
    );
}
