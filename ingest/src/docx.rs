//! Word documents (DOCX: Office Open XML in a zip) through `zip` and `quick-xml`.
//!
//! - Paragraphs come from `word/document.xml`; a table row is one paragraph, its cells
//!   joined with ` | `.
//! - A paragraph is a heading when its style (or the style it is based on) has an
//!   outline level, or is one of Word's built-in `heading N` styles: `word/styles.xml`
//!   maps style ids to those, so headings are found whatever language Word ran in
//!   (a Spanish Word names the style id `Ttulo1`, its built-in name is still `heading 1`).
//! - The title is the core properties' `dc:title`, else the first `Title`-styled
//!   paragraph.
//! - Passages keep their heading path, and their anchor is the heading's.

use std::collections::HashMap;

use quick_xml::Reader;
use quick_xml::events::Event;

use crate::extract::{Extracted, Refusal, SectionBuilder, heading_anchor};
use crate::xml::{self, attr, part, resolve, text_of};

/// The first bytes of an OLE compound file.
const OLE_MAGIC: [u8; 8] = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];

/// What a paragraph style makes of its paragraphs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Heading(u8),
    Title,
}

/// Reads one DOCX file.
pub fn extract(raw: &[u8]) -> Result<Extracted, Refusal> {
    // Word saves a document with a password as an OLE compound file around an
    // encrypted package, not as a zip
    if raw.starts_with(&OLE_MAGIC) {
        return Err(Refusal::Encrypted);
    }
    let mut zip = xml::archive(raw)?;
    let body = part(&mut zip, "word/document.xml")?
        .ok_or_else(|| Refusal::Corrupt("it has no word/document.xml".into()))?;
    let styles = match part(&mut zip, "word/styles.xml")? {
        Some(xml) => style_roles(&xml),
        None => HashMap::new(),
    };
    let core_title = part(&mut zip, "docProps/core.xml")?.and_then(|xml| text_of(&xml, b"title"));
    let (sections, styled_title) = body_sections(&body, &styles)?;
    Ok(Extracted {
        title: core_title.or(styled_title),
        sections,
    })
}

/// Paragraph style id to what it makes: built-in names, outline levels, and what a
/// style inherits through `basedOn`.
fn style_roles(xml: &str) -> HashMap<String, Role> {
    // (style id, own role, based on)
    let mut styles: Vec<(String, Option<Role>, Option<String>)> = Vec::new();
    let mut reader = Reader::from_str(xml);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) if e.local_name().as_ref() == b"style" => {
                styles.push((attr(&e, b"styleId").unwrap_or_default(), None, None));
            }
            Ok(Event::Start(e) | Event::Empty(e)) => {
                let Some(style) = styles.last_mut() else {
                    continue;
                };
                match e.local_name().as_ref() {
                    b"name" => style.1 = style.1.or(attr(&e, b"val").and_then(|n| named_role(&n))),
                    b"outlineLvl" => {
                        let level = attr(&e, b"val").and_then(|v| v.parse::<u8>().ok());
                        if let Some(level) = level.filter(|l| *l < 9) {
                            style.1 = Some(Role::Heading(level + 1));
                        }
                    }
                    b"basedOn" => style.2 = attr(&e, b"val"),
                    _ => {}
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    let own: HashMap<_, _> = styles
        .iter()
        .map(|(id, role, based)| (id.clone(), (*role, based.clone())))
        .collect();
    let mut roles = HashMap::new();
    for id in own.keys() {
        let mut next = Some(id.clone());
        for _ in 0..8 {
            let Some((role, based)) = next.as_ref().and_then(|id| own.get(id)) else {
                break;
            };
            if let Some(role) = role {
                roles.insert(id.clone(), *role);
                break;
            }
            next = based.clone();
        }
    }
    roles
}

/// Word's built-in style names, which stay English in every language's Word.
fn named_role(name: &str) -> Option<Role> {
    let name = name.to_ascii_lowercase();
    if name == "title" {
        return Some(Role::Title);
    }
    let level = name.strip_prefix("heading ")?.parse::<u8>().ok()?;
    (1..=9).contains(&level).then_some(Role::Heading(level))
}

/// The sections of the document body, and the first `Title` paragraph.
fn body_sections(
    xml: &str,
    styles: &HashMap<String, Role>,
) -> Result<(Vec<crate::extract::Section>, Option<String>), Refusal> {
    let mut builder = SectionBuilder::default();
    let mut title = None;
    let mut reader = Reader::from_str(xml);
    let mut paragraph = Paragraph::default();
    let mut row: Option<Vec<String>> = None;
    let mut in_text = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|err| Refusal::Corrupt(format!("word/document.xml: {err}")))?;
        let opens = matches!(event, Event::Start(_));
        match event {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                b"p" => paragraph = Paragraph::default(),
                b"pStyle" => {
                    paragraph.role = attr(&e, b"val").and_then(|s| styles.get(&s).copied())
                }
                b"outlineLvl" => {
                    let level = attr(&e, b"val").and_then(|v| v.parse::<u8>().ok());
                    if let Some(level) = level.filter(|l| *l < 9) {
                        paragraph.role = Some(Role::Heading(level + 1));
                    }
                }
                b"t" => in_text = opens,
                b"tab" => paragraph.text.push(' '),
                b"br" | b"cr" => paragraph.text.push('\n'),
                b"tr" => row = Some(Vec::new()),
                _ => {}
            },
            Event::Text(t) if in_text => {
                let text = t
                    .decode()
                    .map_err(|err| Refusal::Corrupt(err.to_string()))?;
                paragraph.text.push_str(&text);
            }
            Event::GeneralRef(r) if in_text => {
                if let Some(c) = resolve(&r) {
                    paragraph.text.push(c);
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"t" => in_text = false,
                b"p" => {
                    let done = std::mem::take(&mut paragraph);
                    match row.as_mut() {
                        Some(cells) => cells.push(done.text),
                        None => done.emit(&mut builder, &mut title),
                    }
                }
                b"tr" => {
                    let cells = row.take().unwrap_or_default();
                    let cells: Vec<_> = cells
                        .iter()
                        .map(|c| c.trim())
                        .filter(|c| !c.is_empty())
                        .collect();
                    builder.paragraph(&cells.join(" | "));
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok((builder.finish(), title))
}

/// The paragraph being read.
#[derive(Debug, Default)]
struct Paragraph {
    role: Option<Role>,
    text: String,
}

impl Paragraph {
    fn emit(self, builder: &mut SectionBuilder, title: &mut Option<String>) {
        let text = self.text.split_whitespace().collect::<Vec<_>>().join(" ");
        match self.role {
            Some(Role::Heading(level)) => {
                let anchor = heading_anchor(&text);
                builder.heading(level, &text, (!anchor.is_empty()).then_some(anchor));
            }
            Some(Role::Title) if title.is_none() && !text.is_empty() => *title = Some(text),
            _ => builder.paragraph(&self.text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styles_resolve_by_built_in_name_outline_level_and_inheritance() {
        let xml = r#"<w:styles xmlns:w="w">
            <w:style w:type="paragraph" w:styleId="Ttulo1"><w:name w:val="heading 1"/></w:style>
            <w:style w:type="paragraph" w:styleId="Mine"><w:name w:val="Mine"/>
              <w:pPr><w:outlineLvl w:val="2"/></w:pPr></w:style>
            <w:style w:type="paragraph" w:styleId="Child"><w:name w:val="Child"/>
              <w:basedOn w:val="Mine"/></w:style>
            <w:style w:type="paragraph" w:styleId="Ttulo"><w:name w:val="Title"/></w:style>
            <w:style w:type="paragraph" w:styleId="Normal"><w:name w:val="Normal"/></w:style>
        </w:styles>"#;
        let roles = style_roles(xml);
        assert_eq!(roles.get("Ttulo1"), Some(&Role::Heading(1)));
        assert_eq!(roles.get("Mine"), Some(&Role::Heading(3)));
        assert_eq!(roles.get("Child"), Some(&Role::Heading(3)));
        assert_eq!(roles.get("Ttulo"), Some(&Role::Title));
        assert_eq!(roles.get("Normal"), None);
    }

    #[test]
    fn a_password_protected_file_is_encrypted() {
        let mut raw = OLE_MAGIC.to_vec();
        raw.extend([0; 504]);
        assert_eq!(extract(&raw).unwrap_err(), Refusal::Encrypted);
    }

    #[test]
    fn not_a_zip_is_corrupt() {
        let refusal = extract(b"PK\x03\x04 nothing more").unwrap_err();
        assert!(matches!(refusal, Refusal::Corrupt(_)), "{refusal:?}");
    }
}
