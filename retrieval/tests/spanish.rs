//! A Spanish corpus indexed with the Spanish analyzer (`--language es`), against a
//! real nats-server and a real tantivy index: a question finds the one passage that
//! states the fact although its words are other inflections of the passage's words
//! ("conservaremos" for "conserva", "contestado" for "contestación"), which only the
//! Spanish stemmer brings together: an English index of the same corpus misses it.

mod common;

use cauce_nats::Limits;
use cauce_retrieval::{Language, WorkerConfig};
use common::*;

#[tokio::test]
async fn a_spanish_index_finds_a_document_by_another_inflection() -> Result {
    let nats = server();
    let limits = Limits::default();
    let js = jetstream(&nats, &limits).await?;
    let dir = tempfile::tempdir()?;
    let corpus = copy_fixtures("fixtures_es", &dir.path().join("documentos"))?;
    let summary = ingest(&js, &corpus, false).await?;
    assert_eq!(summary.published, 3, "{summary}");

    // the passage says "conserva" and "contestación"; the question uses neither form
    let question = "¿Cuánto tiempo conservaremos lo contestado?";
    let document = std::fs::read_to_string(corpus.join("almacenamiento.md"))?.to_lowercase();
    for inflection in ["conservaremos", "contestado"] {
        assert!(!document.contains(inflection), "{inflection}");
    }
    let fact = ["Almacenamiento", "Cubo de resultados"];

    let spanish = Worker::start_with(&nats, config(&dir, "es")).await;
    // the worker pulls questions only once its index has caught up with DOCS
    let sources = ask(&js, question).await?;
    assert_eq!(
        first_doc(&sources),
        Some("documentos-almacenamiento"),
        "{sources:?}"
    );
    assert_eq!(sources[0].heading_path, fact, "{sources:?}");
    assert_eq!(worker_stats(&nats).await?.language, "spanish");
    spanish.stop().await?;

    // the control: the same corpus and question through the English analyzer
    let english = Worker::start_with(&nats, config(&dir, "en")).await;
    let sources = ask(&js, question).await?;
    assert!(
        sources.first().is_none_or(|s| s.heading_path != fact),
        "{sources:?}"
    );
    english.stop().await
}

fn config(dir: &tempfile::TempDir, language: &str) -> WorkerConfig {
    let language: Language = language.parse().expect("a known language");
    let mut config = WorkerConfig::new(dir.path().join("index").join(language.as_str()));
    config.language = language;
    config
}
