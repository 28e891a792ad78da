//! EPUB: a zip whose `META-INF/container.xml` names the package file (OPF); the
//! package's spine lists the chapters (XHTML) in reading order, and each chapter is
//! read as HTML ([`crate::html`]), so headings, anchors and paragraphs come out as they
//! do for a web page. The title is the package's `dc:title`.
//!
//! A spine may list a chapter more than once, which would make a small file expand to
//! many times its parts: each chapter is read once, and the text of the whole book is
//! capped at [`MAX_TEXT_BYTES`] (each part is capped already, in [`crate::xml`]).

use std::collections::{HashMap, HashSet};

use quick_xml::Reader;
use quick_xml::events::Event;

use crate::extract::{Extracted, Refusal};
use crate::html;
use crate::xml::{self, Archive, attr, text_of};

/// The most text one book may hold, in bytes: past it, the book is refused.
pub const MAX_TEXT_BYTES: usize = 64 << 20;

/// Reads one EPUB file.
pub fn extract(raw: &[u8]) -> Result<Extracted, Refusal> {
    let mut zip = xml::archive(raw)?;
    if zip.by_name("META-INF/encryption.xml").is_ok() {
        return Err(Refusal::Encrypted);
    }
    let container = required(&mut zip, "META-INF/container.xml")?;
    let package_path = first_attr(&container, b"rootfile", b"full-path")
        .ok_or_else(|| Refusal::Corrupt("META-INF/container.xml names no package".into()))?;
    let package = required(&mut zip, &package_path)?;
    let base = package_path.rsplit_once('/').map_or("", |(dir, _)| dir);
    let mut sections = Vec::new();
    let mut text_bytes = 0;
    let mut read = HashSet::new();
    for chapter in spine(&package) {
        if !read.insert(chapter.clone()) {
            continue;
        }
        let path = if base.is_empty() {
            chapter
        } else {
            format!("{base}/{chapter}")
        };
        let xhtml = required(&mut zip, &percent_decoded(&path))?;
        text_bytes += xhtml.len();
        if text_bytes > MAX_TEXT_BYTES {
            return Err(Refusal::Failed(format!(
                "its chapters hold more than {} MiB of text: split it into smaller books",
                MAX_TEXT_BYTES >> 20
            )));
        }
        sections.extend(html::extract(&xhtml).sections);
    }
    Ok(Extracted {
        title: text_of(&package, b"title"),
        sections,
    })
}

/// The part `name` as text; a book without it is corrupt.
fn required(zip: &mut Archive<'_>, name: &str) -> Result<String, Refusal> {
    xml::part(zip, name)?.ok_or_else(|| Refusal::Corrupt(format!("it has no {name}")))
}

/// The spine's chapters, in reading order, as paths relative to the package file.
fn spine(package: &str) -> Vec<String> {
    let mut manifest = HashMap::new();
    let mut order = Vec::new();
    let mut reader = Reader::from_str(package);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e) | Event::Empty(e)) => match e.local_name().as_ref() {
                b"item" => {
                    if let (Some(id), Some(href)) = (attr(&e, b"id"), attr(&e, b"href")) {
                        manifest.insert(id, href);
                    }
                }
                b"itemref" => order.extend(attr(&e, b"idref")),
                _ => {}
            },
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    order
        .iter()
        .filter_map(|id| manifest.get(id).cloned())
        .collect()
}

/// The value of `name` on the first element whose local name is `element`.
fn first_attr(xml: &str, element: &[u8], name: &[u8]) -> Option<String> {
    let mut reader = Reader::from_str(xml);
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == element => {
                return attr(&e, name);
            }
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// `%20` and the like in a manifest's `href`, as the zip names the file.
fn percent_decoded(href: &str) -> String {
    let bytes = href.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chapter_listed_many_times_is_read_once() {
        let book = crate::testkit::epub_spine_bomb(1 << 20, 1000);
        let extracted = extract(&book).unwrap();
        let text: usize = extracted
            .sections
            .iter()
            .flat_map(|s| &s.paragraphs)
            .map(String::len)
            .sum();
        assert!(
            text < 2 << 20,
            "{text} bytes of text from one 1 MiB chapter"
        );
    }

    #[test]
    fn the_spine_orders_the_chapters() {
        let opf = r#"<package><metadata><dc:title>Física &amp; más</dc:title></metadata>
            <manifest><item id="c2" href="ch%202.xhtml"/><item id="c1" href="ch1.xhtml"/>
            <item id="css" href="s.css"/></manifest>
            <spine><itemref idref="c1"/><itemref idref="c2"/></spine></package>"#;
        assert_eq!(spine(opf), ["ch1.xhtml", "ch%202.xhtml"]);
        assert_eq!(percent_decoded("ch%202.xhtml"), "ch 2.xhtml");
        assert_eq!(text_of(opf, b"title").as_deref(), Some("Física & más"));
    }
}
