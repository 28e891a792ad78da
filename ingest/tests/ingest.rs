//! `cauce-ingest` against a real nats-server: what lands in `DOCS`.

use std::path::Path;

use async_nats::jetstream;
use cauce_ingest::{IngestOptions, SkipReason, Summary};
use cauce_nats::testkit::NatsServer;
use cauce_nats::wire::{self, DocRecord, Document};
use cauce_nats::{DocId, Limits, names};
use tokio_util::sync::CancellationToken;

type Result<T = ()> = anyhow::Result<T>;

async fn setup() -> Result<(NatsServer, jetstream::Context)> {
    let nats = NatsServer::start().unwrap_or_else(|err| panic!("{err}"));
    let js = jetstream::new(nats.client().await);
    cauce_nats::apply(&js, &Limits::default()).await?;
    Ok((nats, js))
}

async fn ingest(js: &jetstream::Context, path: &Path, delete_missing: bool) -> Result<Summary> {
    let options = IngestOptions {
        paths: vec![path.to_path_buf()],
        delete_missing,
        ..IngestOptions::default()
    };
    Ok(cauce_ingest::run(options, js, &CancellationToken::new()).await?)
}

async fn record(js: &jetstream::Context, id: &str) -> Result<DocRecord> {
    let stream = js.get_stream(names::DOCS).await?;
    let message = stream
        .get_last_raw_message_by_subject(&names::doc_subject(&DocId::parse(id)?))
        .await?;
    Ok(wire::decode_compressed(&message.payload)?)
}

async fn document(js: &jetstream::Context, id: &str) -> Result<Document> {
    match record(js, id).await? {
        DocRecord::Document(doc) => Ok(doc),
        other => anyhow::bail!("expected a document, got {other:?}"),
    }
}

async fn stored_messages(js: &jetstream::Context) -> Result<u64> {
    Ok(js
        .get_stream(names::DOCS)
        .await?
        .info()
        .await?
        .state
        .messages)
}

fn write(dir: &Path, name: &str, text: &str) -> Result {
    std::fs::create_dir_all(dir.join(name).parent().unwrap())?;
    Ok(std::fs::write(dir.join(name), text)?)
}

#[tokio::test]
async fn html_and_markdown_keep_their_structure_in_docs() -> Result {
    let (_nats, js) = setup().await?;
    let dir = tempfile::tempdir()?;
    let site = dir.path().join("site");
    write(
        &site,
        "guide/install.md",
        "# Install\n\nRun the setup script.\n\n## On Debian {#debian}\n\nUse apt to install nats-server.\n",
    )?;
    write(
        &site,
        "api.html",
        "<html><head><title>API</title><script>var leaked = 'zeppelin';</script></head><body>\
         <nav>Home</nav><h1>HTTP API</h1><p>Chat completions stream tokens.</p>\
         <h2 id=\"tasks\">Tasks</h2><p>Poll a task by id.</p><style>.x{}</style></body></html>",
    )?;
    write(&site, "logo.png", "not really a png")?;

    let summary = ingest(&js, &site, false).await?;
    assert_eq!(summary.published, 2, "{summary}");
    assert_eq!(
        summary
            .skipped_by_reason()
            .get(&SkipReason::UnsupportedType),
        Some(&1),
        "{summary}"
    );

    let md = document(&js, "site-guide-install").await?;
    assert_eq!(md.title, "Install");
    assert_eq!(md.passages[1].heading_path, ["Install", "On Debian"]);
    assert_eq!(md.passages[1].anchor.as_deref(), Some("debian"));
    assert!(md.location.ends_with("install.md"), "{}", md.location);

    let html = document(&js, "site-api").await?;
    assert_eq!(html.title, "API");
    assert_eq!(html.passages[0].heading_path, ["HTTP API"]);
    assert_eq!(html.passages[1].heading_path, ["HTTP API", "Tasks"]);
    assert_eq!(html.passages[1].anchor.as_deref(), Some("tasks"));
    let all = format!("{html:?}");
    assert!(
        !all.contains("zeppelin") && !all.contains("Home") && !all.contains(".x{}"),
        "{all}"
    );
    Ok(())
}

#[tokio::test]
async fn unchanged_documents_are_not_republished_and_missing_ones_are_tombstoned() -> Result {
    let (_nats, js) = setup().await?;
    let dir = tempfile::tempdir()?;
    let docs = dir.path().join("docs");
    write(&docs, "a.md", "# A\n\nalpha")?;
    write(&docs, "b.txt", "Bee\n\nbravo")?;
    let first = ingest(&js, &docs, false).await?;
    assert_eq!((first.published, first.unchanged), (2, 0), "{first}");
    let stored = stored_messages(&js).await?;

    let again = ingest(&js, &docs, false).await?;
    assert_eq!((again.published, again.unchanged), (0, 2), "{again}");
    assert_eq!(
        stored_messages(&js).await?,
        stored,
        "nothing was sent again"
    );

    write(&docs, "a.md", "# A\n\nalpha, changed")?;
    std::fs::remove_file(docs.join("b.txt"))?;
    let without_delete = ingest(&js, &docs, false).await?;
    assert_eq!(
        (without_delete.published, without_delete.deleted),
        (1, 0),
        "{without_delete}"
    );
    assert!(matches!(
        record(&js, "docs-b").await?,
        DocRecord::Document(_)
    ));

    let with_delete = ingest(&js, &docs, true).await?;
    assert_eq!(
        (
            with_delete.published,
            with_delete.unchanged,
            with_delete.deleted
        ),
        (0, 1, 1),
        "{with_delete}"
    );
    assert!(matches!(
        record(&js, "docs-b").await?,
        DocRecord::Tombstone(_)
    ));
    let once_more = ingest(&js, &docs, true).await?;
    assert_eq!(
        once_more.deleted, 0,
        "a tombstone is not sent twice: {once_more}"
    );

    // documents of other folders are never tombstoned by this one
    let other = dir.path().join("other");
    write(&other, "c.md", "# C\n\ncharlie")?;
    ingest(&js, &other, false).await?;
    assert_eq!(ingest(&js, &docs, true).await?.deleted, 0);
    assert!(matches!(
        record(&js, "other-c").await?,
        DocRecord::Document(_)
    ));
    Ok(())
}

#[tokio::test]
async fn id_prefix_names_documents() -> Result {
    let (_nats, js) = setup().await?;
    let dir = tempfile::tempdir()?;
    write(
        dir.path(),
        "Scaling Out.md",
        "# Scaling out\n\nStart more workers.",
    )?;
    let options = IngestOptions {
        paths: vec![dir.path().join("Scaling Out.md")],
        id_prefix: Some("guide".into()),
        ..IngestOptions::default()
    };
    cauce_ingest::run(options, &js, &CancellationToken::new()).await?;
    assert_eq!(
        document(&js, "guide-scaling-out").await?.title,
        "Scaling out"
    );
    Ok(())
}

#[tokio::test]
async fn a_document_too_large_for_one_message_is_refused_and_the_rest_published() -> Result {
    let (_nats, js) = setup().await?;
    let dir = tempfile::tempdir()?;
    let docs = dir.path().join("docs");
    write(&docs, "small.md", "# Small\n\nfits")?;
    // pseudo-random words do not compress below the server's 1 MiB max_payload
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut big = String::from("# Big\n\n");
    while big.len() < 4 * 1024 * 1024 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        big.push_str(&format!("{state:x} "));
    }
    write(&docs, "big.md", &big)?;

    let summary = ingest(&js, &docs, false).await?;
    assert_eq!(summary.published, 1, "{summary}");
    let refused: Vec<_> = summary
        .skipped
        .iter()
        .filter(|s| s.reason == SkipReason::TooLarge)
        .collect();
    assert_eq!(refused.len(), 1, "{summary}");
    assert!(refused[0].path.ends_with("big.md"));
    let message = cauce_ingest::Error::TooLarge {
        path: refused[0].path.clone(),
        size: 2_000_000,
        limit: 1_047_552,
    }
    .to_string();
    assert!(
        message.contains("big.md") && message.contains("1047552"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn delete_missing_tombstones_what_went_over_a_thousand_documents() -> Result {
    let (_nats, js) = setup().await?;
    let dir = tempfile::tempdir()?;
    let folder = dir.path().join("guide");
    for i in 0..1200 {
        let sub = if i % 2 == 0 { "library" } else { "copies" };
        write(
            &folder,
            &format!("{sub}/page-{i:04}.md"),
            &format!("# Page {i}\n\nText number {i}.\n"),
        )?;
    }
    let first = ingest(&js, &folder, false).await?;
    assert_eq!(first.published, 1200, "{first}");

    std::fs::remove_dir_all(folder.join("copies"))?;
    let second = ingest(&js, &folder, true).await?;
    assert_eq!(second.deleted, 600, "{second}");
    assert_eq!(second.unchanged, 600, "{second}");
    // a second run finds nothing more to delete
    assert_eq!(ingest(&js, &folder, true).await?.deleted, 0);
    Ok(())
}

#[tokio::test]
async fn generated_copies_and_excluded_globs_stay_out() -> Result {
    let (_nats, js) = setup().await?;
    let dir = tempfile::tempdir()?;
    let folder = dir.path().join("py");
    write(
        &folder,
        "library/os.html",
        "<h1>os</h1><p>Operating system interfaces.</p>",
    )?;
    write(
        &folder,
        "_sources/library/os.rst.txt",
        "os\n==\n\nOperating system interfaces.\n",
    )?;
    write(&folder, "_static/notes.txt", "static text")?;
    write(&folder, "drafts/wip.md", "# Work in progress\n\nNot yet.\n")?;
    write(&folder, "library/old.rst.txt", "old\n===\n\nOld text.\n")?;
    let options = IngestOptions {
        paths: vec![folder.clone()],
        exclude: vec!["drafts/**".into(), "*.rst.txt".into()],
        ..IngestOptions::default()
    };
    let summary = cauce_ingest::run(options, &js, &CancellationToken::new()).await?;
    assert_eq!(summary.published, 1, "{summary}");
    assert_eq!(stored_messages(&js).await?, 1);

    let everything = IngestOptions {
        paths: vec![folder],
        default_excludes: false,
        ..IngestOptions::default()
    };
    let summary = cauce_ingest::run(everything, &js, &CancellationToken::new()).await?;
    assert_eq!(summary.files, 5, "{summary}");
    let bad = IngestOptions {
        paths: vec![dir.path().to_path_buf()],
        exclude: vec!["a[".into()],
        ..IngestOptions::default()
    };
    let err = cauce_ingest::run(bad, &js, &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "bad_exclude", "{err}");
    Ok(())
}
