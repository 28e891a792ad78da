//! `cauce chaos`: the promise that every accepted request ends, and its client sees
//! how, checked from outside with the real processes.
//!
//! A run starts a `nats-server` with a file store, sets the NATS objects up (the
//! service's ack waits, 1 s, by default), ingests the bundled corpus, and starts one gateway, one
//! retrieval worker and two inference workers as child processes. It then sends
//! requests at a steady pace for `--duration`, every other one streamed and the rest
//! through the tasks API, while it breaks things:
//! - `workers`: one inference worker is SIGKILLed and started again every 5 s, the
//!   retrieval worker every 15 s;
//! - `nats`: the nats-server is SIGKILLed and started again twice (on the same store);
//! - `both`: all of that;
//! - `cluster`: on a 3-node NATS cluster with replicas 3, one node is SIGKILLed halfway
//!   through and stays down;
//! - `failover`: no steady load; the worker holding a streamed answer is killed
//!   `--kills` times, and the client's wait is measured ([`stall`]).
//!
//! After the load it waits (`--settle`) for every task to end, and reports accepted /
//! done / failed / lost and how every stream ended (`[DONE]`, an error event, or cut).
//! It exits non-zero when a request was lost, a stream was cut, or a poisoned request
//! (every `--poison-every`th: a prompt longer than the context) did not end failed with
//! its reason. Other failures (a job whose every delivery died with its worker) are
//! counted, not fatal.

mod load;
mod procs;
mod stall;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cauce_ingest::{IngestOptions, ProgressMode};
use cauce_nats::async_nats::jetstream;
use cauce_nats::{ConnectOptions, Limits, connect};
use clap::{Args, ValueEnum};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use cauce_inference::worker::{LOG_CONTINUED, LOG_TAKEN_OVER};

use crate::cli::HomeArgs;
use load::{StreamEnd, TaskEnd};
use procs::{Component, Nats, free_port};

/// What a run breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    Workers,
    Nats,
    Both,
    /// A 3-node cluster (replicas 3) loses one node, for good, halfway through.
    Cluster,
    /// The worker holding a streamed answer is killed, `--kills` times: how long the
    /// client waits, and whether it gets one answer (see `stall`).
    Failover,
}

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// What fails during the run
    #[arg(long, value_enum, default_value = "workers")]
    scenario: Scenario,
    /// How long the load (and the breaking) goes on
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Requests sent over the run at a steady pace, every other one streamed
    #[arg(long, default_value_t = 120)]
    requests: usize,
    /// Tokens per answer
    #[arg(long, default_value_t = 24)]
    max_tokens: u32,
    /// Every Nth request is a poison one (a prompt longer than the context), which
    /// must end failed with its reason; 0 sends none
    #[arg(long, default_value_t = 10)]
    poison_every: usize,
    /// Ack wait of both work consumers [default: the service's, 1s]
    #[arg(long, value_parser = humantime::parse_duration)]
    ack_wait: Option<Duration>,
    /// Interval between two SIGKILLs of an inference worker
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    inference_kill_every: Duration,
    /// Interval between two SIGKILLs of the retrieval worker
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    retrieval_kill_every: Duration,
    /// After the load, how long accepted requests have to end before they count as lost
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Sequence slots of each inference worker
    #[arg(long, default_value_t = 4)]
    slots: u32,
    /// Kills of the `failover` scenario
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Write the report as JSON to this file too
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    home: HomeArgs,
}

/// What a run saw.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub scenario: Option<Scenario>,
    pub duration_s: f64,
    pub accepted: usize,
    pub refused: usize,
    pub done: usize,
    pub failed: usize,
    pub lost: usize,
    /// Poison requests sent, and how many of them ended failed with their reason.
    pub poisoned: usize,
    pub poisoned_failed_with_reason: usize,
    pub streams_done: usize,
    pub streams_error: usize,
    pub streams_cut: usize,
    pub inference_kills: u32,
    pub retrieval_kills: u32,
    pub nats_restarts: u32,
    pub nats_nodes_killed: u32,
    /// Jobs a worker continued from the answer an earlier attempt had stored, and jobs
    /// live workers gave up because another attempt took them over (a spurious
    /// timeout), counted in the workers' logs.
    pub jobs_continued: usize,
    pub jobs_taken_over: usize,
    /// `GET /readyz` probed every 200 ms through the run: how many, and how long they
    /// took (whatever they answered).
    pub readyz_probes: usize,
    pub readyz_p50_ms: f64,
    pub readyz_p99_ms: f64,
    /// Every request's end, in the order they were sent.
    pub streams: Vec<StreamEnd>,
    pub tasks: Vec<TaskEnd>,
}

impl Report {
    fn add_stream(&mut self, end: StreamEnd) {
        if matches!(&end, StreamEnd::Error { code } if code == load::POISON_CODE) {
            self.poisoned_failed_with_reason += 1;
        }
        match &end {
            StreamEnd::Done => {
                self.done += 1;
                self.streams_done += 1;
            }
            StreamEnd::Error { .. } => {
                self.failed += 1;
                self.streams_error += 1;
            }
            StreamEnd::Cut { .. } => {
                self.lost += 1;
                self.streams_cut += 1;
            }
            StreamEnd::Refused { .. } => self.refused += 1,
        }
        if !matches!(end, StreamEnd::Refused { .. }) {
            self.accepted += 1;
        }
        self.streams.push(end);
    }

    fn add_task(&mut self, end: TaskEnd) {
        if matches!(&end, TaskEnd::Failed { code } if code == load::POISON_CODE) {
            self.poisoned_failed_with_reason += 1;
        }
        match &end {
            TaskEnd::Done => self.done += 1,
            TaskEnd::Failed { .. } | TaskEnd::Cancelled => self.failed += 1,
            TaskEnd::Lost { .. } => self.lost += 1,
            TaskEnd::Refused { .. } => self.refused += 1,
        }
        if !matches!(end, TaskEnd::Refused { .. }) {
            self.accepted += 1;
        }
        self.tasks.push(end);
    }

    fn render(&self) -> String {
        format!(
            "chaos {:?} for {:.0} s: {} kills of inference workers, {} of retrieval, {} nats-server restarts, {} cluster nodes killed\n\
             requests  accepted {}  refused {}  done {}  failed {}  lost {}  (poisoned {}, of which failed with their reason {})\n\
             streams   [DONE] {}  error event {}  cut {}\n\
             jobs      continued {}  taken from a live worker {}\n\
             /readyz   {} probes, p50 {:.1} ms, p99 {:.1} ms",
            self.scenario.unwrap_or(Scenario::Workers),
            self.duration_s,
            self.inference_kills,
            self.retrieval_kills,
            self.nats_restarts,
            self.nats_nodes_killed,
            self.accepted,
            self.refused,
            self.done,
            self.failed,
            self.lost,
            self.poisoned,
            self.poisoned_failed_with_reason,
            self.streams_done,
            self.streams_error,
            self.streams_cut,
            self.jobs_continued,
            self.jobs_taken_over,
            self.readyz_probes,
            self.readyz_p50_ms,
            self.readyz_p99_ms,
        )
    }
}

/// The service under test: the gateway stays up, the other parts are broken.
struct Service {
    gateway: Component,
    parts: Parts,
    base: String,
    nats_url: String,
    /// Where the logs and indexes go.
    dir: PathBuf,
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("cauce-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let service = start(&args, &dir).await?;
    if args.scenario == Scenario::Failover {
        return failover(&args, service).await;
    }
    let Service {
        mut gateway,
        parts,
        base,
        ..
    } = service;
    let started = Instant::now();
    let stop = CancellationToken::new();
    let breaker = tokio::spawn(break_things(
        args.scenario,
        timing(&args),
        parts,
        stop.clone(),
    ));
    let prober = tokio::spawn(probe_readiness(base.clone(), stop.clone()));
    let report = drive_load(&args, &base).await;
    stop.cancel();
    let probes = prober.await.context("the probing task")?;
    let parts = breaker.await.context("the breaking task")?;
    let mut report = report;
    report.scenario = Some(args.scenario);
    report.duration_s = started.elapsed().as_secs_f64();
    report.inference_kills = parts.inference.iter().map(|c| c.kills).sum();
    report.retrieval_kills = parts.retrieval.kills;
    report.nats_restarts = parts.nats.restarts;
    report.nats_nodes_killed = parts.nats.nodes_killed;
    report.jobs_continued = procs::count_in_logs(&dir, "inference", LOG_CONTINUED);
    report.jobs_taken_over = procs::count_in_logs(&dir, "inference", LOG_TAKEN_OVER);
    report.readyz_probes = probes.len();
    report.readyz_p50_ms = percentile(&probes, 0.50);
    report.readyz_p99_ms = percentile(&probes, 0.99);
    println!("{}", report.render());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    gateway.stop();
    drop(parts);
    if report.lost == 0 && report.accepted > 0 {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if report.lost > 0 {
        anyhow::bail!("{} accepted requests were lost", report.lost);
    }
    if report.poisoned_failed_with_reason < report.poisoned {
        anyhow::bail!(
            "only {} of {} poisoned requests ended failed with their reason",
            report.poisoned_failed_with_reason,
            report.poisoned
        );
    }
    if report.accepted == 0 {
        anyhow::bail!("no request was accepted; the logs are in {}", dir.display());
    }
    Ok(())
}

/// The `failover` scenario: rounds of kills mid-answer, then a frozen retrieval worker.
async fn failover(args: &ChaosArgs, mut service: Service) -> anyhow::Result<()> {
    let url = service.nats_url.clone();
    let report = stall::run(&mut service, &url, args.kills).await?;
    println!("{}", report.render());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    let dir = service.dir.clone();
    service.gateway.stop();
    drop(service);
    if report.seams > 0 || report.streams_done < args.kills {
        anyhow::bail!(
            "{} answers differ from what was stored, {} of {} streams ended with [DONE]; the logs are in {}",
            report.seams,
            report.streams_done,
            args.kills,
            dir.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The pieces the breaking task owns while it runs.
struct Parts {
    nats: Nats,
    retrieval: Component,
    inference: Vec<Component>,
    /// `cauce retrieval …` without its index folder.
    retrieval_common: Vec<String>,
}

impl Parts {
    /// The arguments of a retrieval worker with its own index in `index`.
    fn retrieval_args(&self, index: &std::path::Path) -> Vec<String> {
        let mut args = self.retrieval_common.clone();
        args.extend(["--index-dir".into(), index.display().to_string()]);
        args
    }
}

/// When each thing breaks.
#[derive(Clone, Copy, Debug)]
struct Timing {
    duration: Duration,
    inference_every: Duration,
    retrieval_every: Duration,
}

fn timing(args: &ChaosArgs) -> Timing {
    Timing {
        duration: args.duration,
        inference_every: args.inference_kill_every,
        retrieval_every: args.retrieval_kill_every,
    }
}

/// Kills and restarts what the scenario says until `stop`; hands the parts back.
async fn break_things(
    scenario: Scenario,
    timing: Timing,
    mut parts: Parts,
    stop: CancellationToken,
) -> Parts {
    let workers = matches!(scenario, Scenario::Workers | Scenario::Both);
    let nats = matches!(scenario, Scenario::Nats | Scenario::Both);
    let mut node_killed = scenario != Scenario::Cluster;
    let start = Instant::now();
    let nats_at = [timing.duration / 3, timing.duration * 2 / 3];
    let (mut next_inference, mut next_retrieval) = (timing.inference_every, timing.retrieval_every);
    let mut nats_done = 0;
    let tick = Duration::from_millis(100);
    while !stop.is_cancelled() && start.elapsed() < timing.duration {
        let now = start.elapsed();
        if workers && now >= next_inference {
            let victim = (parts.inference.iter().map(|c| c.kills).sum::<u32>() as usize)
                % parts.inference.len().max(1);
            restart(&mut parts.inference[victim]);
            next_inference += timing.inference_every;
        }
        if workers && now >= next_retrieval {
            restart(&mut parts.retrieval);
            next_retrieval += timing.retrieval_every;
        }
        if !node_killed && now >= timing.duration / 2 {
            parts.nats.kill_a_node();
            node_killed = true;
        }
        if nats && nats_done < nats_at.len() && now >= nats_at[nats_done] {
            let down = Duration::from_secs(2);
            if let Err(err) = tokio::task::block_in_place(|| parts.nats.crash_and_restart(down)) {
                eprintln!("chaos: restarting nats-server failed: {err:#}");
            }
            nats_done += 1;
        }
        tokio::time::sleep(tick).await;
    }
    parts
}

fn restart(component: &mut Component) {
    component.kill();
    if let Err(err) = component.start() {
        eprintln!("chaos: {err:#}");
    }
}

/// Sends the requests at a steady pace, then waits for every one to end.
async fn drive_load(args: &ChaosArgs, base: &str) -> Report {
    let client = reqwest::Client::new();
    let pace = args.duration / args.requests.max(1) as u32;
    let mut streams = Vec::new();
    let mut tasks = Vec::new();
    let mut report = Report::default();
    for index in 0..args.requests {
        let (client, base) = (client.clone(), base.to_string());
        let poisoned = args.poison_every > 0 && index % args.poison_every == args.poison_every - 1;
        // poison ones alternate too, whatever the parity of `--poison-every`
        let stream = if poisoned {
            (index / args.poison_every).is_multiple_of(2)
        } else {
            index % 2 == 0
        };
        let body = if poisoned {
            report.poisoned += 1;
            load::poison(index, stream)
        } else {
            load::body(index, args.max_tokens, stream)
        };
        if stream {
            streams.push(tokio::spawn(async move {
                load::stream_one(&client, &base, body).await
            }));
        } else {
            tasks.push(tokio::spawn(async move {
                load::submit_task(&client, &base, body).await
            }));
        }
        tokio::time::sleep(pace).await;
    }
    let deadline = Instant::now() + args.settle;
    for task in tasks {
        let end = match task.await {
            Ok(Ok(id)) => load::settle_task(&client, base, &id, deadline).await,
            Ok(Err(refused)) => refused,
            Err(err) => TaskEnd::Lost {
                last_status: format!("client task: {err}"),
            },
        };
        report.add_task(end);
    }
    for stream in streams {
        let left = deadline.saturating_duration_since(Instant::now());
        let end = match tokio::time::timeout(left, stream).await {
            Ok(Ok(end)) => end,
            Ok(Err(err)) => StreamEnd::Cut {
                reason: format!("client task: {err}"),
            },
            Err(_) => StreamEnd::Cut {
                reason: "no end within the settle time".into(),
            },
        };
        report.add_stream(end);
    }
    report
}

/// Starts nats-server, sets up the objects, ingests the corpus, starts the components
/// and waits until the gateway is ready.
async fn start(args: &ChaosArgs, dir: &std::path::Path) -> anyhow::Result<Service> {
    let nats = tokio::task::block_in_place(|| match args.scenario {
        Scenario::Cluster => Nats::cluster(dir),
        _ => Nats::single(dir),
    })?;
    let url = nats.url();
    let client = connect(&ConnectOptions::new(&url, "cauce-chaos")).await?;
    let js = jetstream::new(client.clone());
    let limits = Limits {
        replicas: if nats.is_cluster() { 3 } else { 1 },
        retrieval_ack_wait: args
            .ack_wait
            .unwrap_or(cauce_nats::ensure::DEFAULT_ACK_WAIT),
        inference_ack_wait: args
            .ack_wait
            .unwrap_or(cauce_nats::ensure::DEFAULT_ACK_WAIT),
        ..Limits::default()
    };
    apply_when_elected(&js, &limits).await?;
    let docs = crate::up::write_bundled_docs(dir)?;
    let options = IngestOptions {
        paths: vec![docs],
        id_prefix: Some("guide".into()),
        progress: ProgressMode::Quiet,
        ..IngestOptions::default()
    };
    cauce_ingest::run(options, &js, &CancellationToken::new()).await?;
    client.drain().await.ok();

    let port = free_port()?;
    let home = args.home.dir()?;
    let common = |extra: &[&str]| -> Vec<String> {
        extra
            .iter()
            .map(|s| s.to_string())
            .chain(["--nats-url".to_string(), url.clone()])
            .collect()
    };
    let gateway_args = common(&[
        "gateway",
        "--gateway-id",
        "chaos",
        "--port",
        &port.to_string(),
        "--rate-limit",
        "0",
        "--publish-timeout",
        "30s",
    ]);
    let retrieval_common = common(&["retrieval"]);
    let slots = args.slots.to_string();
    let home_arg = home.to_str().unwrap_or(".").to_string();
    let inference_args = common(&[
        "inference",
        "--home",
        &home_arg,
        "--slots",
        &slots,
        "--ctx-size",
        "1024",
    ]);
    let mut parts = Parts {
        nats,
        retrieval: Component::new("retrieval", Vec::new(), dir),
        inference: (0..2)
            .map(|i| Component::new(&format!("inference-{i}"), inference_args.clone(), dir))
            .collect(),
        retrieval_common,
    };
    parts.retrieval = Component::new("retrieval", parts.retrieval_args(&dir.join("index")), dir);
    let mut service = Service {
        gateway: Component::new("gateway", gateway_args, dir),
        parts,
        base: format!("http://127.0.0.1:{port}"),
        nats_url: url.clone(),
        dir: dir.to_path_buf(),
    };
    service.gateway.start()?;
    service.parts.retrieval.start()?;
    for worker in &mut service.parts.inference {
        worker.start()?;
    }
    wait_ready(&service.base, Duration::from_secs(180)).await?;
    Ok(service)
}

/// Times `GET /readyz` every 200 ms until `stop`; the latencies in milliseconds.
async fn probe_readiness(base: String, stop: CancellationToken) -> Vec<f64> {
    let client = reqwest::Client::new();
    let mut latencies = Vec::new();
    while !stop.is_cancelled() {
        let started = Instant::now();
        let probe = client
            .get(format!("{base}/readyz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if probe.is_ok() {
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    latencies
}

fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0.0;
    };
    sorted[((last as f64) * q).round() as usize]
}

/// Applies the limits, retrying while a cluster elects its JetStream meta leader.
async fn apply_when_elected(js: &jetstream::Context, limits: &Limits) -> anyhow::Result<()> {
    let mut last = None;
    for _ in 0..120 {
        match cauce_nats::apply(js, limits).await {
            Ok(_) => return Ok(()),
            Err(err) => last = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last.map_or_else(|| anyhow::anyhow!("apply never ran"), Into::into))
}

async fn wait_ready(base: &str, patience: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("the service was not ready within {} s", patience.as_secs())
}
