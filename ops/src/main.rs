//! `cauce`: the command line of the cauce service. `cauce up` runs the whole service in
//! one process; later subcommands run each component alone (`retrieval`, `inference`,
//! `gateway`) and the operator tools (`ingest`, `replay`, `bench`, `status`).
//!
//! This crate owns configuration (clap, every flag also an environment variable),
//! logging, process lifecycle and signals. It holds no pipeline logic of its own: it
//! wires the component crates together.

mod cli;
mod local_nats;
mod logging;
mod up;

use clap::{Parser, Subcommand};

/// A retrieval-augmented chat service built on NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "cauce", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the service: find or start nats-server, set up streams and buckets.
    Up(up::UpArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up::run(args).await,
        }
    })
}
