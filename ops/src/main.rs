//! `cauce`: the command line of the cauce service. `cauce up` runs the whole service,
//! one child process per component; the other subcommands run each component alone
//! (`retrieval`, `inference`, `gateway`, `ingest --follow`) and the operator tools
//! (`ingest`, `replay`, `bench`, `status`).
//!
//! This crate owns configuration (clap, every flag also an environment variable),
//! logging, process lifecycle and signals. It holds no pipeline logic of its own: it
//! wires the component crates together.

mod bench;
mod cache;
mod chaos;
mod cli;
mod credentials;
mod gateway;
mod inference;
mod ingest;
mod local_nats;
mod logging;
mod nats;
mod replay;
mod retrieval;
mod signals;
mod status;
mod up;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// A retrieval-augmented chat service built on NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "cauce", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the whole service: NATS (found or started), the bundled corpus, and one
    /// process each of the gateway (with the chat page), retrieval, inference and
    /// ingest, restarted when one dies.
    Up(Box<up::UpArgs>),
    /// Read Markdown, text, HTML, PDF, DOCX and EPUB files and publish them to the DOCS stream.
    Ingest(ingest::IngestArgs),
    /// Run one retrieval worker: follow DOCS into a local index, answer questions.
    Retrieval(retrieval::RetrievalArgs),
    /// Run one inference worker: a model pulling prompt jobs and streaming answers.
    Inference(inference::InferenceArgs),
    /// Run one HTTP gateway: the OpenAI-compatible API, the tasks API and the chat page.
    Gateway(Box<gateway::GatewayArgs>),
    /// One screen for an operator: NATS servers, streams, consumers, workers, gateways.
    Status(status::StatusArgs),
    /// Re-run recorded questions as new requests and compare the answers; list and
    /// replay dead letters.
    Replay(replay::ReplayArgs),
    /// Load an OpenAI-compatible endpoint (or one worker through NATS) with concurrent
    /// users and report latencies and throughput as a table, JSON and HTML.
    Bench(bench::BenchArgs),
    /// Inspect or clear the response cache.
    Cache(cache::CacheCommand),
    /// Run the real processes under load while killing workers or nats-server, and
    /// report whether every accepted request ended and how its client saw it end.
    Chaos(chaos::ChaosArgs),
    /// Convert one file from standard input to JSON (what the conversion sandbox runs,
    /// in a child process with limits)
    #[command(hide = true)]
    Convert(ingest::ConvertCommand),
    /// Create or change cauce's NATS streams, consumers and buckets (the one step that
    /// does), or show the limits they have.
    Nats(nats::NatsCommand),
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    let up_matches = matches.subcommand_matches("up").cloned();
    if let Command::Convert(args) = cli.command {
        // no runtime, no logging on stdout: the output is the converted file
        logging::init("warn");
        return ingest::convert(args);
    }
    let tool = matches!(
        cli.command,
        Command::Status(_) | Command::Replay(_) | Command::Nats(_)
    );
    logging::init(if tool { "warn" } else { "info" });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up::run(*args, &up_matches.unwrap_or_default()).await,
            Command::Cache(args) => cache::run(args).await,
            Command::Nats(args) => nats::run(args).await,
            Command::Chaos(args) => chaos::run(args).await,
            Command::Ingest(args) => ingest::run(args).await,
            Command::Retrieval(args) => retrieval::run(args).await,
            Command::Gateway(args) => gateway::run(*args).await,
            Command::Inference(args) => inference::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Replay(args) => replay::run(args).await,
            Command::Convert(_) => unreachable!("converted above"),
        }
    })
}
