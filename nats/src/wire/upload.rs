//! Uploaded documents: the job the gateway queues for the ingest workers, and the
//! record of each upload kept in the `cauce-documents` bucket (see [`crate::uploads`]).

use serde::{Deserialize, Serialize};

use super::Wire;
use crate::ids::{Collection, DocId};

/// Where an uploaded document stands. The gateway writes `Queued` and `Deleting`; the
/// ingest worker writes `Converted` (published to `DOCS`) or `Failed`, and removes the
/// record once a delete is done. `indexed` is not stored: the gateway reports it once
/// every retrieval worker has applied the document's `DOCS` sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadState {
    Queued,
    Converted,
    Failed,
    Deleting,
}

/// One uploaded document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub id: DocId,
    pub collection: Collection,
    /// The file name as uploaded.
    pub file_name: String,
    pub content_type: String,
    /// Bytes of the original file.
    pub size: u64,
    /// The object store's id of this upload's bytes: a job whose file was replaced by a
    /// later upload of the same document is stale and is left alone.
    pub upload: String,
    pub state: UploadState,
    /// Conversion attempts started, each recorded by the ingest worker before it
    /// converts: a record `queued` with attempts is being worked on, or its worker died.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Why it failed, and what to do; while `queued`, why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The title the reader found, once converted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default)]
    pub passages: u32,
    /// The `DOCS` stream sequence of the published document, once converted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs_seq: Option<u64>,
    pub uploaded_at_ms: u64,
    #[serde(default)]
    pub updated_at_ms: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What the ingest workers are asked to do with one document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum UploadJob {
    /// Convert the stored file (`upload` names its bytes) and publish it to `DOCS`.
    Convert { id: DocId, upload: String },
    /// Tombstone the document in `DOCS`, then forget its file and record.
    Delete { id: DocId },
}

impl UploadJob {
    pub fn id(&self) -> &DocId {
        match self {
            UploadJob::Convert { id, .. } | UploadJob::Delete { id } => id,
        }
    }
}

impl Wire for UploadRecord {
    const WHAT: &'static str = "upload record";
}

impl Wire for UploadJob {
    const WHAT: &'static str = "upload job";
}
