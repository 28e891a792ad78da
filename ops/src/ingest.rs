//! `cauce ingest PATH…`: read Markdown, text, HTML, PDF, DOCX and EPUB files and bring the `DOCS` stream
//! up to date with them; prints a summary at the end. Ctrl-C or SIGTERM stops it
//! between documents (what was published stays published; a rerun skips it as
//! unchanged); a second signal exits at once.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cauce_ingest::sandbox::Limits;
use cauce_ingest::{ChunkOptions, Format, IngestOptions, ProgressMode, Reader, Sandbox};
use cauce_nats::{Collection, Need, connect};
use clap::Args;
use tracing::info;

use crate::cli::{LimitsArgs, NatsArgs};

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Files and folders to ingest (Markdown, plain text, HTML, PDF, DOCX, EPUB)
    #[arg(required_unless_present = "follow", conflicts_with = "follow")]
    paths: Vec<PathBuf>,
    /// Run as an ingest worker: convert the files uploaded through the gateway
    /// (`POST /v1/documents`) until stopped. `cauce up` runs one
    #[arg(long)]
    follow: bool,
    /// Prefix of every document id [default: the folder's name]
    #[arg(long, env = "CAUCE_INGEST_ID_PREFIX")]
    id_prefix: Option<String>,
    /// The collection the documents belong to; a chat or search request naming
    /// collections only uses theirs. Outside `default`, ids start with its name
    #[arg(long, env = "CAUCE_INGEST_COLLECTION", default_value = Collection::DEFAULT)]
    collection: Collection,
    /// Publish tombstones for documents under these folders that no file produced
    #[arg(long, env = "CAUCE_INGEST_DELETE_MISSING")]
    delete_missing: bool,
    /// Leave out files and folders matching this glob (repeatable): without `/` it
    /// matches any file or folder name (`*.rst.txt`), with `/` the path inside the
    /// folder (`drafts/**`)
    #[arg(long)]
    exclude: Vec<String>,
    /// Also read the generated folders left out by default (_sources, _static,
    /// node_modules); dot folders stay out
    #[arg(long)]
    no_default_excludes: bool,
    /// Shown as each document's location instead of its file path, joined with the path
    /// inside the folder: a URL such as https://example.org/guide/
    #[arg(long, env = "CAUCE_INGEST_LOCATION_BASE")]
    location_base: Option<String>,
    /// Target passage size, in characters
    #[arg(long, env = "CAUCE_PASSAGE_CHARS", default_value_t = 1000)]
    passage_chars: usize,
    /// Characters repeated from one passage at the start of the next
    #[arg(long, env = "CAUCE_PASSAGE_OVERLAP", default_value_t = 150)]
    passage_overlap: usize,
    /// Publishes awaiting their ack, at most
    #[arg(long, env = "CAUCE_INGEST_IN_FLIGHT", default_value_t = 64)]
    max_in_flight: usize,
    #[command(flatten)]
    pub convert: ConvertArgs,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    limits: LimitsArgs,
}

pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    let options = IngestOptions {
        paths: args.paths,
        id_prefix: args.id_prefix,
        collection: args.collection,
        delete_missing: args.delete_missing,
        exclude: args.exclude,
        default_excludes: !args.no_default_excludes,
        location_base: args.location_base,
        chunk: ChunkOptions {
            target_chars: args.passage_chars,
            overlap_chars: args.passage_overlap,
        },
        max_in_flight: args.max_in_flight,
        progress: ProgressMode::detect(),
        reader: args.convert.reader()?,
    };
    info!(?options, nats_url = %args.nats.url_for_logs(), "cauce ingest");
    let client = connect(
        &args
            .nats
            .connect_options(cauce_nats::permissions::Role::Ingest, "cauce-ingest")?,
    )
    .await?;
    let js = cauce_nats::async_nats::jetstream::new(client.clone());
    let cancel = crate::signals::shutdown_token()?;
    if args.follow {
        args.limits.check(&js, Need::INGEST_FOLLOW).await?;
        let jobs = args.convert.convert_jobs;
        cauce_ingest::follow(&js, options.chunk, options.reader, jobs, &cancel).await?;
        client.drain().await.ok();
        return Ok(());
    }
    args.limits.check(&js, Need::INGEST).await?;

    let summary = cauce_ingest::run(options, &js, &cancel).await?;
    client.flush().await.ok();
    println!("{summary}");
    Ok(())
}

/// The conversion sandbox: every file is read in a child process (`cauce convert`) with
/// these limits, so a crafted file costs one failed conversion, never the worker.
#[derive(Debug, Clone, Args)]
pub struct ConvertArgs {
    /// Memory one conversion may use, in MiB
    #[arg(long, env = "CAUCE_CONVERT_MEMORY_MIB", default_value_t = 2048)]
    pub convert_memory_mib: u64,
    /// Time any file's conversion may take...
    #[arg(long, env = "CAUCE_CONVERT_TIME", default_value = "30s", value_parser = humantime::parse_duration)]
    pub convert_time: Duration,
    /// ...plus this much per MiB of the file
    #[arg(long, env = "CAUCE_CONVERT_TIME_PER_MIB", default_value = "10s", value_parser = humantime::parse_duration)]
    pub convert_time_per_mib: Duration,
    /// Most text one file may expand to, in MiB
    #[arg(long, env = "CAUCE_CONVERT_MAX_OUTPUT_MIB", default_value_t = 64)]
    pub convert_max_output_mib: u64,
    /// Uploaded files an ingest worker converts at once
    #[arg(long, env = "CAUCE_CONVERT_JOBS", default_value_t = 2)]
    pub convert_jobs: usize,
}

impl ConvertArgs {
    /// The sandboxed reader: this binary's `convert` subcommand, with these limits.
    pub fn reader(&self) -> anyhow::Result<Reader> {
        // this very binary, even after a newer one was installed over its path
        let program = PathBuf::from("/proc/self/exe");
        Ok(Reader::Sandboxed(Sandbox {
            program,
            args: vec!["convert".into()],
            limits: Limits {
                memory_bytes: self.convert_memory_mib << 20,
                time_base: self.convert_time,
                time_per_mib: self.convert_time_per_mib,
                output_bytes: self.convert_max_output_mib << 20,
                ..Limits::default()
            },
        }))
    }
}

/// `cauce convert FORMAT`: the sandbox's converter (see `cauce_ingest::sandbox`).
#[derive(Debug, Args)]
pub struct ConvertCommand {
    /// markdown, text, html, pdf, docx or epub
    format: String,
}

/// Converts standard input; run by the sandbox in a child process with limits.
pub fn convert(args: ConvertCommand) -> anyhow::Result<()> {
    let format = Format::parse(&args.format)
        .with_context(|| format!("{:?} is not a format cauce reads", args.format))?;
    cauce_ingest::convert_stdin(format)?;
    Ok(())
}
