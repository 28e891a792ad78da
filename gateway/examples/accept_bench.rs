//! What fsyncing every JetStream write costs (a benchmark, not a test): accepted
//! requests per second through `POST /v1/tasks` (a task record created, the question
//! published, both acked by JetStream) with nats-server's `sync_interval: always`,
//! which cauce runs, and with its default (an fsync every 2 minutes), in one run.
//!
//! ```text
//! cargo run --release -p cauce-gateway --example accept_bench -- [requests] [concurrency]
//! ```
//!
//! No worker runs: every request stays queued, so only accepting is measured. The
//! load, the gateway and nats-server share the machine's cores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use cauce_gateway::GatewayConfig;
use cauce_nats::Limits;
use cauce_nats::testkit::NatsServer;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let requests: usize = args.get(1).map_or(Ok(2000), |s| s.parse())?;
    let concurrency: usize = args.get(2).map_or(Ok(32), |s| s.parse())?;
    println!("requests {requests}, concurrency {concurrency}");
    let mut rates = Vec::new();
    for sync_always in [false, true] {
        let rate = accepted_per_second(sync_always, requests, concurrency).await?;
        let name = if sync_always {
            "sync_interval: always"
        } else {
            "nats-server default (2 min)"
        };
        println!("{name:<28} {rate:>8.0} accepted requests/s");
        rates.push(rate);
    }
    println!("always / default: {:.2}x", rates[1] / rates[0]);
    Ok(())
}

async fn accepted_per_second(
    sync_always: bool,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let nats = NatsServer::start_syncing(sync_always)?;
    let client = nats.client().await;
    cauce_nats::apply(&jetstream::new(client.clone()), &Limits::default()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let config = GatewayConfig {
        rate_limit: None,
        max_backlog: u64::MAX,
        ..GatewayConfig::new()
    };
    let cancel = CancellationToken::new();
    let gateway = tokio::spawn(cauce_gateway::serve(
        config,
        client,
        listener,
        cancel.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let http = reqwest::Client::new();
    let slots = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut sent = Vec::with_capacity(requests);
    for i in 0..requests {
        let permit = slots.clone().acquire_owned().await?;
        let (http, url) = (http.clone(), format!("{base}/v1/tasks"));
        sent.push(tokio::spawn(async move {
            let body = serde_json::json!({"messages": [{"role": "user", "content": format!("question {i}")}]});
            let status = http.post(url).json(&body).send().await.map(|r| r.status());
            drop(permit);
            status
        }));
    }
    let mut accepted = 0;
    for request in sent {
        if request.await?.is_ok_and(|status| status.as_u16() == 202) {
            accepted += 1;
        }
    }
    let rate = accepted as f64 / started.elapsed().as_secs_f64();
    cancel.cancel();
    let _ = gateway.await;
    anyhow::ensure!(accepted == requests, "{accepted} of {requests} accepted");
    Ok(rate)
}
