//! The retrieval benchmark, on a real corpus nobody here wrote: the Python 3.11
//! documentation from Debian's `python3.11-doc` (HTML). Not a test: it prints figures
//! and asserts nothing. Run it with `ops/bench-retrieval`, or
//! `cargo bench -p cauce-retrieval --bench corpus -- --help`.
//!
//! 1. Starts its own `nats-server -js` ([`cauce_nats::server`]) on a free port with a
//!    temporary store, and sets up the streams.
//! 2. Ingests the corpus's HTML files with `cauce-ingest`, as `cauce ingest` does:
//!    documents/s and MB/s of HTML read. Only the HTML: the folder also holds the
//!    reStructuredText sources of the same pages (`_sources/*.rst.txt`), which would
//!    put every page in the index twice. The files are copied to a temporary folder
//!    first, outside the timing.
//! 3. A fresh worker's index (an empty directory) catches up from `DOCS` the way
//!    `cauce retrieval` does at start: open or rebuild, follow until caught up. Time and
//!    size on disk.
//! 4. Searches through [`Searcher::search`] on this one thread, after a warm-up, with
//!    questions drawn from the indexed passages with a fixed seed (see `queries.rs`):
//!    wall-clock latency percentiles of each search's first run, overall and by kind of
//!    question; the same percentiles of the best of `--repeat` runs of each search,
//!    which filters out the time slices a busy machine gives other processes; and how
//!    often the passage's own document came first or among the sources (a sanity
//!    check of the ranking). With `--vectors FILE` the searches are hybrid, as an
//!    English worker's are by default: the passages' vectors are read from FILE
//!    (those missing are computed first and kept there, about 14 minutes for this
//!    corpus on two cores when FILE is new), and each search embeds its question,
//!    searches the vectors and fuses.

mod queries;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use cauce_ingest::{IngestOptions, ProgressMode};
use cauce_nats::server::{self, ServerConfig};
use cauce_nats::{Limits, names};
use cauce_retrieval::follow::{FollowOptions, Follower};
use cauce_retrieval::hybrid::{self, Hybrid, HybridConfig};
use cauce_retrieval::{Language, LocalIndex, Searcher};
use clap::Parser;
use tokio_util::sync::CancellationToken;

use queries::{Kind, Question, Rng};

/// Retrieval benchmark: ingest a real corpus, catch up a fresh index, time searches.
#[derive(Debug, Parser)]
#[command(args_override_self = true)]
struct Args {
    /// Folder whose HTML files are the corpus
    #[arg(
        long,
        env = "CAUCE_BENCH_CORPUS",
        default_value = "/usr/share/doc/python3.11/html"
    )]
    corpus: PathBuf,
    /// Searches timed
    #[arg(long, default_value_t = 2000)]
    queries: usize,
    /// Searches run first and not timed
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Passages per search, as a request's default `top_k`
    #[arg(long, default_value_t = 4)]
    top_k: usize,
    /// Runs of each timed search: the first gives the wall-clock figures, the best of
    /// all a figure with less of the noise of a shared machine
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Seed of the questions
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Hybrid searches, with the passages' vectors kept in this file
    #[arg(long)]
    vectors: Option<PathBuf>,
    /// Folder of the embedding model (ops/bench-retrieval passes the one ops/setup installs)
    #[arg(long)]
    embedding_model: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

/// A `nats-server` of this run, stopped on drop; its store is a temporary folder.
struct LocalNats {
    child: Child,
    url: String,
    _store: tempfile::TempDir,
}

impl LocalNats {
    fn start() -> anyhow::Result<Self> {
        let store = tempfile::Builder::new()
            .prefix("cauce-bench-nats-")
            .tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = ServerConfig {
            sync_always: true,
            extra: String::new(),
            max_file_store: Some(cauce_nats::testkit::TEST_MAX_FILE_STORE),
            binary: server::find_binary()?,
            host: "127.0.0.1".into(),
            port,
            store_dir: store.path().join("jetstream"),
            log_file: server::log_file_for(store.path()),
        };
        let child = server::spawn(&config, Duration::from_secs(20))?;
        Ok(Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _store: store,
        })
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        server::stop(&mut self.child, Duration::from_secs(10));
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.corpus.is_dir(),
        "{} is not a folder: install the corpus with `apt-get install python3.11-doc` \
         (ops/bench-retrieval does it when run as root) or pass --corpus",
        args.corpus.display()
    );
    let work = tempfile::Builder::new().prefix("cauce-bench-").tempdir()?;
    let staged = work.path().join("python-3.11");
    let html_files = copy_html(&args.corpus, &staged)?;

    let nats = LocalNats::start()?;
    let client = async_nats::connect(&nats.url).await?;
    let js = jetstream::new(client.clone());
    cauce_nats::apply(&js, &Limits::default()).await?;
    println!(
        "cauce retrieval benchmark: {} CPU(s) available, nats-server at {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        nats.url
    );
    println!(
        "corpus      {}: {html_files} HTML files",
        args.corpus.display()
    );

    // 2. ingest
    let options = IngestOptions {
        paths: vec![staged],
        id_prefix: Some("pydoc".into()),
        progress: ProgressMode::Quiet,
        ..IngestOptions::default()
    };
    let summary = cauce_ingest::run(options, &js, &CancellationToken::new()).await?;
    let ingest_secs = summary.elapsed.as_secs_f64();
    println!(
        "ingest      {} documents, {} passages, {:.1} MB of HTML in {:.2} s: {:.0} documents/s, {:.2} MB/s \
         ({:.1} MB zstd published, {} skipped)",
        summary.published,
        summary.passages,
        mb(summary.bytes_read),
        ingest_secs,
        summary.published as f64 / ingest_secs,
        mb(summary.bytes_read) / ingest_secs,
        mb(summary.bytes_published),
        summary.skipped.len(),
    );
    for (reason, count) in summary.skipped_by_reason() {
        println!("            skipped {count}: {reason}");
    }

    // 3. a fresh worker catches up
    let index_dir = work.path().join("index");
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let (searcher, reader, mut follower) = start_index(&js, &index_dir, cancel.clone()).await?;
    let status = follower.caught_up().await;
    let catch_up = started.elapsed();
    let index_bytes = dir_size(&index_dir);
    let segments = reader.searcher().segment_readers().len();
    println!(
        "catch-up    fresh worker: {} records, {} passages in {:.2} s ({:.0} records/s)",
        status.applied,
        searcher.passages(),
        catch_up.as_secs_f64(),
        status.applied as f64 / catch_up.as_secs_f64(),
    );
    println!(
        "index       {:.1} MB on disk, {segments} segments",
        mb(index_bytes)
    );

    let searcher = match &args.vectors {
        Some(file) => with_vectors(searcher, file, &args, &cancel)?,
        None => searcher,
    };

    // 4. searches, one thread
    let mut rng = Rng::new(args.seed);
    let warmup = queries::draw(&reader, args.warmup, &mut rng)?;
    let timed = queries::draw(&reader, args.queries, &mut rng)?;
    for question in &warmup {
        searcher.search(&question.messages, args.top_k, &[])?;
    }
    let mut results = Vec::with_capacity(timed.len());
    for question in &timed {
        let started = Instant::now();
        let passages = searcher.search(&question.messages, args.top_k, &[])?;
        let took = started.elapsed();
        let mut best = took;
        for _ in 1..args.repeat {
            let started = Instant::now();
            searcher.search(&question.messages, args.top_k, &[])?;
            best = best.min(started.elapsed());
        }
        let docs: Vec<String> = passages.iter().map(|p| p.doc_id.to_string()).collect();
        results.push(Timed {
            question,
            took,
            best,
            docs,
        });
    }
    report_searches(&args, &results);

    cancel.cancel();
    follower.task.await??;
    client.drain().await.ok();
    let target = Duration::from_millis(if args.vectors.is_some() { 20 } else { 5 });
    println!(
        "targets     p99 < {target:?} (wall clock): {}; catch-up < 30 s: {}",
        met(percentile(&latencies(&results, None), 0.99) < target),
        met(catch_up < Duration::from_secs(30)),
    );
    Ok(())
}

/// `searcher` ranking with the embedding model and the vectors kept in `file`, once
/// every passage has one.
fn with_vectors(
    searcher: Searcher,
    file: &Path,
    args: &Args,
    cancel: &CancellationToken,
) -> anyhow::Result<Searcher> {
    let model_dir = args
        .embedding_model
        .clone()
        .context("--vectors needs --embedding-model (ops/bench-retrieval passes it)")?;
    let hybrid = Hybrid::open(&HybridConfig {
        model_dir,
        vectors_file: file.to_path_buf(),
        weight: hybrid::DEFAULT_WEIGHT,
        dense_candidates: hybrid::DEFAULT_DENSE_CANDIDATES,
    })?;
    let started = Instant::now();
    let computed = hybrid.backfill(&searcher.passages_to_embed()?, cancel)?;
    println!(
        "vectors     {} passages' vectors from {}, {computed} computed in {:.1} s",
        hybrid.vectors(),
        file.display(),
        started.elapsed().as_secs_f64(),
    );
    Ok(searcher.with_hybrid(Arc::new(hybrid)))
}

/// Opens an empty index and starts following `DOCS`, as a starting worker does.
async fn start_index(
    js: &jetstream::Context,
    dir: &Path,
    cancel: CancellationToken,
) -> anyhow::Result<(Searcher, tantivy::IndexReader, Follower)> {
    let mut docs = js.get_stream(names::DOCS).await?;
    let info = docs.info().await?;
    let stream_created = info.created.unix_timestamp_nanos().to_string();
    let last_seq = info.state.last_sequence;
    let dir = dir.to_path_buf();
    let index = tokio::task::spawn_blocking(move || {
        LocalIndex::open_or_rebuild(&dir, Language::English, &stream_created, last_seq)
    })
    .await??;
    let searcher = Searcher::new(&index);
    let reader = index.reader();
    let follower = Follower::spawn(
        js.clone(),
        index,
        last_seq,
        FollowOptions::default(),
        cancel,
    );
    Ok((searcher, reader, follower))
}

/// One timed search.
struct Timed<'a> {
    question: &'a Question,
    /// Wall-clock time.
    took: Duration,
    /// The best of `--repeat` runs of the same search: what is left once the time
    /// the scheduler gave other processes is filtered out.
    best: Duration,
    docs: Vec<String>,
}

fn report_searches(args: &Args, results: &[Timed<'_>]) {
    let all = latencies(results, None);
    let total: Duration = all.iter().sum();
    println!(
        "search      {} searches after {} warm-up, one thread, top_k {}: \
         p50 {}, p90 {}, p99 {}, max {}, mean {}",
        all.len(),
        args.warmup,
        args.top_k,
        ms(percentile(&all, 0.50)),
        ms(percentile(&all, 0.90)),
        ms(percentile(&all, 0.99)),
        ms(percentile(&all, 1.0)),
        ms(total / all.len().max(1) as u32),
    );
    if args.repeat > 1 {
        let mut best: Vec<Duration> = results.iter().map(|t| t.best).collect();
        best.sort_unstable();
        println!(
            "  best of {}  each search run {} times in a row, the fastest kept: \
             p50 {}, p90 {}, p99 {}, max {}",
            args.repeat,
            args.repeat,
            ms(percentile(&best, 0.50)),
            ms(percentile(&best, 0.90)),
            ms(percentile(&best, 0.99)),
            ms(percentile(&best, 1.0)),
        );
    }
    for kind in Kind::ALL {
        let some = latencies(results, Some(kind));
        if some.is_empty() {
            continue;
        }
        println!(
            "  {:<10} {:>5} searches: p50 {}, p99 {}, max {}",
            kind.name(),
            some.len(),
            ms(percentile(&some, 0.50)),
            ms(percentile(&some, 0.99)),
            ms(percentile(&some, 1.0)),
        );
    }
    let mut found: BTreeMap<Kind, (usize, usize, usize)> = BTreeMap::new();
    for Timed { question, docs, .. } in results {
        let Some(drawn_from) = &question.drawn_from else {
            continue;
        };
        let entry = found.entry(question.kind).or_default();
        entry.0 += 1;
        entry.1 += usize::from(docs.first() == Some(drawn_from));
        entry.2 += usize::from(docs.contains(drawn_from));
    }
    let line: Vec<String> = found
        .iter()
        .map(|(kind, (asked, first, any))| {
            format!(
                "{} {:.0}% first, {:.0}% in sources",
                kind.name(),
                100.0 * *first as f64 / *asked as f64,
                100.0 * *any as f64 / *asked as f64
            )
        })
        .collect();
    println!(
        "ranking     the passage's own document: {}",
        line.join("; ")
    );
}

fn latencies(results: &[Timed<'_>], kind: Option<Kind>) -> Vec<Duration> {
    let mut took: Vec<Duration> = results
        .iter()
        .filter(|timed| kind.is_none_or(|k| timed.question.kind == k))
        .map(|timed| timed.took)
        .collect();
    took.sort_unstable();
    took
}

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// Copies the `.html` files under `from` (hidden folders left out) to `to`, keeping
/// their relative paths; returns how many.
fn copy_html(from: &Path, to: &Path) -> anyhow::Result<usize> {
    let mut copied = 0;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            copied += copy_html(&path, &to.join(&name))?;
        } else if path.extension().is_some_and(|e| e == "html") {
            std::fs::create_dir_all(to)?;
            std::fs::copy(&path, to.join(&name))?;
            copied += 1;
        }
    }
    Ok(copied)
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_size(&entry.path()),
            _ => entry.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}
