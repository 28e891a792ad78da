//! The uploads protocol against a real nats-server: a stored file comes back whole, a
//! newer upload of the same document replaces the record and drops the older file (a
//! job of the older upload reads nothing and writes nothing), and a delete forgets the
//! record and the file.

use async_nats::jetstream;
use bytes::Bytes;
use cauce_nats::testkit::NatsServer;
use cauce_nats::uploads::{NewUpload, Uploads};
use cauce_nats::wire::{self, UploadJob, UploadState};
use cauce_nats::{Collection, Limits, apply, names};

type Result<T = ()> = std::result::Result<T, async_nats::Error>;

fn upload(bytes: &'static [u8]) -> NewUpload {
    NewUpload {
        collection: Collection::parse("physics-101").unwrap(),
        file_name: "notes.md".into(),
        content_type: "text/markdown".into(),
        bytes: Bytes::from_static(bytes),
    }
}

#[tokio::test]
async fn a_newer_upload_makes_the_older_job_stale_and_a_delete_forgets_it() -> Result {
    let nats = NatsServer::start().unwrap_or_else(|err| panic!("{err}"));
    let js = jetstream::new(nats.client().await);
    apply(&js, &Limits::default()).await?;
    let uploads = Uploads::open(&js).await?;

    let first = uploads.upload(upload(b"# one")).await?;
    let second = uploads.upload(upload(b"# two, longer")).await?;
    assert_eq!(first.id, second.id, "the same name in the same collection");
    assert_ne!(first.upload, second.upload);
    assert_eq!(second.state, UploadState::Queued);
    assert_eq!(
        uploads.read(&first).await?,
        None,
        "the replaced file is dropped"
    );
    let bytes = uploads.read(&second).await?;
    assert_eq!(bytes.as_deref(), Some(&b"# two, longer"[..]));

    // both jobs are queued; a worker that read the record before the second upload
    // cannot write over it
    let jobs = js
        .get_stream(names::UPLOADS)
        .await?
        .info()
        .await?
        .state
        .messages;
    assert_eq!(jobs, 2);
    let stale = uploads.get(&first.id).await?.unwrap();
    let mut converted = stale.record.clone();
    converted.state = UploadState::Converted;
    assert!(uploads.finish(&stale, &converted).await?);
    assert!(
        !uploads.finish(&stale, &converted).await?,
        "a stale revision writes nothing"
    );

    let deleting = uploads.delete(&first.id).await?.unwrap();
    assert_eq!(deleting.state, UploadState::Deleting);
    let last = js
        .get_stream(names::UPLOADS)
        .await?
        .get_last_raw_message_by_subject(&names::upload_subject(&first.id))
        .await?;
    let job: UploadJob = wire::decode(&last.payload)?;
    assert_eq!(
        job,
        UploadJob::Delete {
            id: first.id.clone()
        }
    );

    let read = uploads.get(&first.id).await?.unwrap();
    uploads.forget(&read).await?;
    assert!(uploads.get(&first.id).await?.is_none());
    assert!(uploads.file(&second).await?.is_none());
    assert!(uploads.list().await?.is_empty());
    assert!(uploads.delete(&first.id).await?.is_none());
    Ok(())
}
