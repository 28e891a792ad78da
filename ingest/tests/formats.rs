//! PDF and DOCX: files these tests write themselves (lopdf for PDFs, a zip of Office
//! XML for DOCX), read by the ingest readers, and a whole run against a real
//! nats-server where the bad files are named with their reason and the rest go on.

use std::io::Write;

use async_nats::jetstream;
use cauce_ingest::testkit::{pdf_bytes, pdf_document};
use cauce_ingest::{IngestOptions, Refusal, SkipReason, docx, epub, pdf};
use cauce_nats::testkit::NatsServer;
use cauce_nats::wire::{self, DocRecord};
use cauce_nats::{DocId, Limits, names};
use lopdf::{EncryptionState, EncryptionVersion, Permissions};
use tokio_util::sync::CancellationToken;

type Result<T = ()> = anyhow::Result<T>;

/// The same PDF, encrypted (RC4, 128 bits) with `user_password` to open it.
fn encrypted_pdf(user_password: &str) -> Vec<u8> {
    let mut doc = pdf_document("Locked", &["A secret page about zebras."]);
    let version = EncryptionVersion::V2 {
        document: &doc,
        owner_password: "owner",
        user_password,
        key_length: 128,
        permissions: Permissions::all(),
    };
    let state = EncryptionState::try_from(version).unwrap();
    doc.encrypt(&state).unwrap();
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

/// A DOCX whose body is `body` (the XML inside `<w:body>`), with Word's built-in
/// heading styles named as a Spanish Word names them.
fn docx_bytes(title: &str, body: &str) -> Vec<u8> {
    const W: &str = "http://schemas.openxmlformats.org/wordprocessingml/2006/main";
    let parts = [
        (
            "[Content_Types].xml",
            r#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/></Types>"#.to_string(),
        ),
        (
            "word/document.xml",
            format!(r#"<?xml version="1.0"?><w:document xmlns:w="{W}"><w:body>{body}</w:body></w:document>"#),
        ),
        (
            "word/styles.xml",
            format!(
                r#"<?xml version="1.0"?><w:styles xmlns:w="{W}">
                <w:style w:type="paragraph" w:styleId="Ttulo1"><w:name w:val="heading 1"/></w:style>
                <w:style w:type="paragraph" w:styleId="Ttulo2"><w:name w:val="heading 2"/></w:style>
                </w:styles>"#
            ),
        ),
        (
            "docProps/core.xml",
            format!(
                r#"<?xml version="1.0"?><cp:coreProperties xmlns:cp="cp" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{title}</dc:title></cp:coreProperties>"#
            ),
        ),
    ];
    zip_of(&parts)
}

fn zip_of(parts: &[(&str, String)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, text) in parts {
        zip.start_file(*name, options).unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// An EPUB of two chapters, listed in the manifest in the opposite order of the spine.
fn epub_bytes() -> Vec<u8> {
    let chapter = |title: &str, id: &str, text: &str| {
        format!(
            r#"<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title>{title}</title></head>
            <body><h1 id="{id}">{title}</h1><p>{text}</p></body></html>"#
        )
    };
    zip_of(&[
        ("mimetype", "application/epub+zip".into()),
        (
            "META-INF/container.xml",
            r#"<?xml version="1.0"?><container xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>"#.into(),
        ),
        (
            "OEBPS/content.opf",
            r#"<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" xmlns:dc="http://purl.org/dc/elements/1.1/"><metadata><dc:title>Química básica</dc:title></metadata>
            <manifest><item id="two" href="text/ch2.xhtml" media-type="application/xhtml+xml"/><item id="one" href="text/ch1.xhtml" media-type="application/xhtml+xml"/></manifest>
            <spine><itemref idref="one"/><itemref idref="two"/></spine></package>"#.into(),
        ),
        ("OEBPS/text/ch1.xhtml", chapter("Átomos", "atomos", "Un átomo tiene protones y electrones.")),
        ("OEBPS/text/ch2.xhtml", chapter("Enlaces", "enlaces", "Un enlace covalente comparte electrones.")),
    ])
}

fn paragraph(style: Option<&str>, text: &str) -> String {
    let style = style.map_or(String::new(), |s| {
        format!(r#"<w:pPr><w:pStyle w:val="{s}"/></w:pPr>"#)
    });
    format!("<w:p>{style}<w:r><w:t xml:space=\"preserve\">{text}</w:t></w:r></w:p>")
}

#[test]
fn pdf_pages_become_sections_anchored_by_page() -> Result {
    let raw = pdf_bytes(
        "Biology notes",
        &[
            "Cells are the unit of life.\nEvery cell has a mem-\nbrane.",
            "Photosynthesis happens in chloroplasts.\n\nIt needs light.",
        ],
    );
    let doc = pdf::extract(&raw).map_err(anyhow::Error::msg)?;
    assert_eq!(doc.title.as_deref(), Some("Biology notes"));
    let anchors: Vec<_> = doc.sections.iter().map(|s| s.anchor.clone()).collect();
    assert_eq!(anchors, [Some("page=1".into()), Some("page=2".into())]);
    let first = doc.sections[0].paragraphs.join(" ");
    assert!(first.contains("Cells are the unit of life."), "{first}");
    assert!(
        first.contains("membrane"),
        "a hyphenated word is mended: {first}"
    );
    let second = doc.sections[1].paragraphs.join(" ");
    assert!(
        second.contains("chloroplasts") && second.contains("light"),
        "{second}"
    );
    assert!(doc.sections.iter().all(|s| s.heading_path.is_empty()));
    Ok(())
}

#[test]
fn an_encrypted_pdf_is_refused_unless_its_password_is_empty() -> Result {
    assert_eq!(
        pdf::extract(&encrypted_pdf("secret")),
        Err(Refusal::Encrypted)
    );
    // an empty user password only restricts what a viewer allows: its text is readable
    let open = pdf::extract(&encrypted_pdf("")).map_err(anyhow::Error::msg)?;
    assert!(
        open.sections[0].paragraphs[0].contains("zebras"),
        "{open:?}"
    );
    Ok(())
}

#[test]
fn a_pdf_without_text_or_cut_short_is_refused_with_its_reason() {
    let scan = pdf_bytes("Scan", &["", ""]);
    assert_eq!(pdf::extract(&scan), Err(Refusal::NoTextLayer { pages: 2 }));
    let message = Refusal::NoTextLayer { pages: 2 }.to_string();
    assert!(message.contains("OCR"), "{message}");

    let whole = pdf_bytes("Cut", &["Some text on a page."]);
    let cut = &whole[..whole.len() / 3];
    assert!(matches!(pdf::extract(cut), Err(Refusal::Corrupt(_))));
}

#[test]
fn docx_keeps_headings_tables_and_its_title() -> Result {
    let body = [
        paragraph(None, "Apuntes de la clase."),
        paragraph(Some("Ttulo1"), "Mitosis"),
        paragraph(None, "La c&#233;lula se divide en dos &amp; copia su ADN."),
        paragraph(Some("Ttulo2"), "Fases"),
        r#"<w:tbl><w:tr><w:tc><w:p><w:r><w:t>Profase</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>los cromosomas se condensan</w:t></w:r></w:p></w:tc></w:tr></w:tbl>"#.to_string(),
        paragraph(Some("Ttulo1"), "Meiosis"),
        paragraph(None, "Produce gametos."),
    ]
    .concat();
    let doc = docx::extract(&docx_bytes("Biología 1", &body)).map_err(anyhow::Error::msg)?;
    assert_eq!(doc.title.as_deref(), Some("Biología 1"));
    let summary: Vec<_> = doc
        .sections
        .iter()
        .map(|s| {
            (
                s.heading_path.join(" > "),
                s.anchor.clone(),
                s.paragraphs.join(" / "),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("".into(), None, "Apuntes de la clase.".into()),
            (
                "Mitosis".into(),
                Some("mitosis".into()),
                "La célula se divide en dos & copia su ADN.".into()
            ),
            (
                "Mitosis > Fases".into(),
                Some("fases".into()),
                "Profase | los cromosomas se condensan".into()
            ),
            (
                "Meiosis".into(),
                Some("meiosis".into()),
                "Produce gametos.".into()
            ),
        ]
    );
    Ok(())
}

#[test]
fn epub_chapters_follow_the_spine() -> Result {
    let book = epub::extract(&epub_bytes()).map_err(anyhow::Error::msg)?;
    assert_eq!(book.title.as_deref(), Some("Química básica"));
    let headings: Vec<_> = book
        .sections
        .iter()
        .map(|s| (s.heading_path.join(" > "), s.anchor.clone()))
        .collect();
    assert_eq!(
        headings,
        [
            ("Átomos".to_string(), Some("atomos".to_string())),
            ("Enlaces".to_string(), Some("enlaces".to_string()))
        ]
    );
    assert!(book.sections[1].paragraphs[0].contains("covalente"));
    Ok(())
}

#[tokio::test]
async fn a_run_publishes_good_files_and_names_each_bad_one_with_its_reason() -> Result {
    let nats = NatsServer::start().unwrap_or_else(|err| panic!("{err}"));
    let js = jetstream::new(nats.client().await);
    cauce_nats::apply(&js, &Limits::default()).await?;
    let dir = tempfile::tempdir()?;
    let course = dir.path().join("course");
    std::fs::create_dir_all(&course)?;
    let write = |name: &str, bytes: &[u8]| std::fs::write(course.join(name), bytes);
    write(
        "notes.pdf",
        &pdf_bytes("Notes", &["Page one text.", "Osmosis moves water."]),
    )?;
    write("locked.pdf", &encrypted_pdf("secret"))?;
    write("scan.pdf", &pdf_bytes("Scan", &[""]))?;
    write("broken.docx", b"PK\x03\x04 not a whole archive")?;
    let body = paragraph(Some("Ttulo1"), "Mitosis") + &paragraph(None, "Two daughter cells.");
    write("cells.docx", &docx_bytes("Cells", &body))?;
    write("chemistry.epub", &epub_bytes())?;

    let options = IngestOptions {
        paths: vec![course.clone()],
        ..IngestOptions::default()
    };
    let summary = cauce_ingest::run(options, &js, &CancellationToken::new()).await?;
    assert_eq!(summary.published, 3, "{summary}");
    let reasons = summary.skipped_by_reason();
    for reason in [
        SkipReason::Encrypted,
        SkipReason::NoTextLayer,
        SkipReason::Corrupt,
    ] {
        assert_eq!(reasons.get(&reason), Some(&1), "{summary}");
    }
    let printed = summary.to_string();
    for name in [
        "locked.pdf: it is encrypted",
        "scan.pdf: none of its 1 pages",
        "broken.docx: it is corrupt",
    ] {
        assert!(printed.contains(name), "{name:?} not in {printed}");
    }

    let notes = document(&js, "course-notes").await?;
    assert_eq!(notes.title, "Notes");
    let osmosis = notes
        .passages
        .iter()
        .find(|p| p.text.contains("Osmosis"))
        .unwrap();
    assert_eq!(osmosis.anchor.as_deref(), Some("page=2"));
    assert!(notes.location.ends_with("notes.pdf"), "{}", notes.location);
    let cells = document(&js, "course-cells").await?;
    assert_eq!(cells.passages[0].heading_path, ["Mitosis"]);
    Ok(())
}

async fn document(js: &jetstream::Context, id: &str) -> Result<wire::Document> {
    let stream = js.get_stream(names::DOCS).await?;
    let message = stream
        .get_last_raw_message_by_subject(&names::doc_subject(&DocId::parse(id)?))
        .await?;
    match wire::decode_compressed(&message.payload)? {
        DocRecord::Document(doc) => Ok(doc),
        other => anyhow::bail!("expected a document, got {other:?}"),
    }
}
