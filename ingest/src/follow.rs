//! The ingest worker (`cauce ingest --follow`): it pulls upload jobs from the shared
//! consumer of `UPLOADS`, converts each uploaded file with the same readers as a folder
//! ingest, publishes the document to `DOCS` and records what became of it (see
//! [`cauce_nats::uploads`] for the protocol). Any number of them can run; each job goes
//! to one.
//!
//! Each file is converted in the conversion sandbox ([`crate::sandbox`]): the worker
//! never parses an uploaded file itself, and a file that crashes or outlasts its
//! converter is one failed upload with the reason. Up to `concurrency` jobs run at
//! once, so one slow file never holds the others up.
//!
//! A job is acked only once its outcome is recorded, so a worker that dies mid-job
//! leaves it to another. A job whose NATS work fails is retried; the worker that holds
//! its last delivery records the upload as failed, with the error, so every upload
//! ends.
//!
//! Jobs of one document can run at once on several workers (a re-upload, a delete).
//! Each publishes to `DOCS` only while the document's subject still ends where it ended
//! when the job read the record (`Nats-Expected-Last-Subject-Sequence`), and records its
//! outcome with a compare-and-set on the record's revision: a job that lost the race
//! reads the record again, and ends at once when it no longer asks for that job.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{self, AckKind, consumer};
use cauce_nats::ensure::INGEST_MAX_DELIVERIES;
use cauce_nats::uploads::{self, Stored, Uploads};
use cauce_nats::wire::{self, UploadJob, UploadState};
use cauce_nats::{DocId, names};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::document::{self, Outcome, Prepared};
use crate::error::{Error, Result};
use crate::given_up;
use crate::sandbox::Reader;
use crate::source::{Format, SourceFile};
use crate::{ChunkOptions, publish};

/// How often a worker tells JetStream it is still converting.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How long one pull for the next job waits before asking again.
const PULL_WAIT: Duration = Duration::from_secs(5);
/// Pause before a job whose NATS work failed is delivered again.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Races with other jobs of the same document before a job gives up (and is retried).
const MAX_RACES: usize = 8;

/// How one attempt at a job ended.
enum Attempt {
    Done,
    /// Another job published for the document first: read the record again.
    Raced,
}

/// Converts upload jobs, up to `concurrency` at once, until `cancel` fires.
pub async fn follow(
    js: &jetstream::Context,
    chunk: ChunkOptions,
    reader: Reader,
    concurrency: usize,
    cancel: &CancellationToken,
) -> Result<()> {
    let uploads = Uploads::open(js).await?;
    let docs = js.get_stream(names::DOCS).await.map_err(|e| {
        Error::jetstream(
            "look up the DOCS stream (run `cauce nats apply` or `cauce up` first)",
            e,
        )
    })?;
    let consumer: consumer::PullConsumer = js
        .get_consumer_from_stream(names::INGEST_CONSUMER, names::UPLOADS)
        .await
        .map_err(|e| Error::jetstream("look up the ingest consumer of UPLOADS", e))?;
    info!(concurrency, "ingest worker: following upload jobs");
    let dead_letters = cancel.child_token();
    tokio::spawn(given_up::follow_dead_letters(
        js.clone(),
        uploads.clone(),
        dead_letters.clone(),
    ));
    // however this returns, the reader of dead letters stops with it
    let _stop_dead_letters = dead_letters.drop_guard();
    let worker = Worker {
        js,
        docs: &docs,
        uploads: &uploads,
        chunk,
        reader: &reader,
    };
    let mut running = futures::stream::FuturesUnordered::<
        std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>>,
    >::new();
    // one pull at a time, kept across a job's end: a pull dropped half-way would leave
    // a job the server sent it unacked until its ack wait
    let mut pull = None;
    loop {
        if pull.is_none() && running.len() < concurrency.max(1) {
            pull = Some(Box::pin(next_job(&consumer)));
        }
        let pulled = async {
            match pull.as_mut() {
                Some(pull) => pull.await,
                None => std::future::pending().await,
            }
        };
        let message = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            Some(went_on) = running.next(), if !running.is_empty() => {
                if !went_on {
                    return Ok(());
                }
                continue;
            }
            next = pulled => next,
        };
        pull = None;
        let message = match message {
            Ok(Some(message)) => message,
            Ok(None) => continue,
            Err(err) => {
                warn!(error = %err, "pulling upload jobs failed; trying again");
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        };
        running.push(Box::pin(worker.take(message, cancel)));
    }
}

/// The next upload job, pulled only when a slot is free (a job pulled ahead would wait
/// unacked in a buffer, and go to another worker at its ack wait); `None` when none
/// came within a few seconds.
async fn next_job(consumer: &consumer::PullConsumer) -> Result<Option<jetstream::Message>> {
    let mut batch = consumer
        .batch()
        .max_messages(1)
        .expires(PULL_WAIT)
        .messages()
        .await
        .map_err(|e| Error::jetstream("pull upload jobs", e))?;
    match batch.next().await {
        Some(Ok(message)) => Ok(Some(message)),
        Some(Err(err)) => Err(Error::jetstream("pull upload jobs", err)),
        None => Ok(None),
    }
}

struct Worker<'a> {
    js: &'a jetstream::Context,
    docs: &'a Stream,
    uploads: &'a Uploads,
    chunk: ChunkOptions,
    reader: &'a Reader,
}

impl Worker<'_> {
    /// Runs one job to its end, acking its progress meanwhile; `false` when `cancel`
    /// stopped it first (the job, not acked, goes to another worker).
    async fn take(&self, message: jetstream::Message, cancel: &CancellationToken) -> bool {
        let delivered = message.info().map_or(1, |info| info.delivered);
        let job = match wire::decode::<UploadJob>(&message.payload) {
            Ok(job) => job,
            Err(err) => {
                warn!(error = %err, "an upload job this build cannot read; dropped");
                let _ = message.ack_with(AckKind::Term).await;
                return true;
            }
        };
        let run = self.run(&job, delivered as u32);
        tokio::pin!(run);
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        progress.tick().await;
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                _ = progress.tick() => { let _ = message.ack_with(AckKind::Progress).await; }
                () = cancel.cancelled() => return false,
            }
        };
        match outcome {
            Ok(()) => {}
            Err(err) if delivered < INGEST_MAX_DELIVERIES => {
                warn!(doc_id = %job.id(), error = %err, delivered, "upload job failed; it is retried");
                let reason =
                    format!("attempt {delivered} of {INGEST_MAX_DELIVERIES} failed: {err}");
                given_up::note(self.uploads, &job, &reason).await;
                let _ = message.ack_with(AckKind::Nak(Some(RETRY_AFTER))).await;
                return true;
            }
            Err(err) => {
                warn!(doc_id = %job.id(), error = %err, delivered, "upload job failed on its last delivery");
                let reason = format!("ingest failed {INGEST_MAX_DELIVERIES} times: {err}");
                given_up::end(self.uploads, &job, &reason).await;
            }
        }
        if let Err(err) = message.double_ack().await {
            warn!(doc_id = %job.id(), error = %err, "acking an upload job failed; it may run again");
        }
        true
    }

    async fn run(&self, job: &UploadJob, delivered: u32) -> Result<()> {
        for _ in 0..MAX_RACES {
            let attempt = match job {
                UploadJob::Convert { id, upload } => self.convert(id, upload, delivered).await?,
                UploadJob::Delete { id } => self.delete(id).await?,
            };
            if let Attempt::Done = attempt {
                return Ok(());
            }
        }
        Err(Error::jetstream(
            "publish an uploaded document",
            format!("lost {MAX_RACES} races with other jobs of the document"),
        ))
    }

    /// The record, if it still asks for `job`, and where the document's subject ends.
    async fn still_wanted(&self, job: &UploadJob) -> Result<Option<(Stored, u64)>> {
        let Some(read) = given_up::wanted(self.uploads, job).await? else {
            return Ok(None);
        };
        let last = publish::last_sequence(self.docs, job.id()).await?;
        Ok(Some((read, last)))
    }

    /// Converts the file of `upload`, unless a newer upload or a delete replaced it. The
    /// attempt is on the record before the file is read, so an upload whose worker dies
    /// shows it.
    async fn convert(&self, id: &DocId, upload: &str, attempt: u32) -> Result<Attempt> {
        let job = UploadJob::Convert {
            id: id.clone(),
            upload: upload.to_string(),
        };
        let Some((read, last)) = self.still_wanted(&job).await? else {
            return Ok(Attempt::Done);
        };
        let Some(read) = self.uploads.begin_attempt(&read, attempt).await? else {
            return Ok(Attempt::Raced);
        };
        let mut record = read.record.clone();
        let converted = match self.uploads.read(&record).await? {
            Some(bytes) => self.prepare(&read, bytes).await?,
            None => Err(format!(
                "{}: the stored file is gone; upload it again",
                record.file_name
            )),
        };
        match converted {
            Ok((document, payload)) => {
                let Some(seq) = publish::publish_after(self.js, id, payload, last).await? else {
                    return Ok(Attempt::Raced);
                };
                record.state = UploadState::Converted;
                record.title = Some(document.title);
                record.passages = document.passages.len() as u32;
                record.docs_seq = Some(seq);
                info!(doc_id = %id, passages = record.passages, docs_seq = seq, "upload converted");
            }
            Err(reason) => {
                warn!(doc_id = %id, %reason, "upload failed");
                record.state = UploadState::Failed;
                record.reason = Some(reason);
            }
        }
        self.uploads.finish(&read, &record).await?;
        Ok(Attempt::Done)
    }

    /// The document of an uploaded file and its payload, or why there is none.
    async fn prepare(
        &self,
        read: &Stored,
        bytes: Vec<u8>,
    ) -> Result<Result<(wire::Document, bytes::Bytes), String>> {
        let record = &read.record;
        let path = PathBuf::from(&record.file_name);
        let Some(format) = Format::from_path(&path) else {
            return Ok(Err(format!(
                "{}: not a type cauce reads; upload PDF, DOCX, EPUB, Markdown, HTML or text",
                record.file_name
            )));
        };
        let file = SourceFile {
            path,
            id: record.id.clone(),
            format,
            location: uploads::content_location(&record.id),
        };
        let (collection, chunk) = (record.collection.clone(), self.chunk);
        let reader = self.reader.clone();
        let Prepared { file, outcome, .. } = tokio::task::spawn_blocking(move || {
            document::prepare_bytes(file, &bytes, collection, chunk, &reader)
        })
        .await
        .map_err(|e| Error::Read {
            path: PathBuf::from(&record.file_name),
            source: std::io::Error::other(e),
        })?;
        let name = file.path.display();
        Ok(match outcome {
            Outcome::Document { document, payload } => {
                let limit = self
                    .js
                    .client()
                    .server_info()
                    .max_payload
                    .saturating_sub(1024);
                if payload.len() > limit {
                    Err(format!(
                        "{name}: its text is {} bytes compressed, more than one NATS message \
                         holds ({limit}); split it into smaller files",
                        payload.len()
                    ))
                } else {
                    Ok((document, payload))
                }
            }
            Outcome::NoText => Err(format!("{name}: no text to index")),
            Outcome::Unreadable(err) => Err(format!("{name}: cannot be read: {err}")),
            Outcome::Refused(refusal) => Err(format!("{name}: {refusal}")),
        })
    }

    /// Tombstones a document being deleted, then drops its record and file.
    async fn delete(&self, id: &DocId) -> Result<Attempt> {
        let job = UploadJob::Delete { id: id.clone() };
        let Some((read, last)) = self.still_wanted(&job).await? else {
            return Ok(Attempt::Done);
        };
        let tombstone = publish::tombstone(id)?;
        if publish::publish_after(self.js, id, tombstone, last)
            .await?
            .is_none()
        {
            return Ok(Attempt::Raced);
        }
        self.uploads.forget(&read).await?;
        info!(doc_id = %id, "uploaded document deleted");
        Ok(Attempt::Done)
    }
}
