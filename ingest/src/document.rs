//! From one file to one `DocRecord::Document`: read, extract by format, chunk, hash
//! the content into a version, and compress for the wire. Blocking work: callers run
//! it on `spawn_blocking`.

use bytes::Bytes;
use cauce_nats::Collection;
use cauce_nats::wire::{self, DocPassage, DocRecord, Document};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::chunk::{self, ChunkOptions};
use crate::extract::{self, Extracted, Refusal};
use crate::sandbox::Reader;
use crate::source::{Format, SourceFile};
use crate::{docx, epub, html, markdown, pdf};

/// A file read and ready to publish.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub file: SourceFile,
    /// Bytes read from disk.
    pub source_bytes: usize,
    pub outcome: Outcome,
}

#[derive(Debug)]
pub(crate) enum Outcome {
    Document {
        document: Document,
        payload: Bytes,
    },
    NoText,
    Unreadable(std::io::Error),
    /// A PDF or DOCX that gave no document, and why.
    Refused(Refusal),
}

/// Reads, extracts, chunks and encodes one file. What a reader logs names the file.
pub(crate) fn prepare(
    file: SourceFile,
    collection: Collection,
    options: ChunkOptions,
    reader: &Reader,
) -> Prepared {
    match std::fs::read(&file.path) {
        Ok(raw) => prepare_bytes(file, &raw, collection, options, reader),
        Err(err) => Prepared {
            file,
            source_bytes: 0,
            outcome: Outcome::Unreadable(err),
        },
    }
}

/// Extracts, chunks and encodes the bytes of one file (read from disk, or uploaded).
pub(crate) fn prepare_bytes(
    file: SourceFile,
    raw: &[u8],
    collection: Collection,
    options: ChunkOptions,
    reader: &Reader,
) -> Prepared {
    let _file = tracing::info_span!("file", path = %file.path.display()).entered();
    let source_bytes = raw.len();
    let extracted = match reader.read(file.format, raw) {
        Ok(extracted) => extracted,
        Err(refusal) => {
            return Prepared {
                file,
                source_bytes,
                outcome: Outcome::Refused(refusal),
            };
        }
    };
    let outcome = match build(&file, collection, extracted, options) {
        Some(document) => match wire::encode_compressed(&DocRecord::Document(document.clone())) {
            Ok(payload) => Outcome::Document { document, payload },
            Err(err) => Outcome::Unreadable(std::io::Error::other(err)),
        },
        None => Outcome::NoText,
    };
    Prepared {
        file,
        source_bytes,
        outcome,
    }
}

/// What the reader of `format` finds in `raw`, in this process: only for trusted bytes
/// and inside the sandbox (see [`crate::sandbox`]).
pub(crate) fn read(format: Format, raw: &[u8]) -> Result<Extracted, Refusal> {
    let text = || String::from_utf8_lossy(raw);
    Ok(match format {
        Format::Markdown => markdown::extract(&text()),
        Format::Text => extract::plain_text(&text()),
        Format::Html => html::extract(&text()),
        Format::Pdf => pdf::extract(raw)?,
        Format::Docx => docx::extract(raw)?,
        Format::Epub => epub::extract(raw)?,
    })
}

fn build(
    file: &SourceFile,
    collection: Collection,
    extracted: Extracted,
    options: ChunkOptions,
) -> Option<Document> {
    let passages = chunk::passages(&extracted.sections, options);
    if passages.is_empty() {
        return None;
    }
    let title = extracted.title.unwrap_or_else(|| {
        file.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let location = file.location.clone();
    let version = content_version(&collection, &title, &location, &passages);
    Some(Document {
        id: file.id.clone(),
        collection,
        version,
        title,
        location,
        passages,
        published_at_ms: wire::now_ms(),
    })
}

/// SHA-256 of what a reader sees of the document, as 32 hex digits: the same content
/// always gets the same version, and a change anywhere (text, headings, title,
/// location, chunking, collection) gets a new one. The default collection is left out,
/// so documents ingested before collections keep their versions.
pub(crate) fn content_version(
    collection: &Collection,
    title: &str,
    location: &str,
    passages: &[DocPassage],
) -> String {
    let mut canonical = json!({ "title": title, "location": location, "passages": passages });
    if !collection.is_default() {
        canonical["collection"] = json!(collection);
    }
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_follows_content_only() {
        let passage = |text: &str| DocPassage {
            heading_path: vec![],
            anchor: None,
            text: text.into(),
        };
        let default = Collection::default();
        let version = |title, text| content_version(&default, title, "a.md", &[passage(text)]);
        let a = version("T", "one");
        assert_eq!(a, version("T", "one"));
        assert_ne!(a, version("T", "two"));
        assert_ne!(a, version("U", "one"));
        let physics = Collection::parse("physics").unwrap();
        assert_ne!(a, content_version(&physics, "T", "a.md", &[passage("one")]));
        assert_eq!(a.len(), 32);
    }
}
