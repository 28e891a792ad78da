//! Documents of the corpus, as kept in the `DOCS` stream (one message per subject).

use serde::{Deserialize, Serialize};

use super::Wire;
use crate::ids::{Collection, DocId};

/// One passage of a document, split along headings and paragraphs at ingest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocPassage {
    /// Headings above the passage, outermost first.
    #[serde(default)]
    pub heading_path: Vec<String>,
    /// Anchor of the nearest heading, appended to the location as `#anchor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
    pub text: String,
}

/// The latest version of one document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub id: DocId,
    /// The collection it belongs to; records written before collections existed are in
    /// the default one.
    #[serde(default)]
    pub collection: Collection,
    /// Content hash: the same content always has the same version.
    pub version: String,
    pub title: String,
    /// File path or URL.
    pub location: String,
    pub passages: Vec<DocPassage>,
    pub published_at_ms: u64,
}

/// A document that is gone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tombstone {
    pub id: DocId,
    pub deleted_at_ms: u64,
}

/// What one `cauce.docs.<id>` message holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DocRecord {
    Document(Document),
    Tombstone(Tombstone),
}

impl DocRecord {
    pub fn id(&self) -> &DocId {
        match self {
            DocRecord::Document(doc) => &doc.id,
            DocRecord::Tombstone(tomb) => &tomb.id,
        }
    }
}

impl Wire for DocRecord {
    const WHAT: &'static str = "document";
}
