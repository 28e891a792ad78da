//! Files for tests to ingest, written with the crates the readers use: tests of this
//! crate and the end-to-end tests of uploads share them.

use lopdf::content::{Content, Operation};
use lopdf::{Document, Object, Stream, dictionary};

/// A PDF with one page per entry, each line of an entry a line of Helvetica text.
pub fn pdf_bytes(title: &str, pages: &[&str]) -> Vec<u8> {
    let mut doc = pdf_document(title, pages);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

pub fn pdf_document(title: &str, pages: &[&str]) -> Document {
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
        "Encoding" => "WinAnsiEncoding",
    });
    let resources_id = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font_id } });
    let mut kids = Vec::new();
    for text in pages {
        let mut operations = vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 12.into()]),
            Operation::new("TL", vec![16.into()]),
            Operation::new("Td", vec![72.into(), 720.into()]),
        ];
        for line in text.lines() {
            operations.push(Operation::new("Tj", vec![Object::string_literal(line)]));
            operations.push(Operation::new("T*", vec![]));
        }
        operations.push(Operation::new("ET", vec![]));
        let content = Content { operations }.encode().unwrap();
        let content_id = doc.add_object(Stream::new(dictionary! {}, content));
        kids.push(Object::from(doc.add_object(dictionary! {
            "Type" => "Page", "Parent" => pages_id, "Contents" => content_id,
        })));
    }
    let count = kids.len() as i64;
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => kids, "Count" => count,
            "Resources" => resources_id, "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    let info_id = doc.add_object(dictionary! { "Title" => Object::string_literal(title) });
    doc.trailer.set("Root", catalog_id);
    doc.trailer.set("Info", info_id);
    let file_id = Object::string_literal("cauce-test-file-id");
    doc.trailer.set("ID", vec![file_id.clone(), file_id]);
    doc
}

/// Crafted files, each aimed at one way a reader can be made to crash, hang or bloat:
/// `(file name, bytes)`. The hostile-files tests upload them all at once.
pub fn hostile_files() -> Vec<(&'static str, Vec<u8>)> {
    hostile_files_at(1)
}

/// [`hostile_files`] with every depth and expansion `scale` times larger (the long
/// suite, `ops/hostile-files`).
pub fn hostile_files_at(scale: usize) -> Vec<(&'static str, Vec<u8>)> {
    let s = scale.max(1);
    vec![
        ("self-drawing-xobject.pdf", pdf_self_drawing_xobject()),
        ("nested-arrays.pdf", pdf_nested_arrays(200_000 * s)),
        ("nested-spans.html", html_nested_spans(200_000 * s)),
        ("spine-bomb.epub", epub_spine_bomb(4 << 20, 400 * s)),
        ("inflate-bomb.pdf", pdf_inflate_bomb((1 << 30) * s as u64)),
        ("not-a-pdf.pdf", b"%PDF-1.7\n%%EOF garbage".to_vec()),
        ("paragraph-bomb.docx", docx_paragraph_bomb((48 << 20) * s)),
        ("nested-elements.docx", docx_nested_elements(200_000 * s)),
        ("nested-quotes.md", markdown_nested(100_000 * s)),
    ]
}

/// A DOCX whose body is `text_bytes` of one word repeated: a small file whose text
/// expands past any sane output limit.
pub fn docx_paragraph_bomb(text_bytes: usize) -> Vec<u8> {
    let run = "<w:p><w:r><w:t>tide tide tide tide tide tide tide</w:t></w:r></w:p>";
    docx_of(&run.repeat(text_bytes / 34))
}

/// A DOCX whose body nests `depth` elements around a word.
pub fn docx_nested_elements(depth: usize) -> Vec<u8> {
    let body = format!(
        "{}<w:p><w:r><w:t>deep</w:t></w:r></w:p>{}",
        "<w:sdt><w:sdtContent>".repeat(depth),
        "</w:sdtContent></w:sdt>".repeat(depth)
    );
    docx_of(&body)
}

/// A DOCX whose body is `body` (WordprocessingML paragraphs).
pub fn docx_of(body: &str) -> Vec<u8> {
    use std::io::Write;
    const W: &str = "http://schemas.openxmlformats.org/wordprocessingml/2006/main";
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(body.len() > u32::MAX as usize / 2);
    zip.start_file("[Content_Types].xml", deflated).unwrap();
    zip.write_all(br#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/></Types>"#).unwrap();
    zip.start_file("word/document.xml", deflated).unwrap();
    write!(
        zip,
        r#"<?xml version="1.0"?><w:document xmlns:w="{W}"><w:body>"#
    )
    .unwrap();
    zip.write_all(body.as_bytes()).unwrap();
    zip.write_all(b"</w:body></w:document>").unwrap();
    zip.finish().unwrap().into_inner()
}

/// Markdown of `depth` nested block quotes, then as many nested list items, around a
/// word.
pub fn markdown_nested(depth: usize) -> Vec<u8> {
    let mut out = ">".repeat(depth);
    out.push_str(" deep\n\n");
    for level in 0..depth.min(2_000) {
        out.push_str(&"  ".repeat(level));
        out.push_str("- item\n");
    }
    out.into_bytes()
}

/// A page that draws a Form XObject which draws itself: a reader that follows XObjects
/// without a visited set recurses until its stack overflows.
pub fn pdf_self_drawing_xobject() -> Vec<u8> {
    let mut doc = pdf_document("loop", &["Before the loop."]);
    let xobject_id = doc.new_object_id();
    let draw = Content {
        operations: vec![Operation::new("Do", vec!["X1".into()])],
    }
    .encode()
    .unwrap();
    let form = Stream::new(
        dictionary! {
            "Type" => "XObject", "Subtype" => "Form",
            "BBox" => vec![0.into(), 0.into(), 10.into(), 10.into()],
            "Resources" => dictionary! { "XObject" => dictionary! { "X1" => xobject_id } },
        },
        draw.clone(),
    );
    doc.objects.insert(xobject_id, Object::Stream(form));
    let page_ids: Vec<_> = doc.get_pages().values().copied().collect();
    for page_id in page_ids {
        let content_id = doc.add_object(Stream::new(dictionary! {}, draw.clone()));
        if let Ok(Object::Dictionary(page)) = doc.get_object_mut(page_id) {
            page.set("Contents", content_id);
            page.set(
                "Resources",
                dictionary! { "XObject" => dictionary! { "X1" => xobject_id } },
            );
        }
    }
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

/// A one-page PDF whose content stream (FlateDecode) inflates to `inflated` zero bytes.
pub fn pdf_inflate_bomb(inflated: u64) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..inflated.div_ceil(zeros.len() as u64) {
        encoder.write_all(&zeros).unwrap();
    }
    let packed = encoder.finish().unwrap();
    let mut doc = pdf_document("bomb", &["A page."]);
    let page_ids: Vec<_> = doc.get_pages().values().copied().collect();
    for page_id in page_ids {
        let stream = Stream::new(dictionary! { "Filter" => "FlateDecode" }, packed.clone());
        let content_id = doc.add_object(stream);
        if let Ok(Object::Dictionary(page)) = doc.get_object_mut(page_id) {
            page.set("Contents", content_id);
        }
    }
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

/// A PDF (with a valid cross-reference table) whose catalog holds `depth` arrays
/// nested in each other.
pub fn pdf_nested_arrays(depth: usize) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n".to_vec();
    let offset = out.len();
    out.extend_from_slice(b"1 0 obj\n<< /Type /Catalog /Nested ");
    out.extend(std::iter::repeat_n(b'[', depth));
    out.extend(std::iter::repeat_n(b']', depth));
    out.extend_from_slice(b" >>\nendobj\n");
    let xref = out.len();
    out.extend_from_slice(
        format!(
            "xref\n0 2\n0000000000 65535 f \n{offset:010} 00000 n \ntrailer\n<< /Size 2 /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
        )
        .as_bytes(),
    );
    out
}

/// An HTML page of `depth` nested `<span>`s around a word.
pub fn html_nested_spans(depth: usize) -> Vec<u8> {
    let mut out = b"<html><body>".to_vec();
    out.extend("<span>".repeat(depth).into_bytes());
    out.extend_from_slice(b"deep");
    out.extend("</span>".repeat(depth).into_bytes());
    out.extend_from_slice(b"</body></html>");
    out
}

/// An EPUB whose spine lists one chapter of `chapter_bytes` `times` times: a small file
/// that expands to `chapter_bytes * times` of text.
pub fn epub_spine_bomb(chapter_bytes: usize, times: usize) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("mimetype", stored).unwrap();
    zip.write_all(b"application/epub+zip").unwrap();
    zip.start_file("META-INF/container.xml", deflated).unwrap();
    zip.write_all(
        br#"<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles><rootfile full-path="content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>"#,
    )
    .unwrap();
    let spine = r#"<itemref idref="c"/>"#.repeat(times);
    let opf = format!(
        r#"<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>bomb</dc:title></metadata><manifest><item id="c" href="c.xhtml" media-type="application/xhtml+xml"/></manifest><spine>{spine}</spine></package>"#
    );
    zip.start_file("content.opf", deflated).unwrap();
    zip.write_all(opf.as_bytes()).unwrap();
    zip.start_file("c.xhtml", deflated).unwrap();
    zip.write_all(b"<html xmlns=\"http://www.w3.org/1999/xhtml\"><body><p>")
        .unwrap();
    let words = "tide ".repeat(chapter_bytes / 5);
    zip.write_all(words.as_bytes()).unwrap();
    zip.write_all(b"</p></body></html>").unwrap();
    zip.finish().unwrap().into_inner()
}

/// Seed inputs of the readers' fuzzing (`ingest/fuzz`, `ops/fuzz-readers`), as
/// `(fuzz target, file name, bytes)`: a normal file of each kind and small versions of
/// every crafted one, so that the fuzzer starts where the known attacks are.
pub fn fuzz_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let seeds = vec![
        ("pdf", "normal.pdf", pdf_bytes("Tides", &["Spring tides follow the new moon.", "Neap tides follow."])),
        ("pdf", "self-drawing-xobject.pdf", pdf_self_drawing_xobject()),
        ("pdf", "nested-arrays.pdf", pdf_nested_arrays(300)),
        ("pdf", "inflate-bomb.pdf", pdf_inflate_bomb(8 << 20)),
        ("docx", "normal.docx", docx_of("<w:p><w:pPr><w:pStyle w:val=\"Heading1\"/></w:pPr><w:r><w:t>Tides</w:t></w:r></w:p><w:p><w:r><w:t>Spring tides.</w:t></w:r></w:p><w:tbl><w:tr><w:tc><w:p><w:r><w:t>cell</w:t></w:r></w:p></w:tc></w:tr></w:tbl>")),
        ("docx", "nested-elements.docx", docx_nested_elements(300)),
        ("docx", "paragraph-bomb.docx", docx_paragraph_bomb(1 << 20)),
        ("epub", "spine-bomb.epub", epub_spine_bomb(1 << 10, 20)),
        ("html", "normal.html", b"<html><head><title>Tides</title><script>x()</script></head><body><h1>Tides</h1><p>Spring <b>tides</b> &amp; neap.</p><table><tr><td>a</td></tr></table></body></html>".to_vec()),
        ("html", "nested-spans.html", html_nested_spans(300)),
        ("markdown", "normal.md", b"# Tides\n\nSpring *tides* follow.\n\n- one\n  - two\n\n```\ncode\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n".to_vec()),
        ("markdown", "nested.md", markdown_nested(300)),
    ];
    seeds
        .into_iter()
        .map(|(t, n, b)| (t, n.to_string(), b))
        .collect()
}
