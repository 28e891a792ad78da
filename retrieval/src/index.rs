//! The local tantivy index: opening it (or rebuilding it when it is missing, corrupt,
//! of another language or schema, or built from another `DOCS` stream), applying
//! batches of `DOCS` records, and committing them together with the last applied
//! stream sequence.
//!
//! The sequence lives in the commit payload of tantivy's `meta.json`, beside the
//! segments, so the index and the sequence it reflects are written by the same atomic
//! rename: after a crash the index never claims records it does not hold, nor holds
//! records it does not claim. Every method here blocks; the follower calls them on
//! `spawn_blocking`, and only the follower holds the [`IndexWriter`].

use std::path::{Path, PathBuf};

use cauce_nats::wire::{self, DocRecord, Document};
use cauce_nats::{DocId, names};
use serde::{Deserialize, Serialize};
use tantivy::schema::Term;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::schema::{self, Fields, Language, SCHEMA_VERSION};

/// Memory the index writer may buffer before it flushes a segment.
const WRITER_MEMORY_BYTES: usize = 64 * 1024 * 1024;

/// What the commit payload records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexState {
    /// The last `DOCS` stream sequence applied; 0 for none.
    pub docs_seq: u64,
    /// Creation time of the `DOCS` stream the index was built from, in Unix nanoseconds.
    pub stream_created: String,
    pub language: String,
    pub schema: u32,
}

/// One `DOCS` message to apply.
#[derive(Clone, Debug)]
pub struct DocsMessage {
    pub seq: u64,
    pub subject: String,
    pub payload: bytes::Bytes,
}

/// An opened index: the reader searches, the writer belongs to whoever applies records.
pub struct LocalIndex {
    pub(crate) reader: IndexReader,
    pub(crate) fields: Fields,
    pub(crate) language: Language,
    writer: IndexWriter,
    state: IndexState,
}

impl LocalIndex {
    /// Opens the index in `dir` if it was built from the same stream with the same
    /// language and schema; otherwise clears `dir` and creates an empty one.
    /// An index claiming a sequence past `stream_last_seq` was built from an older
    /// stream of the same name and is rebuilt too.
    pub fn open_or_rebuild(
        dir: &Path,
        language: Language,
        stream_created: &str,
        stream_last_seq: u64,
    ) -> Result<Self> {
        let wanted = IndexState {
            docs_seq: 0,
            stream_created: stream_created.to_string(),
            language: language.as_str().to_string(),
            schema: SCHEMA_VERSION,
        };
        match Self::open(dir, language) {
            Ok(Some(opened))
                if same_origin(&opened.state, &wanted)
                    && opened.state.docs_seq <= stream_last_seq =>
            {
                info!(index = %dir.display(), docs_seq = opened.state.docs_seq, "index opened");
                return Ok(opened);
            }
            Ok(Some(opened)) => warn!(
                index = %dir.display(), found = ?opened.state, wanted = ?wanted,
                "index was built from another stream, language or schema, rebuilding from DOCS"
            ),
            Ok(None) => info!(index = %dir.display(), "no index yet, building it from DOCS"),
            Err(err) => warn!(
                index = %dir.display(), error = %err, kind = err.kind(),
                "index is corrupt, rebuilding from DOCS"
            ),
        }
        Self::create(dir, language, wanted)
    }

    fn open(dir: &Path, language: Language) -> Result<Option<Self>> {
        if !dir.join("meta.json").exists() {
            return Ok(None);
        }
        let index = Index::open_in_dir(dir).map_err(Error::index("open"))?;
        let metas = index.load_metas().map_err(Error::index("read metadata"))?;
        let state: IndexState = match metas.payload.as_deref().map(serde_json::from_str) {
            Some(Ok(state)) => state,
            _ => {
                let reason = "meta.json has no readable cauce payload".to_string();
                return Err(Error::Index {
                    action: "read state",
                    source: tantivy::TantivyError::InternalError(reason),
                });
            }
        };
        let Some(fields) = Fields::of(&index.schema()) else {
            let reason = "schema lacks a cauce field".to_string();
            return Err(Error::Index {
                action: "read schema",
                source: tantivy::TantivyError::SchemaError(reason),
            });
        };
        Self::finish_open(index, fields, language, state).map(Some)
    }

    fn create(dir: &Path, language: Language, state: IndexState) -> Result<Self> {
        let dir_error = |source| Error::Directory {
            path: dir.to_path_buf(),
            source,
        };
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(dir_error)?;
        }
        std::fs::create_dir_all(dir).map_err(dir_error)?;
        let index =
            Index::create_in_dir(dir, schema::schema(language)).map_err(Error::index("create"))?;
        let fields = Fields::of(&index.schema()).expect("the schema just built has every field");
        let mut opened = Self::finish_open(index, fields, language, state)?;
        // an empty commit records the payload, so a crash before the first batch still
        // leaves an index that says where it came from
        opened.commit()?;
        Ok(opened)
    }

    fn finish_open(
        index: Index,
        fields: Fields,
        language: Language,
        state: IndexState,
    ) -> Result<Self> {
        schema::register_analyzer(&index, language);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(Error::index("open reader"))?;
        let writer = index
            .writer(WRITER_MEMORY_BYTES)
            .map_err(Error::index("open writer"))?;
        Ok(Self {
            reader,
            fields,
            language,
            writer,
            state,
        })
    }

    /// The last applied `DOCS` sequence (0 for none).
    pub fn docs_seq(&self) -> u64 {
        self.state.docs_seq
    }

    /// A handle for searching, cheap to clone, seeing each commit once reloaded.
    pub fn reader(&self) -> IndexReader {
        self.reader.clone()
    }

    /// Applies `batch` in order and commits it. Returns how many records were applied.
    /// A payload that does not decode is logged and skipped: it must not stop the
    /// index from following the stream. When adding or committing fails (a full disk, a
    /// tantivy error) nothing of the batch stays: the index is where it was, and the
    /// batch can be applied again.
    pub fn apply(&mut self, batch: &[DocsMessage]) -> Result<u64> {
        let committed = self.state.docs_seq;
        let applied = self.apply_and_commit(batch);
        if applied.is_err() {
            self.state.docs_seq = committed;
            if let Err(err) = self.writer.rollback() {
                warn!(error = %err, "rolling back a failed index batch failed");
            }
        }
        applied
    }

    /// Empties the index, to be filled from `DOCS` again from its first sequence. When
    /// that cannot be committed the index stays as it was.
    pub fn clear(&mut self) -> Result<()> {
        let committed = self.state.docs_seq;
        let cleared = self
            .writer
            .delete_all_documents()
            .map_err(Error::index("clear"))
            .and_then(|_| {
                self.state.docs_seq = 0;
                self.commit()
            });
        if cleared.is_err() {
            self.state.docs_seq = committed;
            if let Err(err) = self.writer.rollback() {
                warn!(error = %err, "rolling back a failed clear failed");
            }
        }
        cleared
    }

    fn apply_and_commit(&mut self, batch: &[DocsMessage]) -> Result<u64> {
        let mut applied = 0;
        for message in batch {
            if message.seq <= self.state.docs_seq {
                continue;
            }
            self.state.docs_seq = message.seq;
            let Some(id) = names::doc_id_from_subject(&message.subject) else {
                warn!(subject = %message.subject, seq = message.seq, "not a document subject, skipped");
                continue;
            };
            let record = match wire::decode_compressed::<DocRecord>(&message.payload) {
                Ok(record) => record,
                Err(err) => {
                    warn!(doc_id = %id, seq = message.seq, error = %err, kind = err.kind(), "undecodable document, skipped");
                    continue;
                }
            };
            self.writer
                .delete_term(Term::from_field_text(self.fields.doc_id, id.as_str()));
            if let DocRecord::Document(document) = record {
                self.add(&id, &document)?;
            }
            applied += 1;
        }
        self.commit()?;
        Ok(applied)
    }

    fn add(&mut self, id: &DocId, document: &Document) -> Result<()> {
        if document.id != *id {
            warn!(doc_id = %id, record_id = %document.id, "document id differs from its subject, using the subject");
        }
        let f = self.fields;
        for (ord, passage) in document.passages.iter().enumerate() {
            let mut doc = TantivyDocument::default();
            doc.add_text(f.doc_id, id.as_str());
            doc.add_text(f.collection, document.collection.as_str());
            doc.add_text(f.version, &document.version);
            doc.add_text(f.title, &document.title);
            for heading in &passage.heading_path {
                doc.add_text(f.headings, heading);
            }
            let location = match &passage.anchor {
                Some(anchor) => format!("{}#{anchor}", document.location),
                None => document.location.clone(),
            };
            doc.add_text(f.location, &location);
            doc.add_text(f.text, &passage.text);
            doc.add_u64(f.ord, ord as u64);
            self.writer
                .add_document(doc)
                .map_err(Error::index("add document"))?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        let payload = serde_json::to_string(&self.state).expect("the state serializes");
        let mut prepared = self
            .writer
            .prepare_commit()
            .map_err(Error::index("prepare commit"))?;
        prepared.set_payload(&payload);
        prepared.commit().map_err(Error::index("commit"))?;
        self.reader.reload().map_err(Error::index("reload reader"))
    }
}

fn same_origin(found: &IndexState, wanted: &IndexState) -> bool {
    found.stream_created == wanted.stream_created
        && found.language == wanted.language
        && found.schema == wanted.schema
}

/// The default place of the index of `language` under the cauce home directory.
pub fn default_dir(home: &Path, language: Language) -> PathBuf {
    home.join("index").join(language.as_str())
}
