//! Scale-out on one machine: two gateways, two retrieval workers and two inference
//! workers on one NATS. Fifty concurrent requests through both gateways all complete,
//! both inference workers served some, and `cauce status` sees every process.

mod procs;

use std::time::Duration;

use async_nats::jetstream;
use cauce_nats::Limits;
use cauce_nats::discovery;
use cauce_nats::names::WorkerKind;
use cauce_nats::testkit::NatsServer;
use futures::future::join_all;
use procs::{chat_body, free_port, wait_healthy};
use serde_json::Value;

const REQUESTS: usize = 50;

#[tokio::test(flavor = "multi_thread")]
async fn fifty_requests_through_two_gateways_are_shared_by_two_inference_workers() {
    let server = NatsServer::start().unwrap_or_else(|err| panic!("{err}"));
    let url = server.url();
    let client = server.client().await;
    cauce_nats::apply(&jetstream::new(client.clone()), &Limits::default())
        .await
        .unwrap();
    let homes = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let http = reqwest::Client::new();

    let ports = [free_port(), free_port()];
    let mut processes = [
        procs::gateway(&url, "gw-one", ports[0], &["--rate-limit", "0"]),
        procs::gateway(&url, "gw-two", ports[1], &["--rate-limit", "0"]),
        procs::retrieval(&url, homes[0].path(), &["--concurrency", "4"]),
        procs::retrieval(&url, homes[1].path(), &["--concurrency", "4"]),
        procs::inference(&url, 4, &["--threads", "1"]),
        procs::inference(&url, 4, &["--threads", "1"]),
    ];
    for port in ports {
        wait_healthy(&http, port).await;
    }
    // both inference workers announced: both have their model loaded and pull jobs
    let mut announced = 0;
    for _ in 0..600 {
        announced = discovery::discover(&client, WorkerKind::Inference, Duration::from_millis(300))
            .await
            .unwrap()
            .len();
        if announced == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(announced, 2, "both inference workers announce themselves");

    let answers = join_all((0..REQUESTS).map(|i| {
        let http = http.clone();
        let port = ports[i % 2];
        async move {
            let body = chat_body(&format!("Question number {i}: what is cauce?"), 8);
            let response = http
                .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let completion: Value = response.json().await.unwrap();
            (status, completion)
        }
    }))
    .await;
    for (status, completion) in &answers {
        assert_eq!(*status, 200, "{completion}");
        let content = completion["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default();
        assert!(!content.is_empty(), "{completion}");
    }

    let workers = discovery::discover(&client, WorkerKind::Inference, Duration::from_secs(1))
        .await
        .unwrap();
    let served: Vec<u64> = workers
        .iter()
        .map(|w| {
            w.stats_data()
                .and_then(|d| d["jobs_finished"].as_u64())
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(served.len(), 2, "{served:?}");
    assert!(
        served.iter().all(|&n| n > 0),
        "both workers served some: {served:?}"
    );
    assert_eq!(served.iter().sum::<u64>(), REQUESTS as u64, "{served:?}");

    // `cauce status --json` sees all six processes and the drained queues
    let output = procs::cauce(&url, &["status", "--json", "--sample", "100ms"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    let workers = status["workers"].as_array().unwrap();
    let count = |kind: &str| workers.iter().filter(|w| w["kind"] == kind).count();
    assert_eq!((count("retrieval"), count("inference")), (2, 2), "{status}");
    let gateways: Vec<&str> = status["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["gateway"].as_str())
        .collect();
    assert_eq!(gateways, ["gw-one", "gw-two"], "{status}");
    let questions = status["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "QUESTIONS")
        .unwrap();
    assert_eq!(questions["messages"], REQUESTS as u64, "{questions}");
    let retrieval = questions["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "retrieval")
        .unwrap();
    assert_eq!(
        (&retrieval["pending"], &retrieval["ack_pending"]),
        (&0.into(), &0.into()),
        "{retrieval}"
    );
    // and the screen renders
    let screen = procs::cauce(&url, &["status", "--sample", "100ms"])
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&screen.stdout);
    assert!(
        screen.contains("QUESTIONS/retrieval") && screen.contains("gw-two"),
        "{screen}"
    );

    for process in processes.iter_mut().rev() {
        process.stop();
    }
}
