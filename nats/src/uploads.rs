//! Uploaded documents, from the gateway to the ingest workers and back.
//!
//! - The gateway stores the raw file in the object store [`names::UPLOADS_BUCKET`] under
//!   a name of its own (`<doc id>/<upload id>`, so that a re-upload never touches the
//!   bytes an older job may still read), writes the document's [`UploadRecord`] in
//!   [`names::DOCUMENTS_BUCKET`] as `queued` naming that upload (a compare-and-set), drops
//!   the file of the upload it replaced, and publishes an [`UploadJob`] on
//!   [`names::UPLOADS`]. A delete marks the record `deleting` and queues a delete job.
//! - An ingest worker (`cauce ingest --follow`) pulls the job from the shared consumer
//!   [`names::INGEST_CONSUMER`], converts the file with the same readers as a folder
//!   ingest, publishes it to `DOCS` and records `converted` with the `DOCS` sequence (or
//!   `failed` with the reason). Every write of an ingest worker is a compare-and-set on
//!   the revision it read, so a job made stale by a newer upload or a delete changes
//!   nothing.
//! - The gateway reports `indexed` once every retrieval worker has applied that
//!   sequence ([`is_indexed`]).
//!
//! The file stays in the object store, served by the gateway at [`content_location`],
//! which is the location of the document's sources (a PDF's `#page=N` opens there).

use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::object_store::{self, ObjectStore};
use async_nats::jetstream::{self};
use bytes::Bytes;
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};
use crate::ids::{Collection, DocId, slug};
use crate::names;
use crate::wire::{self, UploadJob, UploadRecord, UploadState};

/// How long a publish of a job may wait for JetStream's ack.
const ACK_WAIT: Duration = Duration::from_secs(10);
/// How long reading one stored file may take: a file whose chunks are purged while it is
/// read (a re-upload, a delete) would otherwise keep the reader waiting.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Compare-and-set rounds lost to other writers before a write gives up.
const MAX_RACES: usize = 16;
/// The readable part of a document id at most (a slug is ASCII).
const MAX_READABLE: usize = 120;
/// Length of an upload id: 22 alphanumeric characters, about 131 bits.
const UPLOAD_ID_LEN: usize = 22;

/// The file types an upload may have: extension, content type served back.
pub const TYPES: &[(&str, &str)] = &[
    ("pdf", "application/pdf"),
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    ("epub", "application/epub+zip"),
    ("md", "text/markdown; charset=utf-8"),
    ("markdown", "text/markdown; charset=utf-8"),
    ("txt", "text/plain; charset=utf-8"),
    ("html", "text/html; charset=utf-8"),
    ("htm", "text/html; charset=utf-8"),
];

/// The content type of an accepted file name, by its extension.
pub fn content_type(file_name: &str) -> Option<&'static str> {
    let (_, ext) = file_name.rsplit_once('.')?;
    let ext = ext.to_ascii_lowercase();
    TYPES.iter().find(|(e, _)| *e == ext).map(|(_, t)| *t)
}

/// Why `bytes` are not what the name `file_name` says (a `.pdf` that is no PDF), if so.
pub fn mismatch(file_name: &str, bytes: &[u8]) -> Option<String> {
    let ext = file_name.rsplit_once('.')?.1.to_ascii_lowercase();
    let head = &bytes[..bytes.len().min(1024)];
    let ok = match ext.as_str() {
        "pdf" => head.windows(5).any(|w| w == b"%PDF-"),
        "docx" | "epub" => bytes.starts_with(b"PK\x03\x04"),
        _ => !head.contains(&0),
    };
    (!ok).then(|| match ext.as_str() {
        "pdf" => format!("{file_name} is named .pdf but is not a PDF (no %PDF- header)"),
        "docx" | "epub" => format!("{file_name} is named .{ext} but is not a zip archive"),
        _ => format!("{file_name} is named .{ext} but holds binary data, not text"),
    })
}

/// The id of an uploaded file, exact: only the same collection and the same file name,
/// byte for byte, give the same id, so uploading a name again replaces that document
/// and nothing else. A readable slug (`up-week-2-pdf`, after `<collection>-` outside
/// the default collection), then 16 hex digits of SHA-256 over the collection and the
/// exact name, which tell `Report 2024.pdf` from `report-2024.PDF`.
pub fn document_id(collection: &Collection, file_name: &str) -> DocId {
    let exact = Sha256::digest(format!("{collection}\n{file_name}").as_bytes());
    let hash: String = exact.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let readable = legacy_document_id(collection, file_name);
    let readable =
        readable.as_str()[..readable.as_str().len().min(MAX_READABLE)].trim_end_matches('-');
    DocId::parse(format!("{readable}-{hash}")).expect("a slug and hex digits are a valid id")
}

/// The id uploads had before ids were exact: the slug alone, which folds case, dots
/// and spaces. A document stored under it stays searchable and deletable by it; the
/// next upload of its exact collection and name replaces it ([`Uploads::upload`]).
pub fn legacy_document_id(collection: &Collection, file_name: &str) -> DocId {
    let scoped = if collection.is_default() {
        format!("up-{file_name}")
    } else {
        format!("{collection}-up-{file_name}")
    };
    DocId::parse(slug(&scoped)).expect("a slug is a valid document id")
}

/// Where the gateway serves an uploaded document's original file: the location of its
/// sources.
pub fn content_location(id: &DocId) -> String {
    format!("/v1/documents/{id}/content")
}

/// The object holding the bytes of one upload of a document.
fn object_name(id: &DocId, upload: &str) -> String {
    format!("{id}/{upload}")
}

fn new_upload_id() -> String {
    crate::ids::random_alphanumeric(UPLOAD_ID_LEN)
}

/// Whether every retrieval worker (their applied `DOCS` sequences) can search `record`.
pub fn is_indexed(record: &UploadRecord, applied: &[u64]) -> bool {
    match (record.state, record.docs_seq) {
        (UploadState::Converted, Some(seq)) => {
            !applied.is_empty() && applied.iter().all(|&at| at >= seq)
        }
        _ => false,
    }
}

/// A file to upload.
pub struct NewUpload {
    pub collection: Collection,
    pub file_name: String,
    pub content_type: String,
    pub bytes: Bytes,
}

/// A record as stored, with the revision a compare-and-set writes against.
#[derive(Clone, Debug)]
pub struct Stored {
    pub record: UploadRecord,
    pub revision: u64,
}

/// The handles both sides use.
#[derive(Clone)]
pub struct Uploads {
    js: jetstream::Context,
    files: ObjectStore,
    records: kv::Store,
}

impl Uploads {
    pub async fn open(js: &jetstream::Context) -> Result<Self> {
        let files = js
            .get_object_store(names::UPLOADS_BUCKET)
            .await
            .map_err(|e| {
                Error::jetstream("open", format!("object store {}", names::UPLOADS_BUCKET), e)
            })?;
        let records = js
            .get_key_value(names::DOCUMENTS_BUCKET)
            .await
            .map_err(|e| {
                Error::jetstream("open", format!("bucket {}", names::DOCUMENTS_BUCKET), e)
            })?;
        Ok(Self {
            js: js.clone(),
            files,
            records,
        })
    }

    /// Stores the file, records it as queued and queues its conversion (gateway). The
    /// file of the upload it replaces is dropped.
    pub async fn upload(&self, upload: NewUpload) -> Result<UploadRecord> {
        let id = document_id(&upload.collection, &upload.file_name);
        let upload_id = new_upload_id();
        let meta = object_store::ObjectMetadata {
            name: object_name(&id, &upload_id),
            description: Some(upload.file_name.clone()),
            ..Default::default()
        };
        self.files
            .put(meta, &mut upload.bytes.as_ref())
            .await
            .map_err(|e| Error::jetstream("put", format!("object {id}"), e))?;
        let now = wire::now_ms();
        let record = UploadRecord {
            id: id.clone(),
            collection: upload.collection,
            file_name: upload.file_name,
            content_type: upload.content_type,
            size: upload.bytes.len() as u64,
            upload: upload_id,
            state: UploadState::Queued,
            attempts: 0,
            reason: None,
            title: None,
            passages: 0,
            docs_seq: None,
            uploaded_at_ms: now,
            updated_at_ms: now,
        };
        let replaced = self.replace(&record).await?;
        let job = UploadJob::Convert {
            id: id.clone(),
            upload: record.upload.clone(),
        };
        self.queue(&job, &record.upload).await?;
        if let Some(old) = replaced {
            self.drop_file(&old).await;
        }
        self.retire_legacy(&record).await;
        Ok(record)
    }

    /// Deletes the document an older build stored under the folded id of `record`'s
    /// exact collection and name, as an upload of that name replaced it then. A failure
    /// is logged: the old document stays, deletable by its id.
    async fn retire_legacy(&self, record: &UploadRecord) {
        let legacy = legacy_document_id(&record.collection, &record.file_name);
        let same = |old: &UploadRecord| {
            old.collection == record.collection
                && old.file_name == record.file_name
                && old.state != UploadState::Deleting
        };
        let retired = match self.get(&legacy).await {
            Ok(Some(stored)) if same(&stored.record) => self.delete(&legacy).await.map(|_| true),
            Ok(_) => Ok(false),
            Err(err) => Err(err),
        };
        match retired {
            Ok(true) => {
                tracing::info!(old = %legacy, new = %record.id, "replaced a document stored under its folded id")
            }
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(old = %legacy, error = %err, "cannot delete a document stored under its folded id")
            }
        }
    }

    /// Writes `record` over whatever the document's record holds (a compare-and-set, so
    /// two uploads at once leave one of them recorded, never a mix); returns what it
    /// replaced.
    async fn replace(&self, record: &UploadRecord) -> Result<Option<UploadRecord>> {
        let id = &record.id;
        let value = wire::encode(record)?;
        let object = || format!("document record {id}");
        for _ in 0..MAX_RACES {
            let current = self.get(id).await?;
            let written: std::result::Result<(), (bool, async_nats::Error)> = match &current {
                None => self
                    .records
                    .create(id.as_str(), value.clone())
                    .await
                    .map(drop)
                    .map_err(|e| (e.kind() == kv::CreateErrorKind::AlreadyExists, e.into())),
                Some(stored) => self
                    .records
                    .update(id.as_str(), value.clone(), stored.revision)
                    .await
                    .map(drop)
                    .map_err(|e| (e.kind() == kv::UpdateErrorKind::WrongLastRevision, e.into())),
            };
            match written {
                Ok(()) => return Ok(current.map(|stored| stored.record)),
                Err((true, _)) => continue,
                Err((false, e)) => return Err(Error::jetstream("put", object(), e)),
            }
        }
        Err(Error::jetstream(
            "put",
            object(),
            format!("lost {MAX_RACES} races with other writers of the record"),
        ))
    }

    /// Drops the stored file of an upload that is no longer recorded; a file left over
    /// only takes room, so a failure is logged, not returned.
    async fn drop_file(&self, old: &UploadRecord) {
        let name = object_name(&old.id, &old.upload);
        match self.files.delete(&name).await {
            Ok(()) => {}
            Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(object = %name, error = %e, "cannot drop a replaced upload's file")
            }
        }
    }

    /// Marks an uploaded document as being deleted and queues its delete (gateway).
    /// `None` when no uploaded document has this id.
    pub async fn delete(&self, id: &DocId) -> Result<Option<UploadRecord>> {
        let Some(stored) = self.get(id).await? else {
            return Ok(None);
        };
        let mut record = stored.record;
        record.state = UploadState::Deleting;
        record.updated_at_ms = wire::now_ms();
        self.records
            .update(id.as_str(), wire::encode(&record)?, stored.revision)
            .await
            .map_err(|e| Error::jetstream("update", format!("document record {id}"), e))?;
        let job = UploadJob::Delete { id: id.clone() };
        self.queue(&job, &format!("delete-{}", stored.revision))
            .await?;
        // the gateway drops the file: an ingest worker may only read files
        self.drop_file(&record).await;
        Ok(Some(record))
    }

    async fn queue(&self, job: &UploadJob, message_id: &str) -> Result<()> {
        let subject = names::upload_subject(job.id());
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{}-{message_id}", job.id()).as_str(),
        );
        let payload = wire::encode(job)?;
        let ack = crate::until_acked(ACK_WAIT, "upload job", || {
            let (subject, headers, payload) = (subject.clone(), headers.clone(), payload.clone());
            async move {
                let ack = self
                    .js
                    .publish_with_headers(subject, headers, payload)
                    .await?;
                ack.await.map(drop)
            }
        })
        .await;
        ack.map(drop)
            .map_err(|e| Error::jetstream("publish", subject.clone(), e))
    }

    /// The record of one uploaded document, with its revision.
    pub async fn get(&self, id: &DocId) -> Result<Option<Stored>> {
        let entry = self
            .records
            .entry(id.as_str())
            .await
            .map_err(|e| Error::jetstream("get", format!("document record {id}"), e))?;
        match entry {
            Some(entry) if entry.operation == Operation::Put => Ok(Some(Stored {
                record: wire::decode(&entry.value)?,
                revision: entry.revision,
            })),
            _ => Ok(None),
        }
    }

    /// Every uploaded document's record, by id.
    pub async fn list(&self) -> Result<Vec<UploadRecord>> {
        let object = || format!("bucket {}", names::DOCUMENTS_BUCKET);
        let keys: Vec<String> = match self.records.keys().await {
            Ok(keys) => keys
                .try_collect()
                .await
                .map_err(|e| Error::jetstream("list keys", object(), e))?,
            Err(e) => return Err(Error::jetstream("list keys", object(), e)),
        };
        let mut records = Vec::with_capacity(keys.len());
        for key in keys {
            if let Ok(id) = DocId::parse(key)
                && let Some(stored) = self.get(&id).await?
            {
                records.push(stored.record);
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    /// The stored file of the upload `record` names, to stream back; `None` when it is
    /// gone.
    pub async fn file(&self, record: &UploadRecord) -> Result<Option<object_store::Object>> {
        let name = object_name(&record.id, &record.upload);
        match self.files.get(&name).await {
            Ok(object) => Ok(Some(object)),
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::jetstream("get", format!("object {name}"), e)),
        }
    }

    /// The whole stored file of the upload `record` names (ingest), or `None` when it is
    /// gone.
    pub async fn read(&self, record: &UploadRecord) -> Result<Option<Vec<u8>>> {
        let Some(mut object) = self.file(record).await? else {
            return Ok(None);
        };
        let name = object_name(&record.id, &record.upload);
        let mut bytes = Vec::with_capacity(object.info.size);
        match tokio::time::timeout(READ_TIMEOUT, object.read_to_end(&mut bytes)).await {
            Ok(Ok(_)) => Ok(Some(bytes)),
            Ok(Err(e)) => Err(Error::jetstream("read", format!("object {name}"), e)),
            Err(_) => Err(Error::jetstream(
                "read",
                format!("object {name}"),
                format!("not read within {} s", READ_TIMEOUT.as_secs()),
            )),
        }
    }

    /// Records the start of conversion attempt `attempt` (ingest), before the file is
    /// read, clearing the reason the one before failed; the record as written, or `None`
    /// when it changed since `read`.
    pub async fn begin_attempt(&self, read: &Stored, attempt: u32) -> Result<Option<Stored>> {
        let mut record = read.record.clone();
        record.attempts = attempt.max(record.attempts);
        record.reason = None;
        record.updated_at_ms = wire::now_ms();
        self.write_over(read, record).await
    }

    /// The upload job at `seq` in `UPLOADS` (a dead letter names it so), or `None` when
    /// it aged out or cannot be read.
    pub async fn job_at(&self, seq: u64) -> Result<Option<UploadJob>> {
        let object = || format!("stream {}", names::UPLOADS);
        let stream = self
            .js
            .get_stream_no_info(names::UPLOADS)
            .await
            .map_err(|e| Error::jetstream("lookup", object(), e))?;
        match stream.get_raw_message(seq).await {
            Ok(message) => Ok(wire::decode(&message.payload).ok()),
            Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                Ok(None)
            }
            Err(e) => Err(Error::jetstream(
                "get",
                format!("message {seq} of {}", object()),
                e,
            )),
        }
    }

    /// Writes what became of a job (ingest), unless the record changed since it was
    /// read; returns whether it was written.
    pub async fn finish(&self, read: &Stored, record: &UploadRecord) -> Result<bool> {
        let mut record = record.clone();
        record.updated_at_ms = wire::now_ms();
        Ok(self.write_over(read, record).await?.is_some())
    }

    /// Writes `record` over the revision `read`; the record as written, or `None` when
    /// another writer changed it since.
    async fn write_over(&self, read: &Stored, record: UploadRecord) -> Result<Option<Stored>> {
        let written = self
            .records
            .update(record.id.as_str(), wire::encode(&record)?, read.revision)
            .await;
        match written {
            Ok(revision) => Ok(Some(Stored { record, revision })),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(Error::jetstream(
                "update",
                format!("document record {}", record.id),
                e,
            )),
        }
    }

    /// Drops a deleted document's record (ingest), once `DOCS` has its tombstone. A
    /// record changed since `read` (uploaded again) stays. The gateway dropped the file
    /// when it queued the delete.
    pub async fn forget(&self, read: &Stored) -> Result<()> {
        let id = &read.record.id;
        match self
            .records
            .delete_expect_revision(id.as_str(), Some(read.revision))
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => return Ok(()),
            Err(e) => {
                return Err(Error::jetstream(
                    "delete",
                    format!("document record {id}"),
                    e,
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_types_and_contents_are_checked() {
        let physics = Collection::parse("physics-101").unwrap();
        let default = Collection::default();
        let week = document_id(&default, "Week 2.PDF");
        assert!(week.as_str().starts_with("up-week-2-pdf-"), "{week}");
        assert_eq!(week.as_str().len(), "up-week-2-pdf-".len() + 16);
        assert_eq!(
            week,
            document_id(&default, "Week 2.PDF"),
            "the same name, the same id"
        );
        assert_eq!(
            legacy_document_id(&default, "Week 2.PDF").as_str(),
            "up-week-2-pdf"
        );
        let notes = document_id(&physics, "notes.docx");
        assert!(
            notes.as_str().starts_with("physics-101-up-notes-docx-"),
            "{notes}"
        );
        // names the old ids folded together, and pairs whose slugs met, stay apart
        assert_ne!(
            document_id(&default, "Report 2024.pdf"),
            document_id(&default, "report-2024.PDF")
        );
        let up_physics = Collection::parse("up-physics").unwrap();
        assert_eq!(
            legacy_document_id(&default, "physics-up-notes.pdf"),
            legacy_document_id(&up_physics, "notes.pdf")
        );
        assert_ne!(
            document_id(&default, "physics-up-notes.pdf"),
            document_id(&up_physics, "notes.pdf")
        );
        let long = document_id(&physics, &"é".repeat(300));
        assert!(long.as_str().len() <= 200, "{long}");
        assert_eq!(content_type("a.Pdf"), Some("application/pdf"));
        assert_eq!(content_type("a.exe"), None);
        assert_eq!(content_type("noext"), None);
        assert!(mismatch("a.pdf", b"%PDF-1.7\n").is_none());
        assert!(mismatch("a.pdf", b"hello").unwrap().contains("not a PDF"));
        assert!(mismatch("a.docx", b"%PDF").unwrap().contains("zip"));
        assert!(mismatch("a.md", b"# hi").is_none());
        assert!(mismatch("a.txt", b"\0\0").is_some());
    }

    #[test]
    fn indexed_once_every_worker_applied_the_sequence() {
        let mut record = UploadRecord {
            id: DocId::parse("up-a-pdf").unwrap(),
            collection: Collection::default(),
            file_name: "a.pdf".into(),
            content_type: "application/pdf".into(),
            size: 1,
            upload: "n".into(),
            state: UploadState::Converted,
            attempts: 1,
            reason: None,
            title: None,
            passages: 1,
            docs_seq: Some(10),
            uploaded_at_ms: 0,
            updated_at_ms: 0,
        };
        assert!(is_indexed(&record, &[10, 12]));
        assert!(!is_indexed(&record, &[9, 12]));
        assert!(!is_indexed(&record, &[]));
        record.state = UploadState::Queued;
        assert!(!is_indexed(&record, &[12]));
    }
}
