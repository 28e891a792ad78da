//! Uploads wait in the queue, not in a process: a file uploaded while no ingest worker
//! runs stays `queued`, across a restart of the gateway that took it, and becomes
//! `indexed` once an ingest worker starts (each component its own process, on a real
//! nats-server).

mod procs;

use std::time::Duration;

use cauce_nats::testkit::NatsServer;
use procs::{Proc, free_port, wait_healthy};
use serde_json::Value;

async fn state(http: &reqwest::Client, port: u16, id: &str) -> String {
    let doc: Value = http
        .get(format!("http://127.0.0.1:{port}/v1/documents/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    doc["state"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_waits_queued_until_an_ingest_worker_takes_it() {
    let nats = NatsServer::start()
        .unwrap_or_else(|err| panic!("{err} (./ops/setup installs nats-server)"));
    let url = nats.url();
    let applied = procs::cauce(&url, &["nats", "apply"]).output().unwrap();
    assert!(applied.status.success(), "{applied:?}");
    let home = tempfile::tempdir().unwrap();
    let _retrieval = procs::retrieval(&url, home.path(), &[]);
    let port = free_port();
    let mut gateway = procs::gateway(&url, "gw-queue", port, &["--rate-limit", "0"]);
    let http = reqwest::Client::new();
    wait_healthy(&http, port).await;

    let file =
        reqwest::multipart::Part::bytes(b"# Tides\n\nSpring tides follow the new moon.\n".to_vec())
            .file_name("tides.md");
    let response = http
        .post(format!("http://127.0.0.1:{port}/v1/documents"))
        .multipart(reqwest::multipart::Form::new().part("file", file))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let id = accepted["data"][0]["id"].as_str().unwrap().to_string();

    // the gateway that took it goes away; another one finds it still queued
    gateway.stop();
    let port = free_port();
    let _gateway = procs::gateway(&url, "gw-queue-2", port, &["--rate-limit", "0"]);
    wait_healthy(&http, port).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(state(&http, port, &id).await, "queued");

    let _ingest = Proc::spawn("ingest", &mut procs::cauce(&url, &["ingest", "--follow"]));
    for _ in 0..600 {
        if state(&http, port, &id).await == "indexed" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{id} never became indexed: {}",
        state(&http, port, &id).await
    );
}
