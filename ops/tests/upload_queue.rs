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
