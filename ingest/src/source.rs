//! Finding the files to ingest and naming them: the format comes from the extension,
//! and the document id from the path, so the same file always has the same id.
//!
//! A folder given on the command line is walked (hidden files and folders are left
//! out); each file's id is `<prefix>-<path inside the folder, without extension>`,
//! slugged to `[a-z0-9_-]`, where the prefix is `--id-prefix` or the folder's own name.
//! A file given by itself is `<prefix>-<stem>` with `--id-prefix`, else `<stem>`.
//! Outside the default collection, every id starts with `<collection>-`.
//! Characters the slug cannot keep (non-ASCII, an over-long path) add a short hash of
//! the original path, so two different paths do not share an id.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use cauce_nats::DocId;
use cauce_nats::ids::slug;
use walkdir::WalkDir;

use crate::error::{Error, Result};
use crate::exclude::Excludes;

/// The readable formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Text,
    Html,
    Pdf,
    Docx,
    Epub,
}

impl Format {
    /// The format of a file with this extension, if cauce reads it.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "md" | "markdown" | "mdown" | "mkd" => Some(Format::Markdown),
            "txt" | "text" | "rst" => Some(Format::Text),
            "html" | "htm" | "xhtml" => Some(Format::Html),
            "pdf" => Some(Format::Pdf),
            "docx" => Some(Format::Docx),
            "epub" => Some(Format::Epub),
            _ => None,
        }
    }

    /// The name `cauce convert` takes: `markdown`, `text`, `html`, `pdf`, `docx`, `epub`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Markdown => "markdown",
            Format::Text => "text",
            Format::Html => "html",
            Format::Pdf => "pdf",
            Format::Docx => "docx",
            Format::Epub => "epub",
        }
    }

    /// The format named `name` ([`Format::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        [
            Format::Markdown,
            Format::Text,
            Format::Html,
            Format::Pdf,
            Format::Docx,
            Format::Epub,
        ]
        .into_iter()
        .find(|format| format.as_str() == name)
    }

    /// How a message to a person names its reader: "the PDF reader".
    pub fn reader_name(self) -> &'static str {
        match self {
            Format::Markdown => "Markdown",
            Format::Text => "text",
            Format::Html => "HTML",
            Format::Pdf => "PDF",
            Format::Docx => "DOCX",
            Format::Epub => "EPUB",
        }
    }
}

/// One file to read.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub id: DocId,
    pub format: Format,
    /// What readers are shown as the document's location: the path as given, or the
    /// location base joined with the path inside its folder.
    pub location: String,
}

/// Why a file was not published.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// Not Markdown, text, HTML, PDF, DOCX or EPUB.
    UnsupportedType,
    /// Another file of this run has the same document id.
    DuplicateId,
    /// Nothing but markup: no text to index.
    NoText,
    /// Larger than one NATS message, compressed.
    TooLarge,
    /// The file could not be read.
    Unreadable,
    /// It needs a password.
    Encrypted,
    /// A PDF whose pages have no text (a scan).
    NoTextLayer,
    /// It does not parse as its format.
    Corrupt,
    /// Its conversion crashed, ran out of time or memory, or would expand too far.
    ConversionFailed,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::UnsupportedType => "not Markdown, text, HTML, PDF, DOCX or EPUB",
            SkipReason::DuplicateId => "same document id as another file",
            SkipReason::NoText => "no text",
            SkipReason::TooLarge => "too large for one message",
            SkipReason::Unreadable => "unreadable",
            SkipReason::Encrypted => "encrypted",
            SkipReason::NoTextLayer => "no text layer (scanned?)",
            SkipReason::Corrupt => "corrupt",
            SkipReason::ConversionFailed => "conversion failed",
        })
    }
}

/// A file left out, and why.
#[derive(Clone, Debug)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: SkipReason,
    /// What was wrong with this file and what to do, where there is more to say.
    pub detail: Option<String>,
}

/// The files of one run, and what they cover.
#[derive(Debug, Default)]
pub struct Discovered {
    pub files: Vec<SourceFile>,
    pub skipped: Vec<Skipped>,
    /// Id prefixes (`docs-`) of the folders walked: `--delete-missing` only tombstones
    /// documents under these.
    pub scopes: Vec<String>,
}

/// Walks `roots` and names every readable file. `collection`, when given, comes
/// before every id's prefix.
pub fn discover(
    roots: &[PathBuf],
    collection: Option<&str>,
    id_prefix: Option<&str>,
    location_base: Option<&str>,
    excludes: &Excludes,
) -> Result<Discovered> {
    let mut found = Discovered::default();
    let mut first_path_of_id: HashMap<DocId, PathBuf> = HashMap::new();
    for root in roots {
        let meta = std::fs::metadata(root).map_err(|source| Error::Read {
            path: root.clone(),
            source,
        })?;
        if meta.is_file() {
            let stem = root
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let prefix = join(collection, id_prefix);
            let id = make_id(prefix.as_deref(), &stem, root)?;
            let name = root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let location = location_of(root, &name, location_base);
            add(
                &mut found,
                &mut first_path_of_id,
                root.clone(),
                id,
                location,
            );
            continue;
        }
        let own = id_prefix.map_or_else(|| folder_name(root), str::to_string);
        let prefix = join(collection, Some(&own)).unwrap_or(own);
        let scope = make_id(Some(&prefix), "", root)?;
        found.scopes.push(format!("{scope}-"));
        let walker = WalkDir::new(root)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !excluded(excludes, root, e));
        for entry in walker {
            let entry = entry.map_err(|source| Error::Walk {
                path: root.clone(),
                source,
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let path = entry.into_path();
            let inside = path.strip_prefix(root).unwrap_or(&path);
            let inside_url: Vec<String> = inside
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let location = location_of(&path, &inside_url.join("/"), location_base);
            let relative = inside.with_extension("");
            let id = make_id(Some(&prefix), &relative.to_string_lossy(), &path)?;
            add(&mut found, &mut first_path_of_id, path, id, location);
        }
    }
    Ok(found)
}

fn excluded(excludes: &Excludes, root: &Path, entry: &walkdir::DirEntry) -> bool {
    let inside = entry.path().strip_prefix(root).unwrap_or(entry.path());
    let inside: Vec<String> = inside
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let name = entry.file_name().to_string_lossy();
    excludes.excludes(&name, &inside.join("/"), entry.file_type().is_dir())
}

fn add(
    found: &mut Discovered,
    first_path_of_id: &mut HashMap<DocId, PathBuf>,
    path: PathBuf,
    id: DocId,
    location: String,
) {
    let Some(format) = Format::from_path(&path) else {
        found.skipped.push(Skipped {
            path,
            reason: SkipReason::UnsupportedType,
            detail: None,
        });
        return;
    };
    if first_path_of_id.contains_key(&id) {
        found.skipped.push(Skipped {
            path,
            reason: SkipReason::DuplicateId,
            detail: None,
        });
        return;
    }
    first_path_of_id.insert(id.clone(), path.clone());
    found.files.push(SourceFile {
        path,
        id,
        format,
        location,
    });
}

/// The location base joined with the path inside the folder, or the path as given.
fn location_of(path: &Path, inside: &str, location_base: Option<&str>) -> String {
    match location_base {
        Some(base) => format!("{base}{inside}"),
        None => path.to_string_lossy().into_owned(),
    }
}

/// `collection/prefix`, or whichever of the two is given.
fn join(collection: Option<&str>, prefix: Option<&str>) -> Option<String> {
    match (collection, prefix) {
        (Some(collection), Some(prefix)) => Some(format!("{collection}/{prefix}")),
        (one, other) => one.or(other).map(str::to_string),
    }
}

fn folder_name(root: &Path) -> String {
    let absolute = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    absolute
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into())
}

/// `prefix-slug(name)`, or `slug(name)` without a prefix.
fn make_id(prefix: Option<&str>, name: &str, path: &Path) -> Result<DocId> {
    let joined = match prefix {
        Some(prefix) if !name.is_empty() => format!("{prefix}/{name}"),
        Some(prefix) => prefix.to_string(),
        None => name.to_string(),
    };
    DocId::parse(slug(&joined)).map_err(|source| Error::Id {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_the_extension() {
        assert_eq!(
            Format::from_path(Path::new("a/B.MD")),
            Some(Format::Markdown)
        );
        assert_eq!(
            Format::from_path(Path::new("index.htm")),
            Some(Format::Html)
        );
        assert_eq!(
            Format::from_path(Path::new("notes.txt")),
            Some(Format::Text)
        );
        assert_eq!(Format::from_path(Path::new("T.PDF")), Some(Format::Pdf));
        assert_eq!(Format::from_path(Path::new("a.docx")), Some(Format::Docx));
        assert_eq!(Format::from_path(Path::new("logo.png")), None);
    }
}
