//! A benchmark of the gateway's relay only (not a test, and not of the model): many
//! concurrent SSE streams on one gateway, with the workers replaced by a fast synthetic
//! event source that takes the real questions off `QUESTIONS` and publishes real
//! `delta` / `done` events on a real nats-server.
//!
//! ```text
//! cargo run --release -p cauce-gateway --example relay_bench -- [streams] [deltas per stream]
//! ```
//!
//! The gateway runs in a child process (this program started again with `serve`), so
//! that its memory is its own: "memory per stream" is the growth of the gateway's RSS
//! from idle to holding every stream open, divided by the number of streams. The rate
//! is the deltas every client received, divided by the time from the first delta
//! published to the last `[DONE]` read. The load, the synthetic source, nats-server
//! and the gateway share the machine's cores, so the rate is a lower bound.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::PullConsumer};
use cauce_gateway::GatewayConfig;
use cauce_nats::testkit::NatsServer;
use cauce_nats::wire::{self, ChatRequest, Event, EventBody, FinishReason, Timings, Usage};
use cauce_nats::{GatewayId, Limits, names};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return serve(&args[2]).await;
    }
    let streams: usize = args.get(1).map_or(Ok(1000), |s| s.parse())?;
    let deltas: u64 = args.get(2).map_or(Ok(100), |s| s.parse())?;

    let nats = NatsServer::start()?;
    let client = nats.client().await;
    let js = jetstream::new(client.clone());
    cauce_nats::apply(&js, &Limits::default()).await?;

    let mut gateway = Command::new(std::env::current_exe()?)
        .args(["serve", &nats.url()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let gateway_pid = gateway.id();
    let mut lines = BufReader::new(gateway.stdout.take().unwrap()).lines();
    let base = lines.next().expect("the gateway's address")?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(streams)
        .build()?;
    let consumer: PullConsumer = js
        .get_stream(names::QUESTIONS)
        .await?
        .get_consumer(names::RETRIEVAL_CONSUMER)
        .await
        .map_err(|err| anyhow::anyhow!("{err}"))?;

    // warm up with one stream, then take the idle memory
    let warm = open_streams(&http, &base, 1);
    let requests = take_questions(&consumer, 1).await?;
    publish_all(&client, &requests, 2).await?;
    for task in warm.tasks {
        task.await??;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_kb = rss_kb(gateway_pid)?;

    // every stream open and waiting for its first delta
    let load = open_streams(&http, &base, streams);
    let requests = take_questions(&consumer, streams).await?;
    while load.opened.load(Ordering::Relaxed) < streams as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let open_kb = rss_kb(gateway_pid)?;

    let start = Instant::now();
    publish_all(&client, &requests, deltas).await?;
    let mut received = 0;
    for task in load.tasks {
        received += task.await??;
    }
    let elapsed = start.elapsed();

    drop(gateway.stdin.take()); // the gateway stops when its stdin closes
    gateway.wait()?;
    let per_stream_kb = open_kb.saturating_sub(idle_kb) as f64 / streams as f64;
    println!("relay benchmark (synthetic event source; no retrieval, no model)");
    println!("streams open at once:       {streams}");
    println!("deltas per stream:          {deltas}");
    println!(
        "gateway RSS idle / open:    {:.1} MiB / {:.1} MiB",
        idle_kb as f64 / 1024.0,
        open_kb as f64 / 1024.0
    );
    println!("gateway memory per stream:  {per_stream_kb:.1} KiB");
    println!("deltas relayed:             {received} in {elapsed:.2?}");
    println!(
        "deltas relayed per second:  {:.0}",
        received as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// The gateway alone, in this child process, until stdin closes.
async fn serve(nats_url: &str) -> anyhow::Result<()> {
    let config = GatewayConfig {
        id: GatewayId::parse("gw-bench")?,
        rate_limit: None,
        max_in_flight: 100_000,
        max_backlog: 1_000_000,
        ..GatewayConfig::new()
    };
    let client = async_nats::connect(nats_url).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("http://{}", listener.local_addr()?);
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().lines().count();
        stop.cancel();
    });
    cauce_gateway::serve(config, client, listener, cancel).await?;
    Ok(())
}

struct Load {
    opened: Arc<AtomicU64>,
    /// Each stream's task, answering the number of content deltas it read.
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<u64>>>,
}

fn open_streams(http: &reqwest::Client, base: &str, streams: usize) -> Load {
    let opened = Arc::new(AtomicU64::new(0));
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": "relay benchmark"}],
        "stream": true,
        "cauce": {"retrieval": false},
    });
    let tasks = (0..streams)
        .map(|_| {
            let request = http.post(format!("{base}/v1/chat/completions")).json(&body);
            let opened = opened.clone();
            tokio::spawn(async move {
                let mut response = request.send().await?.error_for_status()?;
                opened.fetch_add(1, Ordering::Relaxed);
                let mut deltas = 0;
                let mut tail = Vec::new();
                while let Some(bytes) = response.chunk().await? {
                    tail.extend_from_slice(&bytes);
                    // count whole events only; keep a partial one for the next chunk
                    let end = tail
                        .windows(2)
                        .rposition(|w| w == b"\n\n")
                        .map_or(0, |i| i + 2);
                    let events = std::str::from_utf8(&tail[..end])?;
                    deltas += events.matches("\"delta\":{\"content\"").count() as u64;
                    let done = events.contains("data: [DONE]");
                    tail.drain(..end);
                    if done {
                        break;
                    }
                }
                Ok(deltas)
            })
        })
        .collect();
    Load { opened, tasks }
}

/// Takes `count` questions off `QUESTIONS`, as a retrieval worker would.
async fn take_questions(consumer: &PullConsumer, count: usize) -> anyhow::Result<Vec<ChatRequest>> {
    let mut requests = Vec::with_capacity(count);
    let mut messages = consumer.messages().await?;
    while requests.len() < count {
        let message = messages.next().await.expect("questions")?;
        requests.push(wire::decode(&message.payload)?);
        message
            .ack()
            .await
            .map_err(|err| anyhow::anyhow!("{err}"))?;
    }
    Ok(requests)
}

/// `deltas` delta events then `done` for every request, round by round, from a few
/// publishing tasks.
async fn publish_all(
    client: &async_nats::Client,
    requests: &[ChatRequest],
    deltas: u64,
) -> anyhow::Result<()> {
    const PUBLISHERS: usize = 4;
    let chunk = requests.len().div_ceil(PUBLISHERS);
    let tasks: Vec<_> = requests
        .chunks(chunk)
        .map(|part| {
            let client = client.clone();
            let part = part.to_vec();
            tokio::spawn(async move {
                for seq in 0..=deltas {
                    for request in &part {
                        let body = if seq < deltas {
                            EventBody::Delta {
                                text: " token".into(),
                                at: seq * 6,
                            }
                        } else {
                            EventBody::Done {
                                finish_reason: FinishReason::Stop,
                                usage: Usage {
                                    prompt_tokens: 2,
                                    completion_tokens: deltas as u32,
                                    cached_tokens: 0,
                                },
                                timings: Timings::default(),
                                cached: false,
                                text_bytes: deltas * 6,
                            }
                        };
                        let event = Event {
                            request_id: request.id.clone(),
                            attempt: 1,
                            seq,
                            body,
                        };
                        client
                            .publish(
                                names::events_subject(&request.gateway, &request.id),
                                wire::encode(&event)?,
                            )
                            .await?;
                    }
                }
                client.flush().await?;
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}
