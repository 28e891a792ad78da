//! What the DOCX and EPUB readers share: both are zips of XML parts.

use std::io::{Cursor, Read};

use quick_xml::Reader;
use quick_xml::events::{BytesRef, BytesStart, Event};

use crate::extract::Refusal;

/// Parts larger than this are read no further: a book's XML is a few MB.
const MAX_PART_BYTES: u64 = 64 << 20;

pub(crate) type Archive<'a> = zip::ZipArchive<Cursor<&'a [u8]>>;

/// Opens `raw` as a zip archive.
pub(crate) fn archive(raw: &[u8]) -> Result<Archive<'_>, Refusal> {
    zip::ZipArchive::new(Cursor::new(raw))
        .map_err(|err| Refusal::Corrupt(format!("not a zip archive: {err}")))
}

/// The part `name` as text, `None` when the archive has no such part.
pub(crate) fn part(zip: &mut Archive<'_>, name: &str) -> Result<Option<String>, Refusal> {
    let file = match zip.by_name(name) {
        Ok(file) => file,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(err) => return Err(Refusal::Corrupt(format!("{name}: {err}"))),
    };
    let mut text = String::new();
    file.take(MAX_PART_BYTES)
        .read_to_string(&mut text)
        .map_err(|err| Refusal::Corrupt(format!("{name}: {err}")))?;
    Ok(Some(text))
}

/// The value of the attribute whose local name is `name` (`w:val` by `val`).
pub(crate) fn attr(element: &BytesStart<'_>, name: &[u8]) -> Option<String> {
    element
        .attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// A character or predefined entity reference in text (`&amp;`, `&#233;`).
pub(crate) fn resolve(reference: &BytesRef<'_>) -> Option<char> {
    if let Ok(Some(c)) = reference.resolve_char_ref() {
        return Some(c);
    }
    let name = reference.decode().ok()?;
    quick_xml::escape::resolve_predefined_entity(&name)?
        .chars()
        .next()
}

/// The text of the first element whose local name is `element` (`dc:title` by
/// `title`), whitespace collapsed, when it is not empty.
pub(crate) fn text_of(xml: &str, element: &[u8]) -> Option<String> {
    let mut reader = Reader::from_str(xml);
    let mut inside = false;
    let mut text = String::new();
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if e.local_name().as_ref() == element => inside = true,
            Event::End(e) if e.local_name().as_ref() == element => break,
            Event::Text(t) if inside => text.push_str(&t.decode().ok()?),
            Event::GeneralRef(r) if inside => text.extend(resolve(&r)),
            Event::Eof => break,
            _ => {}
        }
    }
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(text)
}
