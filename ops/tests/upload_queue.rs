//! Uploads wait in the queue, not in a process: a file uploaded while no ingest worker
//! runs stays `queued`, across a restart of the gateway that took it, and becomes
//! `indexed` once an ingest worker starts (each component its own process, on a real
//! nats-server).

mod procs;

use std::time::Duration;

use cauce_nats::testkit::NatsServer;
use procs::{Proc, document_state, free_port, upload, wait_document, wait_healthy};

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

    let id = upload(
        &http,
        port,
        "tides.md",
        b"# Tides\n\nSpring tides follow the new moon.\n",
    )
    .await;

    // the gateway that took it goes away; another one finds it still queued
    gateway.stop();
    let port = free_port();
    let _gateway = procs::gateway(&url, "gw-queue-2", port, &["--rate-limit", "0"]);
    wait_healthy(&http, port).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        document_state(&http, port, &id).await,
        (200, "queued".into())
    );

    let _ingest = Proc::spawn("ingest", &mut procs::cauce(&url, &["ingest", "--follow"]));
    wait_document(&http, port, &id, "indexed").await;
}

/// An upload whose every delivery went to a worker that died before it ended (here a
/// client that takes the job and gives it back, five times, as killed workers would
/// through their ack wait) does not stay `queued`: the server's max-deliveries advisory
/// reaches an ingest worker, which records the upload `failed` with the reason.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_whose_workers_all_died_ends_failed() {
    use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
    use cauce_nats::{ensure::INGEST_MAX_DELIVERIES, names};
    use futures::StreamExt;

    let nats = NatsServer::start()
        .unwrap_or_else(|err| panic!("{err} (./ops/setup installs nats-server)"));
    let url = nats.url();
    let applied = procs::cauce(&url, &["nats", "apply"]).output().unwrap();
    assert!(applied.status.success(), "{applied:?}");
    let home = tempfile::tempdir().unwrap();
    let _retrieval = procs::retrieval(&url, home.path(), &[]);
    let port = free_port();
    let _gateway = procs::gateway(&url, "gw-dead", port, &["--rate-limit", "0"]);
    let http = reqwest::Client::new();
    wait_healthy(&http, port).await;
    let id = upload(&http, port, "tides.md", b"# Tides\n\nNeap tides follow.\n").await;

    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    let jobs: PullConsumer = js
        .get_consumer_from_stream(names::INGEST_CONSUMER, names::UPLOADS)
        .await
        .unwrap();
    for delivery in 1..=INGEST_MAX_DELIVERIES {
        let mut batch = jobs
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(10))
            .messages()
            .await
            .unwrap();
        let job = batch.next().await.expect("the job is delivered").unwrap();
        assert_eq!(job.info().unwrap().delivered, delivery);
        job.ack_with(AckKind::Nak(None)).await.unwrap();
    }
    assert_eq!(
        document_state(&http, port, &id).await,
        (200, "queued".into())
    );

    let _ingest = Proc::spawn("ingest", &mut procs::cauce(&url, &["ingest", "--follow"]));
    wait_document(&http, port, &id, "failed").await;
    let doc: serde_json::Value = http
        .get(format!("http://127.0.0.1:{port}/v1/documents/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reason = doc["reason"].as_str().unwrap();
    assert!(
        reason.contains("gave it up after 5 attempts") && reason.ends_with("upload it again"),
        "{doc}"
    );

    // the same name uploaded again is a new attempt, converted and indexed
    let again = upload(&http, port, "tides.md", b"# Tides\n\nNeap tides follow.\n").await;
    assert_eq!(again, id, "the same exact name is the same document");
    wait_document(&http, port, &id, "indexed").await;
    let doc: serde_json::Value = http
        .get(format!("http://127.0.0.1:{port}/v1/documents/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["attempts"], 1, "{doc}");
}
