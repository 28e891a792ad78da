//! The ingest worker (`cauce ingest --follow`): it pulls upload jobs from the shared
//! consumer of `UPLOADS`, converts each uploaded file with the same readers as a folder
//! ingest, publishes the document to `DOCS` and records what became of it (see
//! [`cauce_nats::uploads`] for the protocol). Any number of them can run; each job goes
//! to one.
//!
//! A job is acked only once its outcome is recorded, so a worker that dies mid-job
//! leaves it to another. A job whose NATS work fails is retried; the worker that holds
//! its last delivery records the upload as failed, with the error, so every upload
//! ends.

use std::path::PathBuf;
use std::time::Duration;

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
use crate::source::{Format, SourceFile};
use crate::{ChunkOptions, publish};

/// How often a worker tells JetStream it is still converting.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Pause before a job whose NATS work failed is delivered again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Converts upload jobs until `cancel` fires.
pub async fn follow(
    js: &jetstream::Context,
    chunk: ChunkOptions,
    cancel: &CancellationToken,
) -> Result<()> {
    let uploads = Uploads::open(js).await?;
    let consumer: consumer::PullConsumer = js
        .get_consumer_from_stream(names::INGEST_CONSUMER, names::UPLOADS)
        .await
        .map_err(|e| Error::jetstream("look up the ingest consumer of UPLOADS", e))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1)
        .messages()
        .await
        .map_err(|e| Error::jetstream("pull upload jobs", e))?;
    info!("ingest worker: following upload jobs");
    loop {
        let message = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(err)) => {
                warn!(error = %err, "pulling upload jobs failed; trying again");
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
            None => return Err(Error::Cancelled),
        };
        let worker = Worker {
            js,
            uploads: &uploads,
            chunk,
        };
        worker.take(message).await;
    }
}

struct Worker<'a> {
    js: &'a jetstream::Context,
    uploads: &'a Uploads,
    chunk: ChunkOptions,
}

impl Worker<'_> {
    /// Runs one job to its end, acking its progress meanwhile.
    async fn take(&self, message: jetstream::Message) {
        let delivered = message.info().map_or(1, |info| info.delivered);
        let job = match wire::decode::<UploadJob>(&message.payload) {
            Ok(job) => job,
            Err(err) => {
                warn!(error = %err, "an upload job this build cannot read; dropped");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let run = self.run(&job);
        tokio::pin!(run);
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        progress.tick().await;
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                _ = progress.tick() => { let _ = message.ack_with(AckKind::Progress).await; }
            }
        };
        match outcome {
            Ok(()) => {}
            Err(err) if delivered < INGEST_MAX_DELIVERIES => {
                warn!(doc_id = %job.id(), error = %err, delivered, "upload job failed; it is retried");
                let _ = message.ack_with(AckKind::Nak(Some(RETRY_AFTER))).await;
                return;
            }
            Err(err) => {
                warn!(doc_id = %job.id(), error = %err, delivered, "upload job failed on its last delivery");
                self.give_up(job.id(), &err).await;
            }
        }
        if let Err(err) = message.double_ack().await {
            warn!(doc_id = %job.id(), error = %err, "acking an upload job failed; it may run again");
        }
    }

    async fn run(&self, job: &UploadJob) -> Result<()> {
        match job {
            UploadJob::Convert { id, upload } => self.convert(id, upload).await,
            UploadJob::Delete { id } => self.delete(id).await,
        }
    }

    /// Converts the file of `upload`, unless a newer upload or a delete replaced it.
    async fn convert(&self, id: &DocId, upload: &str) -> Result<()> {
        let Some(read) = self.uploads.get(id).await? else {
            return Ok(());
        };
        let queued = read.record.state == UploadState::Queued;
        if !queued || read.record.upload != upload {
            return Ok(());
        }
        let Some(bytes) = self.uploads.read(id, upload).await? else {
            return Ok(());
        };
        let mut record = read.record.clone();
        match self.prepare(&read, bytes).await? {
            Ok((document, payload)) => {
                let ack = self
                    .js
                    .publish(names::doc_subject(id), payload)
                    .await
                    .map_err(|e| Error::jetstream("publish an uploaded document", e))?
                    .await
                    .map_err(|e| Error::jetstream("publish an uploaded document", e))?;
                record.state = UploadState::Converted;
                record.title = Some(document.title);
                record.passages = document.passages.len() as u32;
                record.docs_seq = Some(ack.sequence);
                info!(doc_id = %id, passages = record.passages, docs_seq = ack.sequence, "upload converted");
            }
            Err(reason) => {
                warn!(doc_id = %id, %reason, "upload failed");
                record.state = UploadState::Failed;
                record.reason = Some(reason);
            }
        }
        self.uploads.finish(&read, &record).await?;
        Ok(())
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
        let Prepared { file, outcome, .. } = tokio::task::spawn_blocking(move || {
            document::prepare_bytes(file, &bytes, collection, chunk)
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

    /// Tombstones a document being deleted, then drops its file and record.
    async fn delete(&self, id: &DocId) -> Result<()> {
        let Some(read) = self.uploads.get(id).await? else {
            return Ok(());
        };
        if read.record.state != UploadState::Deleting {
            return Ok(());
        }
        self.js
            .publish(names::doc_subject(id), publish::tombstone(id)?)
            .await
            .map_err(|e| Error::jetstream("publish a tombstone", e))?
            .await
            .map_err(|e| Error::jetstream("publish a tombstone", e))?;
        self.uploads.forget(&read).await?;
        info!(doc_id = %id, "uploaded document deleted");
        Ok(())
    }

    /// Records an upload as failed after its last delivery, so that it ends.
    async fn give_up(&self, id: &DocId, err: &Error) {
        let Ok(Some(read)) = self.uploads.get(id).await else {
            return;
        };
        let mut record = read.record.clone();
        record.state = UploadState::Failed;
        record.reason = Some(format!(
            "ingest failed {INGEST_MAX_DELIVERIES} times: {err}; upload it again"
        ));
        if let Err(err) = self.uploads.finish(&read, &record).await {
            warn!(doc_id = %id, error = %err, "recording a failed upload failed");
        }
    }
}
