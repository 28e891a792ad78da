//! The shape every reader produces: a title and sections, each section the paragraphs
//! under one heading path. Chunking ([`crate::chunk`]) turns sections into passages.

/// What a reader found in one file.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Extracted {
    /// The document's own title (`<title>`, the first `# heading`), if it has one.
    pub title: Option<String>,
    pub sections: Vec<Section>,
}

/// The paragraphs under one heading path.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Section {
    /// Headings above the paragraphs, outermost first.
    pub heading_path: Vec<String>,
    /// Anchor of the innermost heading, when the source gives or implies one.
    pub anchor: Option<String>,
    pub paragraphs: Vec<String>,
}

/// Why a file of a binary format (PDF, DOCX, EPUB) gave no document.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// It needs a password to open.
    #[error("it is encrypted: save a copy without a password and ingest that")]
    Encrypted,
    /// Pages, but no text on any of them: a scan without a text layer.
    #[error(
        "none of its {pages} pages has text (a scan without a text layer?): run OCR on it \
         (ocrmypdf, for one) and ingest the result"
    )]
    NoTextLayer { pages: usize },
    /// It does not parse as its format.
    #[error("it is corrupt or not what its extension says: {0}")]
    Corrupt(String),
    /// Its conversion crashed, ran out of time or memory, or would expand too far (see
    /// [`crate::sandbox`]): what happened, said for the one who uploaded it.
    #[error("{0}")]
    Failed(String),
}

/// Builds sections while a reader walks a document: headings open a new section,
/// paragraphs go into the current one.
#[derive(Debug, Default)]
pub(crate) struct SectionBuilder {
    /// `(level, text, anchor)` of the open headings, outermost first.
    headings: Vec<(u8, String, Option<String>)>,
    current: Section,
    done: Vec<Section>,
}

impl SectionBuilder {
    /// Opens a heading of `level` (1 for `h1`): it closes every heading at that level or
    /// deeper, and the paragraphs that follow belong under it.
    pub(crate) fn heading(&mut self, level: u8, text: &str, anchor: Option<String>) {
        let text = collapse_whitespace(text);
        if text.is_empty() {
            return;
        }
        self.finish_section();
        self.headings.retain(|(open, _, _)| *open < level);
        self.headings.push((level, text, anchor.clone()));
        self.current.heading_path = self.headings.iter().map(|(_, t, _)| t.clone()).collect();
        self.current.anchor = anchor;
    }

    /// Starts a new page: the paragraphs that follow form a section of their own,
    /// anchored `anchor`, under no heading.
    pub(crate) fn page(&mut self, anchor: &str) {
        self.finish_section();
        self.headings.clear();
        self.current.heading_path.clear();
        self.current.anchor = Some(anchor.to_string());
    }

    /// Adds one paragraph of text (whitespace is collapsed; empty text is dropped).
    pub(crate) fn paragraph(&mut self, text: &str) {
        let text = collapse_whitespace(text);
        if !text.is_empty() {
            self.current.paragraphs.push(text);
        }
    }

    /// Adds a paragraph whose line breaks matter (code), trimming only its ends.
    pub(crate) fn preformatted(&mut self, text: &str) {
        let text = text.trim_matches('\n').trim_end();
        if !text.trim().is_empty() {
            self.current.paragraphs.push(text.to_string());
        }
    }

    /// The first heading seen, the usual fallback for a title.
    pub(crate) fn first_heading(&self) -> Option<&str> {
        self.done
            .iter()
            .chain(std::iter::once(&self.current))
            .find_map(|s| s.heading_path.first())
            .map(String::as_str)
    }

    fn finish_section(&mut self) {
        let section = std::mem::take(&mut self.current);
        if !section.paragraphs.is_empty() {
            self.done.push(section);
        }
    }

    pub(crate) fn finish(mut self) -> Vec<Section> {
        self.finish_section();
        self.done
    }
}

/// Reads plain text: paragraphs are separated by blank lines, and a short first line
/// is the title.
pub fn plain_text(source: &str) -> Extracted {
    let mut builder = SectionBuilder::default();
    let mut paragraph = String::new();
    for line in source.lines() {
        if line.trim().is_empty() {
            builder.paragraph(&paragraph);
            paragraph.clear();
        } else {
            paragraph.push_str(line);
            paragraph.push('\n');
        }
    }
    builder.paragraph(&paragraph);
    let sections = builder.finish();
    let title = sections
        .first()
        .and_then(|s| s.paragraphs.first())
        .filter(|first| first.len() <= 120 && !first.contains(". "))
        .cloned();
    Extracted { title, sections }
}

/// Trims and collapses every run of whitespace into one space.
pub(crate) fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A GitHub-style anchor for a heading: lowercase, spaces to `-`, punctuation dropped.
pub(crate) fn heading_anchor(text: &str) -> String {
    let mut anchor = String::with_capacity(text.len());
    for c in text.trim().chars() {
        if c.is_alphanumeric() || c == '_' || c == '-' {
            anchor.extend(c.to_lowercase());
        } else if c.is_whitespace() {
            anchor.push('-');
        }
    }
    anchor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_nest_and_close_by_level() {
        let mut b = SectionBuilder::default();
        b.paragraph("intro");
        b.heading(1, "Guide", None);
        b.paragraph("a");
        b.heading(2, "Install", Some("install".into()));
        b.paragraph("b");
        b.heading(3, "Linux", None);
        b.paragraph("c");
        b.heading(2, "Run", None);
        b.paragraph("d");
        let paths: Vec<_> = b.finish().into_iter().map(|s| s.heading_path).collect();
        assert_eq!(
            paths,
            vec![
                vec![],
                vec!["Guide".to_string()],
                vec!["Guide".into(), "Install".into()],
                vec!["Guide".into(), "Install".into(), "Linux".into()],
                vec!["Guide".into(), "Run".into()],
            ]
        );
    }

    #[test]
    fn plain_text_splits_on_blank_lines() {
        let doc = plain_text("Release notes\n\nfirst  line\nstill first\n\n\nsecond\n");
        assert_eq!(doc.title.as_deref(), Some("Release notes"));
        assert_eq!(
            doc.sections[0].paragraphs,
            ["Release notes", "first line still first", "second"]
        );
    }

    #[test]
    fn anchors_look_like_github_ones() {
        assert_eq!(
            heading_anchor("Scaling out: more workers!"),
            "scaling-out-more-workers"
        );
    }
}
