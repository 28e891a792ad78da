//! PDF through `lopdf` (parsing, decryption with the empty password) and `pdf-extract`
//! (text of each page, with fonts' encodings and ToUnicode maps). One section per page,
//! anchored `page=N`, so a passage never spans two pages and its location opens the
//! page it came from (`guide.pdf#page=12`, as PDF viewers read it).
//!
//! Refused with a reason ([`Refusal`]): a file that needs a password, a file that does
//! not parse, and one with pages but no text on any of them (a scan without a text
//! layer). A page whose content the extractor cannot read is left out and the others
//! are kept.
//!
//! The reader defends itself before the parsers recurse (the sandbox catches what is
//! left, see [`crate::sandbox`]): arrays and dictionaries nested deeper than
//! [`MAX_NESTING`] are refused before `lopdf` parses them, and Form XObjects that draw
//! themselves, or nest deeper than [`MAX_FORM_DEPTH`], before `pdf-extract` follows them;
//! a stream that inflates past [`MAX_INFLATED_STREAM`], or streams past
//! [`MAX_INFLATED_TOTAL`] together, before anything inflates them into memory.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use lopdf::{Document, Object, ObjectId};

use crate::extract::{Extracted, Refusal, SectionBuilder};

/// Arrays and dictionaries nested deeper than this are refused.
pub const MAX_NESTING: usize = 256;
/// Form XObjects drawn within each other deeper than this are refused.
pub const MAX_FORM_DEPTH: usize = 32;
/// The most one stream may inflate to, in bytes.
pub const MAX_INFLATED_STREAM: u64 = 256 << 20;
/// The most all streams may inflate to together, in bytes.
pub const MAX_INFLATED_TOTAL: u64 = 1 << 30;

/// Reads one PDF file.
pub fn extract(raw: &[u8]) -> Result<Extracted, Refusal> {
    if nesting_depth(raw, MAX_NESTING) > MAX_NESTING {
        return Err(Refusal::Corrupt(format!(
            "it nests arrays or dictionaries more than {MAX_NESTING} deep"
        )));
    }
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
    // sizes first: the check of the forms inflates their content
    check_inflated_sizes(&doc)?;
    check_forms(&doc)?;
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

/// How deep `[` and `<<` nest in `raw`, outside comments, strings and streams; the
/// scan stops once past `limit`. Linear, and it allocates nothing.
fn nesting_depth(raw: &[u8], limit: usize) -> usize {
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < raw.len() && deepest <= limit {
        match raw[i] {
            b'%' => i = skip_past(raw, i, |b| b == b'\n' || b == b'\r'),
            b'(' => i = skip_string(raw, i),
            b'[' => depth += 1,
            b'<' if raw.get(i + 1) == Some(&b'<') => {
                depth += 1;
                i += 1;
            }
            b']' => depth = depth.saturating_sub(1),
            b'>' if raw.get(i + 1) == Some(&b'>') => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b's' if is_keyword(raw, i, b"stream") => {
                i = find(raw, i + 6, b"endstream").map_or(raw.len(), |end| end + 9);
                continue;
            }
            // each object starts from nothing: no imbalance adds up across a file
            b'e' if is_keyword(raw, i, b"endobj") => depth = 0,
            _ => {}
        }
        deepest = deepest.max(depth);
        i += 1;
    }
    deepest
}

/// Whether `keyword` stands at `at` as a word of its own (not inside a name such as
/// `/application#2Foctet-stream` or `/Upstream`): whitespace or a delimiter before it,
/// whitespace after it.
fn is_keyword(raw: &[u8], at: usize, keyword: &[u8]) -> bool {
    let before = at.checked_sub(1).map(|i| raw[i]);
    let after = raw.get(at + keyword.len()).copied();
    raw[at..].starts_with(keyword)
        && before.is_none_or(|b| b.is_ascii_whitespace() || b"<>[]".contains(&b))
        && after.is_none_or(|b| b.is_ascii_whitespace())
}

/// The index of the first byte after `start` that `stop` accepts (or the end).
fn skip_past(raw: &[u8], start: usize, stop: impl Fn(u8) -> bool) -> usize {
    raw[start..]
        .iter()
        .position(|&b| stop(b))
        .map_or(raw.len(), |at| start + at)
}

/// The index of the `)` that closes the literal string opening at `start`.
fn skip_string(raw: &[u8], start: usize) -> usize {
    let (mut open, mut i) = (0usize, start);
    while i < raw.len() {
        match raw[i] {
            b'\\' => i += 1,
            b'(' => open += 1,
            b')' => {
                open -= 1;
                if open == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    raw.len()
}

fn find(raw: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    raw.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|at| from + at)
}

/// Refuses a document whose Form XObjects draw themselves (directly or through others)
/// (a form listed in its own resources but never drawn is fine: producers share one
/// resource dictionary)
/// or nest deeper than [`MAX_FORM_DEPTH`]: a reader following them would not stop.
fn check_forms(doc: &Document) -> Result<(), Refusal> {
    let graph: HashMap<ObjectId, Vec<ObjectId>> = doc
        .objects
        .iter()
        .filter_map(|(id, object)| Some((*id, drawn_forms(doc, object)?)))
        .collect();
    // 1: on the path being walked; a depth: done
    let mut state: HashMap<ObjectId, usize> = HashMap::new();
    for &root in graph.keys() {
        if state.contains_key(&root) {
            continue;
        }
        let mut path = vec![(root, 0usize)];
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            state.entry(node).or_insert(usize::MAX);
            let kids = &graph[&node];
            if let Some(&kid) = kids.get(*next) {
                *next += 1;
                match state.get(&kid) {
                    Some(&usize::MAX) => {
                        return Err(Refusal::Corrupt("a drawing in it draws itself".into()));
                    }
                    Some(_) => {}
                    None if graph.contains_key(&kid) => path.push((kid, 0)),
                    None => {}
                }
                continue;
            }
            let depth = 1 + kids
                .iter()
                .filter_map(|k| state.get(k))
                .max()
                .copied()
                .unwrap_or(0);
            if depth > MAX_FORM_DEPTH {
                return Err(Refusal::Corrupt(format!(
                    "its drawings nest more than {MAX_FORM_DEPTH} deep"
                )));
            }
            state.insert(node, depth);
            path.pop();
        }
    }
    Ok(())
}

/// Refuses a document whose Flate streams inflate past the caps: each is inflated once
/// into nothing, counting bytes, before any reader inflates it into memory.
fn check_inflated_sizes(doc: &Document) -> Result<(), Refusal> {
    let mut total = 0u64;
    for object in doc.objects.values() {
        let Object::Stream(stream) = object else {
            continue;
        };
        let flate = match stream.dict.get(b"Filter") {
            Ok(Object::Name(name)) => name == b"FlateDecode",
            Ok(Object::Array(filters)) => filters
                .iter()
                .any(|f| f.as_name().ok() == Some(b"FlateDecode".as_slice())),
            _ => false,
        };
        if !flate {
            continue;
        }
        let decoder = flate2::read::ZlibDecoder::new(stream.content.as_slice());
        let mut capped = std::io::Read::take(decoder, MAX_INFLATED_STREAM + 1);
        // a stream that breaks off still inflates to what came before the break
        let mut counted = Counted(0);
        let _ = std::io::copy(&mut capped, &mut counted);
        let size = counted.0;
        total += size;
        if size > MAX_INFLATED_STREAM || total > MAX_INFLATED_TOTAL {
            return Err(Refusal::Failed(format!(
                "its compressed streams would expand past {} MiB: split it into smaller files",
                if size > MAX_INFLATED_STREAM {
                    MAX_INFLATED_STREAM
                } else {
                    MAX_INFLATED_TOTAL
                } >> 20
            )));
        }
    }
    Ok(())
}

/// A writer that keeps only the count of what it was given.
struct Counted(u64);

impl std::io::Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The Form XObjects a Form XObject draws (`/Name Do` in its content, the name looked
/// up in its own resources), `None` when `object` is not one. A form without resources
/// of its own draws through its caller's: those cycles are left to the sandbox.
fn drawn_forms(doc: &Document, object: &Object) -> Option<Vec<ObjectId>> {
    let Object::Stream(stream) = object else {
        return None;
    };
    if stream.dict.get(b"Subtype").and_then(Object::as_name).ok() != Some(b"Form".as_slice()) {
        return None;
    }
    let dict = |object: &Object| doc.dereference(object).ok()?.1.as_dict().ok().cloned();
    let Some(xobjects) = (stream.dict.get(b"Resources").ok())
        .and_then(dict)
        .and_then(|resources| resources.get(b"XObject").ok().and_then(dict))
    else {
        return Some(Vec::new());
    };
    let content = match stream.dict.get(b"Filter") {
        Ok(_) => stream.decompressed_content().unwrap_or_default(),
        Err(_) => stream.content.clone(),
    };
    let operations = lopdf::content::Content::decode(&content)
        .map(|c| c.operations)
        .unwrap_or_default();
    Some(
        operations
            .iter()
            .filter(|op| op.operator == "Do")
            .filter_map(|op| op.operands.first()?.as_name().ok())
            .filter_map(|name| xobjects.get(name).ok()?.as_reference().ok())
            .collect(),
    )
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
    fn deep_nesting_and_self_drawing_forms_are_refused_before_the_parsers_recurse() {
        let nested = crate::testkit::pdf_nested_arrays(100_000);
        let refusal = extract(&nested).unwrap_err().to_string();
        assert!(refusal.contains("more than 256 deep"), "{refusal}");
        let looped = crate::testkit::pdf_self_drawing_xobject();
        let refusal = extract(&looped).unwrap_err().to_string();
        assert!(refusal.contains("draws itself"), "{refusal}");
        // brackets inside strings and streams do not count
        let mut text = String::from("[[[((((");
        text.push_str(&"[".repeat(300));
        assert_eq!(
            nesting_depth(b"[ (([[[[) <<>> ] stream\n[[[[[[\nendstream", 256),
            1
        );
        let page = crate::testkit::pdf_bytes("ok", &[&text]);
        assert!(extract(&page).is_ok());
        let bomb = crate::testkit::pdf_inflate_bomb(MAX_INFLATED_STREAM + (1 << 20));
        let refusal = extract(&bomb).unwrap_err().to_string();
        assert!(refusal.contains("expand past 256 MiB"), "{refusal}");
    }

    #[test]
    fn garbage_is_corrupt() {
        let refusal = extract(b"%PDF-1.7\nnot really").unwrap_err();
        assert!(matches!(refusal, Refusal::Corrupt(_)), "{refusal:?}");
    }
}
