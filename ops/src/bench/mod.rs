//! `cauce bench`: load an OpenAI-compatible endpoint (cauce's gateway, or llama.cpp's
//! `llama-server` for comparison) with N concurrent simulated users over SSE, or drive
//! one inference worker straight through NATS (`--worker`), and report time to first
//! token, inter-token latency, end-to-end latency, requests/min, aggregate tokens/s and
//! errors by kind, as a table, JSON (`--out`) and a self-contained HTML report
//! (`--html`). With `--compare other.json` every figure is also given as a ratio to that
//! baseline run, and the report draws both side by side.
//!
//! One file per concern: [`prompts`] (what is asked), [`load`] (the users), [`sse`]
//! (one HTTP request), [`worker`] (one NATS job), [`stats`] and [`run`] (the figures),
//! [`table`], [`batched`] (llama-batched-bench's output), [`svg`] and [`html`].

mod batched;
mod cauce_prompts;
mod html;
mod load;
mod prompts;
mod run;
mod sse;
mod stats;
mod svg;
mod table;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use cauce_nats::{ModelName, connect};
use clap::{Args, Subcommand};

use crate::cli::NatsArgs;
use load::Stop;
use run::{Level, Run};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Print and render a run saved with --out, against a baseline run if given.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// A run written by `cauce bench --out`
    run: PathBuf,
    #[command(flatten)]
    output: OutputArgs,
}

/// What is written, and what the run is compared with.
#[derive(Debug, Args)]
struct OutputArgs {
    /// Write the run as JSON here
    #[arg(long, env = "CAUCE_BENCH_OUT")]
    out: Option<PathBuf>,
    /// Write the HTML report here
    #[arg(long, env = "CAUCE_BENCH_HTML")]
    html: Option<PathBuf>,
    /// Also write each chart of the report as an SVG file into this folder
    #[arg(long, env = "CAUCE_BENCH_SVG_DIR")]
    svg_dir: Option<PathBuf>,
    /// A baseline run (JSON from --out): ratios against it, charts side by side
    #[arg(long, env = "CAUCE_BENCH_COMPARE")]
    compare: Option<PathBuf>,
    /// llama-batched-bench `--output-format jsonl` output to set a --worker run against
    #[arg(long, env = "CAUCE_BENCH_BATCHED_BASELINE")]
    batched_baseline: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Base URL of the OpenAI-compatible endpoint (without /v1)
    #[arg(long, env = "CAUCE_BENCH_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Drive one inference worker through NATS instead (prompt jobs on
    /// cauce.prompts.<model>, events on the reply subjects)
    #[arg(long, env = "CAUCE_BENCH_WORKER")]
    worker: bool,
    /// Concurrent users, one level after another: 1,8,32
    #[arg(long, env = "CAUCE_BENCH_USERS", default_value = "1,8,32", value_parser = load::parse_users_arg)]
    users: UserLevels,
    /// Requests per level, at least one per user [default: 4 per user, at least 8; one
    /// per user with --worker]
    #[arg(long, env = "CAUCE_BENCH_REQUESTS", conflicts_with = "duration")]
    requests: Option<u64>,
    /// Run each level this long instead of a number of requests (e.g. 60s)
    #[arg(long, env = "CAUCE_BENCH_DURATION", value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Most tokens per answer
    #[arg(long, env = "CAUCE_BENCH_MAX_TOKENS", default_value_t = 128)]
    max_tokens: u32,
    /// Sampling temperature; each request gets its own seed
    #[arg(long, env = "CAUCE_BENCH_TEMPERATURE", default_value_t = 0.7)]
    temperature: f32,
    /// Model to ask for [default: the endpoint's first model; cauce's default with --worker]
    #[arg(long, env = "CAUCE_BENCH_MODEL")]
    model: Option<String>,
    /// Ask cauce to answer without retrieval (sent only when the target is cauce)
    #[arg(long, env = "CAUCE_BENCH_NO_RETRIEVAL")]
    no_retrieval: bool,
    /// Prompts, one per line [default: built-in questions about the bundled docs];
    /// `ops/bench/class-questions.txt` is the class workload (20 topics, 3 wordings each)
    #[arg(long, env = "CAUCE_BENCH_PROMPTS")]
    prompts: Option<PathBuf>,
    /// Ask the prompts in an order shuffled with this seed (the same for every server)
    #[arg(long, env = "CAUCE_BENCH_SHUFFLE_SEED")]
    shuffle_seed: Option<u64>,
    /// Send each prompt with the system message a cauce gateway at this URL would build
    /// for it (its /v1/search passages in cauce's prompt layout), for a server without
    /// retrieval such as llama-server to decode the same prompts as cauce
    #[arg(long, env = "CAUCE_BENCH_PROMPTS_FROM")]
    prompts_from: Option<String>,
    /// With --prompts-from: the GGUF file whose tokens count how much of the prompts an
    /// exact prefix cache could serve [default: count characters]
    #[arg(long, env = "CAUCE_BENCH_TOKENIZER")]
    tokenizer: Option<PathBuf>,
    /// A system message sent before every prompt (HTTP targets), e.g. the one a
    /// server's chat template would add, so that two servers decode the same prompt
    #[arg(long, env = "CAUCE_BENCH_SYSTEM")]
    system: Option<String>,
    /// Requests sent one at a time before the first level, not counted
    #[arg(long, env = "CAUCE_BENCH_WARMUP", default_value_t = 1)]
    warmup: u64,
    /// Give up on one request after this long
    #[arg(long, env = "CAUCE_BENCH_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Name of the run in tables and charts [default: from the target]
    #[arg(long, env = "CAUCE_BENCH_LABEL")]
    label: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    nats: NatsArgs,
}

/// User levels as given on the command line.
#[derive(Clone, Debug)]
pub struct UserLevels(pub Vec<u32>);

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        Some(BenchCommand::Report(report)) => {
            let run = Run::read(&report.run)?;
            finish(&run, &report.output)
        }
        None => {
            let run = if args.load.worker {
                run_worker(&args.load).await?
            } else {
                run_http(&args.load).await?
            };
            finish(&run, &args.load.output)
        }
    }
}

fn finish(run: &Run, output: &OutputArgs) -> anyhow::Result<()> {
    let baseline = output.compare.as_deref().map(Run::read).transpose()?;
    print!("{}", table::render(run, baseline.as_ref()));
    if let Some(path) = &output.batched_baseline {
        print!("{}", batched::render(run, &batched::read(path)?));
    }
    if let Some(path) = &output.out {
        run.write(path)?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &output.html {
        std::fs::write(path, html::render(run, baseline.as_ref()))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(dir) = &output.svg_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, svg) in html::charts(run, baseline.as_ref()) {
            let path = dir.join(format!("{name}.svg"));
            std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
        }
        println!("wrote the charts into {}", dir.display());
    }
    Ok(())
}

fn prompt_set(args: &LoadArgs) -> anyhow::Result<Arc<Vec<String>>> {
    let set = match &args.prompts {
        Some(path) => prompts::from_file(path)?,
        None => prompts::built_in(),
    };
    Ok(Arc::new(match args.shuffle_seed {
        Some(seed) => prompts::shuffled(set, seed),
        None => set,
    }))
}

fn stop_for(args: &LoadArgs, users: u32, default_requests: u64) -> Stop {
    match (args.requests, args.duration) {
        (_, Some(duration)) => Stop::Duration(duration),
        // every user sends at least one request, or the level is not the load it says
        (Some(requests), None) => Stop::Requests(requests.max(u64::from(users))),
        (None, None) => Stop::Requests(default_requests.max(u64::from(users))),
    }
}

/// A seed base that differs from run to run, so no answer comes from a cache.
fn seed_base() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64 % 1_000_000_007)
}

fn level(users: u32, samples: Vec<run::Sample>) -> Level {
    let summary = stats::summarize(users, &samples);
    eprintln!(
        "bench: {users} users: {} ok, {} failed, {:.1} tokens/s, ttft p50 {:.0} ms, e2e p50 {:.0} ms",
        summary.requests_ok,
        summary.errors.values().sum::<u64>(),
        summary.tokens_per_s,
        summary.ttft_ms.p50,
        summary.e2e_ms.p50
    );
    Level {
        throughput_per_s: stats::throughput_per_second(&samples),
        summary,
        samples,
    }
}

fn started_at() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

async fn run_http(args: &LoadArgs) -> anyhow::Result<Run> {
    let base_url = args.url.trim_end_matches('/').to_string();
    // a new connection per request: a server that closes idle keep-alive connections
    // (llama-server does) would otherwise fail requests sent on one it just closed
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()?;
    let discovered = sse::discover(&client, &base_url, Duration::from_secs(30)).await?;
    let model = args
        .model
        .clone()
        .or(discovered.first_model)
        .unwrap_or_else(|| ModelName::DEFAULT.to_string());
    let prompts = prompt_set(args)?;
    let jobs = match &args.prompts_from {
        Some(url) => {
            let url = url.trim_end_matches('/');
            eprintln!("bench: building each prompt's passages from {url}");
            Some(cauce_prompts::final_jobs(&client, url, &prompts).await?)
        }
        None => None,
    };
    let prefix_ceiling = match &jobs {
        Some(jobs) => Some(cauce_prompts::prefix_ceiling(
            &prompts,
            jobs,
            args.tokenizer.as_deref(),
        )?),
        None => None,
    };
    let systems = (jobs.as_ref()).map(|jobs| Arc::new(cauce_prompts::system_messages(jobs)));
    // the passages travel in the prompt: cauce must not retrieve again
    let no_retrieval = args.no_retrieval || systems.is_some();
    let target = Arc::new(sse::HttpTarget {
        client,
        base_url: base_url.clone(),
        model: model.clone(),
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        system: args.system.clone(),
        systems,
        seed_base: seed_base(),
        cauce_retrieval: (discovered.is_cauce && no_retrieval).then_some(false),
        timeout: args.timeout,
    });
    let label = args.label.clone().unwrap_or_else(|| {
        if discovered.is_cauce {
            "cauce".into()
        } else {
            base_url.clone()
        }
    });
    eprintln!(
        "bench: {label} at {base_url}, model {model}, cauce: {}",
        discovered.is_cauce
    );
    for n in 0..args.warmup {
        let sample = target
            .send(&prompts[0], 999_000_000 + n, std::time::Instant::now())
            .await;
        if let Some(kind) = sample.error {
            bail!("the warm-up request failed ({kind}): is {base_url} serving {model}?");
        }
    }
    let mut run = Run {
        label,
        mode: "http".into(),
        target: base_url,
        cauce: discovered.is_cauce,
        retrieval: discovered.is_cauce && !no_retrieval,
        model,
        max_tokens: args.max_tokens,
        started_at: started_at(),
        prefix_ceiling,
        levels: Vec::new(),
    };
    for (index, &users) in args.users.0.iter().enumerate() {
        let stop = stop_for(args, users, (4 * u64::from(users)).max(8));
        let target = target.clone();
        let prompts = prompts.clone();
        // request numbers seed the sampler: unique across levels, so none is a cache hit
        let first_number = index as u64 * 1_000_000;
        let samples = load::run_level(users, stop, move |number, started| {
            let target = target.clone();
            let prompt = prompts[number as usize % prompts.len()].clone();
            async move { target.send(&prompt, first_number + number, started).await }
        })
        .await;
        run.levels.push(level(users, samples));
    }
    Ok(run)
}

async fn run_worker(args: &LoadArgs) -> anyhow::Result<Run> {
    let model = match &args.model {
        Some(name) => ModelName::parse(name.as_str())?,
        None => ModelName::default_model(),
    };
    let client = connect(
        &args
            .nats
            .connect_options(cauce_nats::permissions::Role::Operator, "cauce-bench")?,
    )
    .await?;
    let mut target = worker::WorkerTarget::new(client.clone(), model.clone())?;
    target.max_tokens = args.max_tokens;
    target.temperature = args.temperature;
    target.seed_base = seed_base();
    target.timeout = args.timeout;
    let target = Arc::new(target);
    let prompts = prompt_set(args)?;
    let base = seed_base();
    eprintln!(
        "bench: worker of {model} through {}",
        args.nats.url_for_logs()
    );
    for n in 0..args.warmup {
        let prompt = prompts::worker_prompt(base + n, &prompts[0]);
        let sample = target.send(prompt, n, std::time::Instant::now()).await;
        if let Some(kind) = sample.error {
            bail!("the warm-up job failed ({kind}): is a worker of {model} running?");
        }
    }
    let mut run = Run {
        label: args.label.clone().unwrap_or_else(|| "cauce worker".into()),
        mode: "nats".into(),
        target: args.nats.nats_url.clone(),
        cauce: true,
        retrieval: false,
        model: model.to_string(),
        max_tokens: args.max_tokens,
        started_at: started_at(),
        prefix_ceiling: None,
        levels: Vec::new(),
    };
    for &users in &args.users.0 {
        let stop = stop_for(args, users, u64::from(users));
        let target = target.clone();
        let prompts = prompts.clone();
        let samples = load::run_level(users, stop, move |number, started| {
            let target = target.clone();
            let question = &prompts[number as usize % prompts.len()];
            let prompt = prompts::worker_prompt(base + 1000 + number, question);
            async move { target.send(prompt, number, started).await }
        })
        .await;
        let mut level = level(users, samples);
        worker::add_phase_rates(&mut level.summary, &level.samples);
        run.levels.push(level);
    }
    client.drain().await.ok();
    Ok(run)
}
