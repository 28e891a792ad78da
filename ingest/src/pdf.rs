//! PDF through `lopdf` (parsing, decryption with the empty password) and `pdf-extract`
//! (text of each page, with fonts' encodings and ToUnicode maps). One section per page,
//! anchored `page=N`, so a passage never spans two pages and its location opens the
//! page it came from (`guide.pdf#page=12`, as PDF viewers read it).
//!
//! Refused with a reason ([`Refusal`]): a file that needs a password, a file that does
//! not parse, and one with pages but no text on any of them (a scan without a text
//! layer). A page whose content the extractor cannot read is left out and the others
//! are kept.

use std::panic::{AssertUnwindSafe, catch_unwind};

use lopdf::{Document, Object};

use crate::extract::{Extracted, Refusal, SectionBuilder};

/// Reads one PDF file.
pub fn extract(raw: &[u8]) -> Result<Extracted, Refusal> {
    let doc = catch_unwind(|| Document::load_mem(raw))
        .map_err(|_| Refusal::Corrupt("the PDF parser failed on it".into()))?
        .map_err(|err| Refusal::Corrupt(err.to_string()))?;
    if doc.is_encrypted() && doc.authenticate_password("").is_err() {
        return Err(Refusal::Encrypted);
    }
    let pages = doc.get_pages();
    if pages.is_empty() {
        return Err(Refusal::Corrupt("it has no pages".into()));
    }
    let mut builder = SectionBuilder::default();
    let mut unreadable = 0;
    for &number in pages.keys() {
        let Some(text) = page_text(&doc, number) else {
            unreadable += 1;
            continue;
        };
        builder.page(&format!("page={number}"));
        for paragraph in paragraphs(&text) {
            builder.paragraph(&paragraph);
        }
    }
    if unreadable > 0 {
        tracing::warn!(
            unreadable,
            pages = pages.len(),
            "PDF pages without readable content left out"
        );
    }
    let sections = builder.finish();
    if sections.is_empty() {
        return Err(Refusal::NoTextLayer { pages: pages.len() });
    }
    Ok(Extracted {
        title: title(&doc),
        sections,
    })
}

/// The text of page `number` (from 1), or `None` when the extractor fails on it.
fn page_text(doc: &Document, number: u32) -> Option<String> {
    let mut text = String::new();
    let done = catch_unwind(AssertUnwindSafe(|| {
        let mut output = pdf_extract::PlainTextOutput::new(&mut text);
        pdf_extract::output_doc_page(doc, &mut output, number)
    }));
    match done {
        Ok(Ok(())) => Some(text),
        _ => None,
    }
}

/// Paragraphs of a page's text: blocks between blank lines, their lines joined, a word
/// hyphenated across a line break joined whole.
fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut joined = String::new();
        for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let continues_word = joined.ends_with('-')
                && joined[..joined.len() - 1]
                    .chars()
                    .next_back()
                    .is_some_and(char::is_alphabetic)
                && line.chars().next().is_some_and(char::is_lowercase);
            if continues_word {
                joined.pop();
            } else if !joined.is_empty() {
                joined.push(' ');
            }
            joined.push_str(line);
        }
        if !joined.is_empty() {
            out.push(joined);
        }
    }
    out
}

/// The document information dictionary's `Title`, when it has a non-empty one.
fn title(doc: &Document) -> Option<String> {
    let info = match doc.trailer.get(b"Info").ok()? {
        Object::Reference(id) => doc.get_dictionary(*id).ok()?,
        Object::Dictionary(info) => info,
        _ => return None,
    };
    let title = lopdf::decode_text_string(info.get(b"Title").ok()?).ok()?;
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    (!title.is_empty()).then_some(title)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_join_into_paragraphs_and_hyphenated_words_mend() {
        let text = "Photo-\nsynthesis turns light\ninto sugar.\n\nA well-\nKnown fact\n\n\n";
        assert_eq!(
            paragraphs(text),
            vec![
                "Photosynthesis turns light into sugar.",
                "A well- Known fact"
            ]
        );
    }

    #[test]
    fn garbage_is_corrupt() {
        let refusal = extract(b"%PDF-1.7\nnot really").unwrap_err();
        assert!(matches!(refusal, Refusal::Corrupt(_)), "{refusal:?}");
    }
}
