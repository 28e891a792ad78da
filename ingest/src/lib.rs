//! `cauce-ingest` reads documents (Markdown, plain text, HTML, PDF, DOCX, EPUB), splits them into
//! passages along headings and paragraphs, and publishes each document, zstd-compressed,
//! to `cauce.docs.<doc id>` in the `DOCS` stream, where retrieval workers pick it up.
//!
//! - Ids are stable for a path ([`source`]); the version is a hash of the content
//!   ([`document`]). A document whose last message in `DOCS` has the same version is
//!   not published again, so re-running ingest over an unchanged folder sends nothing.
//! - `--delete-missing` publishes a tombstone for every document under the walked
//!   folders' id prefixes that no file produced this time.
//! - Publishes are pipelined with a bounded number of acks in flight.
//! - A document too large for one NATS message (the server's `max_payload`) is refused
//!   with a message naming the file and the limit, and the run goes on without it;
//!   passages are small, so this takes a file of tens of megabytes.
//!
//! - [`follow`] is the ingest worker kind (`cauce ingest --follow`): it converts files
//!   uploaded through the gateway, which it reads from JetStream, with the same readers.
//! - Untrusted files are read in the conversion sandbox ([`sandbox`]): a child process
//!   per file, with limits on memory, time and output, whose crash is one failed
//!   conversion with a reason. [`convert_stdin`] is what that child runs.
//!
//! It does not search or index, and it does not create streams: `cauce up` or
//! `cauce nats apply` (`cauce_nats::apply`) does. Retrieval workers build their own
//! index from `DOCS`.

mod chunk;
mod document;
pub mod docx;
pub mod epub;
pub mod error;
pub mod exclude;
mod extract;
mod follow;
mod given_up;
pub mod html;
pub mod markdown;
pub mod pdf;
mod progress;
mod publish;
pub mod sandbox;
pub mod source;
mod summary;
#[cfg(feature = "testkit")]
pub mod testkit;
mod xml;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use async_nats::jetstream;
use cauce_nats::{Collection, names};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use chunk::ChunkOptions;
pub use error::{Error, Result};
pub use extract::{Extracted, Refusal, Section, plain_text};
pub use follow::follow;
pub use progress::ProgressMode;
pub use sandbox::{Reader, Sandbox};
pub use source::{Format, SkipReason, Skipped};
pub use summary::Summary;

use document::{Outcome, Prepared};
use publish::{Current, Publisher};

/// What to ingest and how.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// Files and folders to read.
    pub paths: Vec<PathBuf>,
    /// Prefix of every document id, instead of the folder's name.
    pub id_prefix: Option<String>,
    /// The collection every document of the run belongs to. Outside the default one,
    /// ids start with the collection's name, so the same folder in two collections is
    /// two sets of documents.
    pub collection: Collection,
    /// Tombstone documents under the walked folders that no file produced.
    pub delete_missing: bool,
    /// Shown as the documents' location instead of their file path, joined with the
    /// path inside the walked folder: a URL (`https://example.org/guide/`) or `docs/`.
    pub location_base: Option<String>,
    /// Globs of files and folders to leave out (see [`exclude`]).
    pub exclude: Vec<String>,
    /// Leave out the generated folders of common tools ([`exclude::DEFAULT_EXCLUDED_FOLDERS`]).
    pub default_excludes: bool,
    pub chunk: ChunkOptions,
    /// Publishes whose ack has not come back yet, at most.
    pub max_in_flight: usize,
    pub progress: ProgressMode,
    /// Where the readers run: `cauce ingest` reads in the conversion sandbox.
    pub reader: Reader,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            id_prefix: None,
            collection: Collection::default(),
            delete_missing: false,
            location_base: None,
            exclude: Vec::new(),
            default_excludes: true,
            chunk: ChunkOptions::default(),
            max_in_flight: 64,
            progress: ProgressMode::Quiet,
            reader: Reader::InProcess,
        }
    }
}

/// Reads `options.paths` and brings `DOCS` up to date with them.
pub async fn run(
    options: IngestOptions,
    js: &jetstream::Context,
    cancel: &CancellationToken,
) -> Result<Summary> {
    let started = Instant::now();
    let roots = options.paths.clone();
    let id_prefix = options.id_prefix.clone();
    let scope = (!options.collection.is_default()).then(|| options.collection.to_string());
    let location_base = options.location_base.clone();
    let excludes = exclude::Excludes::new(&options.exclude, options.default_excludes)?;
    let discovered = tokio::task::spawn_blocking(move || {
        source::discover(
            &roots,
            scope.as_deref(),
            id_prefix.as_deref(),
            location_base.as_deref(),
            &excludes,
        )
    })
    .await
    .map_err(|e| Error::Read {
        path: PathBuf::new(),
        source: std::io::Error::other(e),
    })??;
    let stream = js.get_stream(names::DOCS).await.map_err(|e| {
        Error::jetstream(
            "look up the DOCS stream (run `cauce nats apply` or `cauce up` first)",
            e,
        )
    })?;
    let max_payload = js.client().server_info().max_payload;
    info!(
        files = discovered.files.len(),
        skipped = discovered.skipped.len(),
        max_payload,
        delete_missing = options.delete_missing,
        "ingest start"
    );

    let mut summary = Summary {
        skipped: discovered.skipped,
        ..Summary::default()
    };
    let mut progress = progress::Progress::new(options.progress, discovered.files.len() as u64);
    let mut publisher = Publisher::new(js.clone(), options.max_in_flight);
    let mut seen = HashSet::new();
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = options.chunk;
    let collection = options.collection.clone();
    let reader = options.reader.clone();
    let mut prepared = futures::stream::iter(discovered.files)
        .map(|file| {
            let (collection, reader) = (collection.clone(), reader.clone());
            tokio::task::spawn_blocking(move || document::prepare(file, collection, chunk, &reader))
        })
        .buffered(parallel);

    while let Some(next) = tokio::select! {
        next = prepared.next() => next,
        () = cancel.cancelled() => return Err(Error::Cancelled),
    } {
        let Prepared {
            file,
            source_bytes,
            outcome,
        } = next.map_err(|e| Error::Read {
            path: PathBuf::new(),
            source: std::io::Error::other(e),
        })?;
        seen.insert(file.id.clone());
        summary.files += 1;
        summary.bytes_read += source_bytes as u64;
        let (document, payload) = match outcome {
            Outcome::Document { document, payload } => (document, payload),
            Outcome::NoText => {
                summary.skip(file.path, SkipReason::NoText);
                progress.file_done(0, source_bytes);
                continue;
            }
            Outcome::Unreadable(err) => {
                warn!(path = %file.path.display(), error = %err, "cannot read file, skipped");
                summary.skip(file.path, SkipReason::Unreadable);
                progress.file_done(0, source_bytes);
                continue;
            }
            Outcome::Refused(refusal) => {
                warn!(path = %file.path.display(), reason = %refusal, "file skipped");
                summary.refuse(file.path, &refusal);
                progress.file_done(0, source_bytes);
                continue;
            }
        };
        progress.file_done(document.passages.len(), source_bytes);
        summary.passages += document.passages.len() as u64;
        // headers and the subject ride in the same message as the payload
        let limit = max_payload.saturating_sub(1024);
        if payload.len() > limit {
            let err = Error::TooLarge {
                path: file.path.clone(),
                size: payload.len(),
                limit,
            };
            warn!(error = %err, kind = err.kind(), "document refused");
            summary.skip(file.path, SkipReason::TooLarge);
            continue;
        }
        if publish::current(&stream, &file.id).await? == Current::Version(document.version.clone())
        {
            summary.unchanged += 1;
            continue;
        }
        summary.bytes_published += payload.len() as u64;
        publisher.publish(&file.id, file.path, payload).await?;
        summary.published += 1;
    }
    publisher.flush().await?;
    progress.finish();

    if options.delete_missing {
        let scopes = discovered.scopes;
        for id in publish::missing(&stream, &scopes, &seen).await? {
            info!(doc_id = %id, "document gone, publishing tombstone");
            publisher
                .publish(&id, PathBuf::from(id.as_str()), publish::tombstone(&id)?)
                .await?;
            summary.deleted += 1;
        }
        publisher.flush().await?;
    }
    summary.elapsed = started.elapsed();
    info!(
        published = summary.published,
        unchanged = summary.unchanged,
        deleted = summary.deleted,
        skipped = summary.skipped.len(),
        "ingest done"
    );
    Ok(summary)
}

/// The converter of the sandbox (`cauce convert <format>`): reads one file of `format`
/// from standard input, extracts it in this process and writes what it found, or why
/// it refused the file, as JSON to standard output. Run it only as the sandbox runs it:
/// in a child process with limits ([`sandbox`]).
pub fn convert_stdin(format: Format) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut raw = Vec::new();
    std::io::stdin().lock().read_to_end(&mut raw)?;
    let converted = match document::read(format, &raw) {
        Ok(extracted) => sandbox::Converted::Extracted(extracted),
        Err(refusal) => sandbox::Converted::Refused(refusal),
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &converted).map_err(std::io::Error::other)?;
    out.flush()
}
