//! How an upload job that does not succeed still ends: the reason of each failed attempt
//! on the upload's record while it waits for the next, and `failed` with the last
//! reason once its deliveries are spent.
//!
//! Two ways lead there. A worker that holds the job's last delivery and fails records
//! it itself ([`end`]). A worker that dies on the last delivery (killed, out of memory)
//! records nothing; JetStream then publishes a max-deliveries advisory, which the
//! `DEAD_UPLOADS` stream keeps and every ingest worker reads through one shared durable
//! consumer ([`follow_dead_letters`]), so each such upload ends once, even when no
//! worker was running at the time.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use cauce_nats::dead::{DeadLetter, DeadReason};
use cauce_nats::names;
use cauce_nats::uploads::{Stored, Uploads};
use cauce_nats::wire::{UploadJob, UploadRecord, UploadState};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::Result;

/// The record of `job`'s document, if it still asks for that job (no newer upload or
/// delete replaced it).
pub(crate) async fn wanted(uploads: &Uploads, job: &UploadJob) -> Result<Option<Stored>> {
    let Some(read) = uploads.get(job.id()).await? else {
        return Ok(None);
    };
    let record = &read.record;
    let wanted = match job {
        UploadJob::Convert { upload, .. } => {
            record.state == UploadState::Queued && &record.upload == upload
        }
        UploadJob::Delete { .. } => record.state == UploadState::Deleting,
    };
    Ok(wanted.then_some(read))
}

/// Records why an attempt failed on a record that waits for the next one.
pub(crate) async fn note(uploads: &Uploads, job: &UploadJob, reason: &str) {
    let written = write(uploads, job, |record| {
        record.reason = Some(reason.to_string());
    })
    .await;
    if let Err(err) = written {
        warn!(doc_id = %job.id(), error = %err, "recording a failed attempt failed");
    }
}

/// Ends an upload whose job was given up on: a conversion as `failed`; a delete as
/// still `deleting`, both with `reason` and what to do.
pub(crate) async fn end(uploads: &Uploads, job: &UploadJob, reason: &str) {
    if let Err(err) = end_with(uploads, job, |_| reason.to_string()).await {
        warn!(doc_id = %job.id(), error = %err, "recording a failed upload job failed");
    }
}

async fn end_with(
    uploads: &Uploads,
    job: &UploadJob,
    reason: impl FnOnce(&UploadRecord) -> String,
) -> Result<()> {
    write(uploads, job, |record| {
        let why = reason(record);
        record.reason = Some(match job {
            UploadJob::Convert { .. } => {
                record.state = UploadState::Failed;
                format!("{why}; upload it again")
            }
            UploadJob::Delete { .. } => format!("{why}; delete it again"),
        });
    })
    .await
}

/// Changes the record of `job` with `change`, if it still asks for that job; a record
/// changed meanwhile by another writer is left alone.
async fn write(
    uploads: &Uploads,
    job: &UploadJob,
    change: impl FnOnce(&mut UploadRecord),
) -> Result<()> {
    let Some(read) = wanted(uploads, job).await? else {
        return Ok(());
    };
    let mut record = read.record.clone();
    change(&mut record);
    uploads.finish(&read, &record).await?;
    Ok(())
}

/// Why an upload whose job became a dead letter failed: the last attempt's reason, or
/// that its worker stopped mid-way.
fn dead_reason(dead: &DeadLetter, record: &UploadRecord) -> String {
    let given_up = match &dead.reason {
        DeadReason::MaxDeliveries { deliveries } => {
            format!("the ingest workers gave it up after {deliveries} attempts")
        }
        DeadReason::Terminated { .. } => "an ingest worker gave it up".to_string(),
    };
    match &record.reason {
        Some(last) => format!("{given_up}; the last one failed: {last}"),
        None if record.attempts == 0 => format!(
            "{given_up}; each worker that took it stopped before it could start (crashed \
             or killed)"
        ),
        None => format!(
            "{given_up}; attempt {} stopped before it ended (its worker crashed, was killed \
             or ran out of memory while converting the file)",
            record.attempts
        ),
    }
}

/// Ends the uploads whose jobs JetStream gave up on, until `cancel` fires.
pub(crate) async fn follow_dead_letters(
    js: jetstream::Context,
    uploads: Uploads,
    cancel: CancellationToken,
) {
    let (stream, consumer) = (names::DEAD_UPLOADS, names::DEAD_UPLOADS_CONSUMER);
    cauce_nats::dead::follow(&js, stream, consumer, &cancel, |message| {
        handle(&uploads, message)
    })
    .await;
}

async fn handle(uploads: &Uploads, message: jetstream::Message) {
    let ack = match end_dead(uploads, &message).await {
        Ok(()) => AckKind::Ack,
        Err(err) => {
            warn!(subject = %message.subject, error = %err, "upload dead letter not handled yet");
            AckKind::Nak(Some(Duration::from_secs(1)))
        }
    };
    if let Err(err) = message.ack_with(ack).await {
        debug!(error = %err, "upload dead letter ack");
    }
}

/// Fails the upload a dead letter points at, if its record still asks for that job; an
/// advisory that cannot be read, or whose job aged out, is logged and dropped.
async fn end_dead(uploads: &Uploads, message: &jetstream::Message) -> Result<()> {
    let dead = match DeadLetter::parse(&message.subject, &message.payload) {
        Ok(dead) => dead,
        Err(err) => {
            warn!(error = %err, "unreadable upload dead letter dropped");
            return Ok(());
        }
    };
    let Some(job) = uploads.job_at(dead.stream_seq).await? else {
        warn!(
            seq = dead.stream_seq,
            "an upload dead letter's job is gone or unreadable"
        );
        return Ok(());
    };
    info!(doc_id = %job.id(), reason = %dead.reason, "upload job given up on: the upload ends");
    end_with(uploads, &job, |record| dead_reason(&dead, record)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use cauce_nats::{Collection, DocId};

    #[test]
    fn a_dead_upload_says_how_its_last_attempt_ended() {
        let mut record = UploadRecord {
            id: DocId::parse("up-a-pdf").unwrap(),
            collection: Collection::default(),
            file_name: "a.pdf".into(),
            content_type: "application/pdf".into(),
            size: 1,
            upload: "n".into(),
            state: UploadState::Queued,
            attempts: 5,
            reason: None,
            title: None,
            passages: 0,
            docs_seq: None,
            uploaded_at_ms: 0,
            updated_at_ms: 0,
        };
        let dead = DeadLetter {
            stream: names::UPLOADS.into(),
            consumer: names::INGEST_CONSUMER.into(),
            stream_seq: 3,
            reason: DeadReason::MaxDeliveries { deliveries: 5 },
            timestamp: String::new(),
        };
        let died = dead_reason(&dead, &record);
        assert!(died.contains("after 5 attempts"), "{died}");
        assert!(died.contains("attempt 5 stopped before it ended"), "{died}");
        record.reason = Some("attempt 5 of 5 failed: no NATS".into());
        let failed = dead_reason(&dead, &record);
        assert!(
            failed.ends_with("the last one failed: attempt 5 of 5 failed: no NATS"),
            "{failed}"
        );
    }
}
