//! `cauce chaos --scenario failover`: how long a client waits when the worker that
//! holds its request dies, and whether it still gets one answer.
//!
//! Inference, `--kills` rounds: two other users keep both inference workers busy, a
//! streamed answer (temperature 1.0, 160 tokens) starts, and after 25 pieces of text the
//! worker its record names as owner is SIGKILLed (and started again for the next
//! round). The stall is the longest silence between two pieces of text after the kill;
//! a seam is an answer whose text differs from the stored result.
//!
//! Retrieval: a second retrieval worker is started, the first is frozen (SIGSTOP) with
//! its pull requests open, eight questions are sent one after the other, and the first
//! worker is SIGKILLed: the questions it held wait for their ack wait and go to the
//! second. The figure is each question's time to its sources.

use std::time::Duration;

use anyhow::Context;
use cauce_nats::async_nats::jetstream::{self, kv};
use cauce_nats::discovery;
use cauce_nats::names::{self, WorkerKind};
use cauce_nats::wire::StoredResult;
use cauce_nats::{ConnectOptions, RequestId, connect};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use cauce_inference::worker::LOG_TAKEN_OVER;

use super::procs::{Component, count_in_logs};
use super::{Service, percentile};

/// Pieces of text a stream shows before its worker is killed.
const BEFORE_KILL: usize = 25;
const STORY_TOKENS: u32 = 160;
/// Questions sent while a retrieval worker is frozen.
const RETRIEVAL_QUESTIONS: usize = 8;

/// What a failover run saw.
#[derive(Debug, Default, Serialize)]
pub struct StallReport {
    pub kills: usize,
    /// The longest silence after each kill, in milliseconds.
    pub stalls_ms: Vec<f64>,
    pub stall_p50_ms: f64,
    pub stall_max_ms: f64,
    /// Streams that ended with `[DONE]`, and answers that differ from the stored result.
    pub streams_done: usize,
    pub seams: usize,
    /// Jobs live workers gave up because another attempt took them over (a spurious
    /// timeout: the worker was alive but late with its progress acks).
    pub jobs_taken_over: usize,
    /// Time to sources of each question sent while a retrieval worker was frozen.
    pub retrieval_ms: Vec<f64>,
    pub retrieval_p50_ms: f64,
    pub retrieval_max_ms: f64,
}

impl StallReport {
    pub fn render(&self) -> String {
        format!(
            "failover: {} inference kills, stall after the kill p50 {:.0} ms, max {:.0} ms; \
             streams [DONE] {}, seams {}, jobs taken from live workers {}\n\
             retrieval: {} questions while a retrieval worker was frozen then killed, \
             time to sources p50 {:.0} ms, max {:.0} ms",
            self.kills,
            self.stall_p50_ms,
            self.stall_max_ms,
            self.streams_done,
            self.seams,
            self.jobs_taken_over,
            self.retrieval_ms.len(),
            self.retrieval_p50_ms,
            self.retrieval_max_ms,
        )
    }
}

fn story(index: usize, stream: bool) -> Value {
    json!({
        "stream": stream,
        "max_tokens": STORY_TOKENS,
        "temperature": 1.0,
        "messages": [{"role": "user", "content": format!("Tell me a long story about a lighthouse keeper and a storm ({index}).")}],
        "cauce": {"top_k": 1},
    })
}

/// Runs the rounds against the started service.
pub async fn run(
    service: &mut Service,
    nats_url: &str,
    kills: usize,
) -> anyhow::Result<StallReport> {
    let client = connect(&ConnectOptions::new(nats_url, "cauce-chaos-failover")).await?;
    let results = jetstream::new(client.clone())
        .get_key_value(names::RESULTS_BUCKET)
        .await
        .context("open the results bucket")?;
    let http = reqwest::Client::new();
    let mut report = StallReport::default();
    for round in 0..kills {
        wait_workers(&client, service.parts.inference.len()).await?;
        let others: Vec<_> = (0..2)
            .map(|i| {
                let (http, base) = (http.clone(), service.base.clone());
                let body = story(1000 + round * 2 + i, false);
                tokio::spawn(async move {
                    http.post(format!("{base}/v1/chat/completions"))
                        .json(&body)
                        .send()
                        .await
                })
            })
            .collect();
        let round_report = kill_mid_answer(service, &http, &results, round).await?;
        for other in others {
            let _ = other.await;
        }
        if let Some(stall) = round_report.stall_ms {
            report.stalls_ms.push(stall);
            report.kills += 1;
        }
        report.streams_done += usize::from(round_report.done);
        report.seams += usize::from(round_report.seam);
        eprintln!(
            "failover round {}: stall {:?} ms, done {}, seam {}",
            round + 1,
            round_report.stall_ms.map(|s| s.round()),
            round_report.done,
            round_report.seam
        );
    }
    report.jobs_taken_over = count_in_logs(&service.dir, "inference", LOG_TAKEN_OVER);
    report.stall_p50_ms = percentile(&report.stalls_ms, 0.5);
    report.stall_max_ms = report.stalls_ms.iter().copied().fold(0.0, f64::max);
    report.retrieval_ms = frozen_retrieval(service, &http).await?;
    report.retrieval_p50_ms = percentile(&report.retrieval_ms, 0.5);
    report.retrieval_max_ms = report.retrieval_ms.iter().copied().fold(0.0, f64::max);
    Ok(report)
}

/// What one round saw.
struct Round {
    stall_ms: Option<f64>,
    done: bool,
    seam: bool,
}

/// One streamed answer whose holder is killed after [`BEFORE_KILL`] pieces.
async fn kill_mid_answer(
    service: &mut Service,
    http: &reqwest::Client,
    results: &kv::Store,
    round: usize,
) -> anyhow::Result<Round> {
    let response = http
        .post(format!("{}/v1/chat/completions", service.base))
        .json(&story(round, true))
        .send()
        .await?;
    anyhow::ensure!(response.status().is_success(), "{}", response.status());
    let mut chunks = SseChunks::new(response);
    let mut id = None;
    let mut text = String::new();
    let mut pieces = 0;
    let mut killed: Option<usize> = None;
    let mut killed_at = None;
    let mut last_piece = Instant::now();
    let mut stall: Option<f64> = None;
    let mut done = false;
    while let Some(data) = chunks.next().await {
        if data == "[DONE]" {
            done = true;
            break;
        }
        let chunk: Value = serde_json::from_str(&data)?;
        if chunk.get("error").is_some() {
            eprintln!("failover round {}: {chunk}", round + 1);
            break;
        }
        id.get_or_insert_with(|| chunk["id"].as_str().unwrap_or_default().to_string());
        let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() else {
            continue;
        };
        if piece.is_empty() {
            continue;
        }
        let now = Instant::now();
        if killed.is_some() {
            let gap = (now - last_piece).as_secs_f64() * 1000.0;
            if stall.is_none_or(|s| gap > s) {
                let (before, after): (Instant, Instant) = (last_piece, now);
                let kill = killed_at.unwrap_or(before);
                eprintln!(
                    "failover round {}: {:.0} ms from the last piece to the kill, {:.0} ms from the kill to the next",
                    round + 1,
                    kill.saturating_duration_since(before).as_secs_f64() * 1000.0,
                    after.saturating_duration_since(kill).as_secs_f64() * 1000.0,
                );
                stall = Some(gap);
            }
        }
        last_piece = now;
        text.push_str(piece);
        pieces += 1;
        if pieces == BEFORE_KILL && killed.is_none() {
            let id = request_id(id.as_deref())?;
            killed = kill_holder(service, results, &id).await;
            killed_at = Some(Instant::now());
        }
    }
    if let Some(victim) = killed {
        service.parts.inference[victim].start()?;
    }
    let id = request_id(id.as_deref())?;
    let stored = read(results, &id).await;
    let seam = done && stored.is_none_or(|s| s.text != text);
    Ok(Round {
        stall_ms: stall.filter(|_| killed.is_some()),
        done,
        seam,
    })
}

fn request_id(chunk_id: Option<&str>) -> anyhow::Result<RequestId> {
    let id = chunk_id.unwrap_or_default().trim_start_matches("chatcmpl-");
    RequestId::parse(id).context("the stream's id")
}

async fn read(results: &kv::Store, id: &RequestId) -> Option<StoredResult> {
    let bytes = results.get(names::request_key(id)).await.ok()??;
    cauce_nats::wire::decode_compressed(&bytes).ok()
}

/// SIGKILLs the inference worker the record's owner (`host:pid#run`) names; its index.
async fn kill_holder(service: &mut Service, results: &kv::Store, id: &RequestId) -> Option<usize> {
    let owner = read(results, id).await?.owner;
    let pid: u32 = owner.split('#').next()?.rsplit(':').next()?.parse().ok()?;
    let victim = service
        .parts
        .inference
        .iter()
        .position(|c| c.pid() == Some(pid))?;
    service.parts.inference[victim].kill();
    Some(victim)
}

async fn wait_workers(client: &cauce_nats::async_nats::Client, count: usize) -> anyhow::Result<()> {
    for _ in 0..600 {
        let found = discovery::discover(client, WorkerKind::Inference, Duration::from_millis(300))
            .await?
            .len();
        if found >= count {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("{count} inference workers never announced themselves")
}

/// Questions sent while the retrieval worker is frozen with its pulls open, then
/// killed; each one's time to its sources, in milliseconds.
async fn frozen_retrieval(
    service: &mut Service,
    http: &reqwest::Client,
) -> anyhow::Result<Vec<f64>> {
    let mut second = Component::new(
        "retrieval-2",
        service.parts.retrieval_args(&service.dir.join("index-2")),
        &service.dir,
    );
    second.start()?;
    // the second worker's index follows DOCS before it answers
    tokio::time::sleep(Duration::from_secs(10)).await;
    service.parts.retrieval.freeze();
    let mut times = Vec::new();
    for index in 0..RETRIEVAL_QUESTIONS {
        let started = Instant::now();
        let mut body = story(5000 + index, true);
        body["max_tokens"] = json!(1);
        let response = http
            .post(format!("{}/v1/chat/completions", service.base))
            .json(&body)
            .send()
            .await?;
        let mut chunks = SseChunks::new(response);
        while let Some(data) = chunks.next().await {
            if data.contains("\"sources\"") || data == "[DONE]" {
                times.push(started.elapsed().as_secs_f64() * 1000.0);
                break;
            }
        }
        while chunks.next().await.is_some() {}
    }
    service.parts.retrieval.kill();
    service.parts.retrieval.start()?;
    second.kill();
    Ok(times)
}

/// The `data:` payloads of an SSE body, one at a time.
struct SseChunks {
    body: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: Vec<u8>,
}

impl SseChunks {
    fn new(response: reqwest::Response) -> Self {
        Self {
            body: response
                .bytes_stream()
                .map(|bytes| bytes.map(|b| b.to_vec()))
                .boxed(),
            buffer: Vec::new(),
        }
    }

    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8_lossy(&block);
                let data: Vec<&str> = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if !data.is_empty() {
                    return Some(data.join("\n"));
                }
                continue;
            }
            let bytes = self.body.next().await?.ok()?;
            self.buffer.extend_from_slice(&bytes);
        }
    }
}
