//! Questions are a log: requests accepted while no inference worker runs stay queued
//! and are answered in order once one starts; `cauce replay` of that range reproduces
//! the same answers (same model, temperature 0); a job a worker gives up on shows up
//! in `cauce replay --dead` with its reason.

mod procs;

use std::process::Output;
use std::time::Duration;

use async_nats::jetstream;
use cauce_nats::testkit::NatsServer;
use cauce_nats::wire::{ResultStatus, StoredResult};
use cauce_nats::{Limits, RequestId, names};
use procs::{chat_body, create_task, free_port, wait_healthy, wait_task};
use serde_json::Value;

const QUESTIONS: [&str; 3] = [
    "What is a retrieval worker?",
    "Name one color of the sky.",
    "Say hello in Spanish.",
];

fn cauce_output(url: &str, args: &[&str]) -> Output {
    let output = procs::cauce(url, args).output().unwrap();
    eprintln!(
        "cauce {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

async fn stored(kv: &jetstream::kv::Store, id: &str) -> StoredResult {
    let id = RequestId::parse(id).unwrap();
    let payload = kv.get(names::request_key(&id)).await.unwrap().unwrap();
    cauce_nats::wire::decode_compressed(&payload).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_requests_are_answered_in_order_replayed_identically_and_dead_letters_listed() {
    let server = NatsServer::start().unwrap_or_else(|err| panic!("{err}"));
    let url = server.url();
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    cauce_nats::apply(&js, &Limits::default()).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();

    let port = free_port();
    let mut gateway = procs::gateway(&url, "gw-replay", port, &[]);
    // one question at a time, so prompt jobs queue in the order the questions came
    let mut retrieval = procs::retrieval(&url, home.path(), &["--concurrency", "1"]);
    wait_healthy(&http, port).await;

    // no inference worker yet: the tasks are accepted and stay queued
    let mut ids = Vec::new();
    for question in QUESTIONS {
        ids.push(create_task(&http, port, &chat_body(question, 8)).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in &ids {
        let task: Value = http
            .get(format!("http://127.0.0.1:{port}/v1/tasks/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(task["status"], "queued", "{task}");
    }
    gateway.assert_running();
    retrieval.assert_running();

    // a worker comes back: every task completes, in the order it was asked
    let mut inference = procs::inference(&url, 1, &[]);
    for id in &ids {
        let task = wait_task(&http, port, id).await;
        assert_eq!(task["status"], "done", "{task}");
        let content = task["result"]["choices"][0]["message"]["content"]
            .as_str()
            .unwrap();
        assert!(!content.is_empty(), "{task}");
    }
    let kv = js.get_key_value(names::RESULTS_BUCKET).await.unwrap();
    let mut originals = Vec::new();
    for id in &ids {
        originals.push(stored(&kv, id).await);
    }
    assert!(
        originals
            .windows(2)
            .all(|pair| pair[0].finished_at_ms <= pair[1].finished_at_ms),
        "answered in order: {:?}",
        originals
            .iter()
            .map(|r| r.finished_at_ms)
            .collect::<Vec<_>>()
    );

    // a dry run lists the range and publishes nothing
    let dry = cauce_output(
        &url,
        &[
            "replay",
            "--from-seq",
            "1",
            "--to-seq",
            "3",
            "--dry-run",
            "--json",
        ],
    );
    assert!(dry.status.success());
    let listed = json_lines(&dry);
    assert_eq!(
        listed
            .iter()
            .map(|l| l["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ids.iter().map(String::as_str).collect::<Vec<_>>()
    );

    // replay of the range: the same model and temperature 0 give the same answers
    let replay = cauce_output(
        &url,
        &["replay", "--from-seq", "1", "--to-seq", "3", "--json"],
    );
    assert!(replay.status.success());
    let rows = json_lines(&replay);
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (row, id) in rows.iter().zip(&ids) {
        assert_eq!(row["original_id"], id.as_str(), "{row}");
        assert_eq!(row["new"]["status"], "done", "{row}");
        assert_eq!(row["identical"], true, "{row}");
        let replayed = stored(&kv, row["replay_id"].as_str().unwrap()).await;
        assert_eq!(
            replayed.replay_of.as_ref().map(RequestId::as_str),
            Some(id.as_str())
        );
        assert_eq!(replayed.status, ResultStatus::Done);
    }
    // one by id too, and the table form
    let by_id = cauce_output(&url, &["replay", "--id", &ids[1]]);
    assert!(by_id.status.success());
    let table = String::from_utf8_lossy(&by_id.stdout);
    assert!(
        table.contains(&ids[1]) && table.contains("1 identical"),
        "{table}"
    );

    // a poison job: a question far longer than the worker's context is terminated,
    // and JetStream's advisory lands in DEAD
    let long_question = "Tell me about rivers and streams and canals. ".repeat(130);
    let poison = create_task(&http, port, &chat_body(&long_question, 8)).await;
    let task = wait_task(&http, port, &poison).await;
    assert_eq!(task["status"], "failed", "{task}");
    let mut dead = Vec::new();
    for _ in 0..50 {
        let listing = cauce_output(&url, &["replay", "--dead", "--json"]);
        assert!(listing.status.success());
        dead = json_lines(&listing);
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["request_id"], poison.as_str(), "{}", dead[0]);
    assert_eq!(dead[0]["stream"], "PROMPTS");
    assert_eq!(dead[0]["reason_kind"], "terminated");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(reason.contains("context_overflow"), "{reason}");
    let table = cauce_output(&url, &["replay", "--dead"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(&poison) && table.contains("context_overflow"),
        "{table}"
    );

    // the cause fixed (a worker with a larger context), the dead letter is replayed,
    // completes, and leaves the list
    inference.stop();
    let mut inference = procs::inference_with_context(&url, 1, 4096, &[]);
    let replayed = cauce_output(&url, &["replay", "--dead", "--run", "--json"]);
    let stderr = String::from_utf8_lossy(&replayed.stderr);
    assert!(replayed.status.success(), "{stderr}");
    let rows = json_lines(&replayed);
    let row = rows
        .iter()
        .find(|row| row["original_id"] == poison.as_str())
        .unwrap_or_else(|| panic!("no replay of {poison}: {rows:?}"));
    assert_eq!(row["new"]["status"], "done", "{row}");
    assert!(
        stderr.contains("removed 1 replayed dead letter"),
        "{stderr}"
    );
    let listing = cauce_output(&url, &["replay", "--dead", "--json"]);
    assert!(json_lines(&listing).is_empty());

    inference.stop();
    retrieval.stop();
    gateway.stop();
}
