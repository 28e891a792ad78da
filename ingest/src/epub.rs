//! EPUB: a zip whose `META-INF/container.xml` names the package file (OPF); the
//! package's spine lists the chapters (XHTML) in reading order, and each chapter is
//! read as HTML ([`crate::html`]), so headings, anchors and paragraphs come out as they
//! do for a web page. The title is the package's `dc:title`.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::extract::{Extracted, Refusal};
use crate::html;

/// Parts larger than this are refused: a chapter is rarely over a megabyte.
const MAX_PART_BYTES: u64 = 64 << 20;

type Archive<'a> = zip::ZipArchive<Cursor<&'a [u8]>>;

/// Reads one EPUB file.
pub fn extract(raw: &[u8]) -> Result<Extracted, Refusal> {
    let mut zip = zip::ZipArchive::new(Cursor::new(raw))
        .map_err(|err| Refusal::Corrupt(format!("not a zip archive: {err}")))?;
    if zip.by_name("META-INF/encryption.xml").is_ok() {
        return Err(Refusal::Encrypted);
    }
    let container = part(&mut zip, "META-INF/container.xml")?;
    let package_path = first_attr(&container, b"rootfile", b"full-path")
        .ok_or_else(|| Refusal::Corrupt("META-INF/container.xml names no package".into()))?;
    let package = part(&mut zip, &package_path)?;
    let base = package_path.rsplit_once('/').map_or("", |(dir, _)| dir);
    let mut sections = Vec::new();
    for chapter in spine(&package) {
        let path = if base.is_empty() {
            chapter
        } else {
            format!("{base}/{chapter}")
        };
        let xhtml = part(&mut zip, &path)?;
        sections.extend(html::extract(&xhtml).sections);
    }
    Ok(Extracted {
        title: text_of(&package, b"title"),
        sections,
    })
}

/// The part `name` as text; a missing part makes the book corrupt.
fn part(zip: &mut Archive<'_>, name: &str) -> Result<String, Refusal> {
    let name = percent_decoded(name);
    let file = zip
        .by_name(&name)
        .map_err(|err| Refusal::Corrupt(format!("{name}: {err}")))?;
    let mut text = String::new();
    file.take(MAX_PART_BYTES)
        .read_to_string(&mut text)
        .map_err(|err| Refusal::Corrupt(format!("{name}: {err}")))?;
    Ok(text)
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

/// The text of the first element whose local name is `element`, when not empty.
fn text_of(xml: &str, element: &[u8]) -> Option<String> {
    let mut reader = Reader::from_str(xml);
    let mut inside = false;
    let mut text = String::new();
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if e.local_name().as_ref() == element => inside = true,
            Event::End(e) if e.local_name().as_ref() == element => break,
            Event::Text(t) if inside => text.push_str(&t.decode().ok()?),
            Event::GeneralRef(r) if inside => {
                let name = r.decode().ok()?;
                text.push_str(quick_xml::escape::resolve_predefined_entity(&name).unwrap_or(""));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(text)
}

fn attr(element: &BytesStart<'_>, name: &[u8]) -> Option<String> {
    element
        .attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
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
