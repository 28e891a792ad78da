//! Hybrid ranking with the real embedding model (all-MiniLM-L6-v2, installed by
//! `ops/setup`): fused scores rank the candidate that means what the question asks
//! above one that only shares its words, vectors are kept across a restart, a search
//! whose candidates lack vectors or whose question is longer than its vector reads keeps
//! BM25's order, and a worker computes the vectors
//! of what it indexes and then ranks with them.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use cauce_nats::DocId;
use cauce_nats::wire::Passage;
use cauce_retrieval::WorkerConfig;
use cauce_retrieval::context::Hit;
use cauce_retrieval::embed::{Embedder, MODEL_DIR_NAME};
use cauce_retrieval::hybrid::{Hybrid, HybridConfig, IndexedPassage, PassageKey, Reranked};
use common::*;
use tokio_util::sync::CancellationToken;

/// Where `ops/setup` installs the model.
fn model_dir() -> PathBuf {
    let home = std::env::var_os("CAUCE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".local/share/cauce")
        });
    home.join("models").join(MODEL_DIR_NAME)
}

fn config(vectors_file: PathBuf) -> HybridConfig {
    HybridConfig {
        model_dir: model_dir(),
        vectors_file,
        weight: 0.5,
        dense_candidates: 16,
    }
}

fn hit(doc: &str, score: f32, text: &str) -> Hit {
    Hit {
        passage: Passage {
            doc_id: DocId::parse(doc).unwrap(),
            version: "v1".into(),
            // a title that says nothing of either meaning: the texts decide
            title: "Notes".into(),
            heading_path: Vec::new(),
            location: format!("{doc}.md"),
            score,
            text: text.into(),
        },
        ord: 0,
    }
}

fn open(config: &HybridConfig) -> Hybrid {
    Hybrid::open(config).unwrap_or_else(|err| panic!("{err}"))
}

/// The first components of two questions' vectors as candle's BERT computed them
/// (sentence-transformers' mean pooling), before the model had its own forward pass.
#[test]
fn vectors_are_the_models_reference_vectors() {
    let embedder = Embedder::load(&model_dir()).unwrap_or_else(|err| panic!("{err}"));
    let reference: [(&str, [f32; 6]); 2] = [
        (
            "How do I sort a list in Python?",
            [
                0.010174951,
                0.05540417,
                0.033831816,
                -0.014342589,
                0.019423248,
                -0.057675853,
            ],
        ),
        (
            "¿Cómo ordeno una lista?",
            [
                -0.034806132,
                0.00939961,
                -0.062355906,
                0.02140946,
                -0.008532265,
                0.047027767,
            ],
        ),
    ];
    let texts: Vec<&str> = reference.iter().map(|(text, _)| *text).collect();
    // several texts at once (shared among threads) and one alone give the same vectors
    let together = embedder.embed(&texts).unwrap();
    for ((text, expected), vector) in reference.iter().zip(&together) {
        let alone = embedder.embed(&[text]).unwrap().pop().unwrap();
        assert_eq!(&alone, vector, "{text}");
        assert_eq!(vector.len(), cauce_retrieval::embed::DIM);
        let norm: f32 = vector.iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-4, "{text}: |v|² = {norm}");
        for (got, want) in vector.iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "{text}: {:?}", &vector[..6]);
        }
    }
}

fn indexed(hit: &Hit) -> IndexedPassage {
    IndexedPassage {
        key: PassageKey {
            doc_id: hit.passage.doc_id.as_str().to_string(),
            ord: hit.ord,
        },
        title: hit.passage.title.clone(),
        heading_path: hit.passage.heading_path.clone(),
        text: hit.passage.text.clone(),
    }
}

fn no_fetch(_: &[PassageKey]) -> Vec<Hit> {
    Vec::new()
}

#[test]
fn fused_scores_rank_by_meaning_and_vectors_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path().join("vectors.bin"));
    let hybrid = open(&config);
    // BM25 prefers the passage that repeats the question's words
    let mut hits = vec![
        hit(
            "snakes",
            5.0,
            "Python snakes: a python file of field notes, kept on the python farm.",
        ),
        hit(
            "files",
            4.0,
            "To delete a file, call os.remove(path); os.unlink is the same function.",
        ),
    ];
    let query = "how do I delete a python file";
    // no vectors yet: BM25's order stays
    assert_eq!(
        hybrid.rerank(&[query], &mut hits, no_fetch),
        Reranked::Warming
    );
    assert_eq!(hits[0].passage.doc_id.as_str(), "snakes");

    let passages: Vec<IndexedPassage> = hits.iter().map(indexed).collect();
    let computed = hybrid
        .backfill(&passages, &CancellationToken::new())
        .unwrap();
    assert_eq!(
        (computed, hybrid.vectors(), hybrid.pending()),
        (2, 2, Some(0))
    );
    assert_eq!(
        hybrid.rerank(&[query], &mut hits, no_fetch),
        Reranked::Fused
    );
    assert_eq!(hits[0].passage.doc_id.as_str(), "files", "{hits:#?}");
    assert!(hits[0].passage.score > hits[1].passage.score);

    // a question longer than its vector reads (a pasted paragraph) keeps BM25's order
    let pasted = format!("{query}: {}", "the python file of field notes ".repeat(8));
    let mut long = hits.clone();
    long.reverse();
    assert_eq!(
        hybrid.rerank(&[pasted.as_str()], &mut long, no_fetch),
        Reranked::Long
    );
    assert_eq!(long[0].passage.doc_id.as_str(), "snakes");
    // a short question after a long turn is read alone
    let mut follow_up = long.clone();
    assert_eq!(
        hybrid.rerank(&[pasted.as_str(), query], &mut follow_up, no_fetch),
        Reranked::Fused
    );
    assert_eq!(follow_up[0].passage.doc_id.as_str(), "files");

    // a restart reads the kept vectors and computes none again
    drop(hybrid);
    let reopened = open(&config);
    assert_eq!(reopened.vectors(), 2);
    let computed = reopened
        .backfill(&passages, &CancellationToken::new())
        .unwrap();
    assert_eq!(computed, 0);
}

/// Passages BM25 did not find join the candidates, nearest the question first, and are
/// ranked by their fused scores.
#[test]
fn the_nearest_passages_join_bm25s_candidates() {
    let dir = tempfile::tempdir().unwrap();
    let hybrid = open(&config(dir.path().join("vectors.bin")));
    let found = hit(
        "snakes",
        5.0,
        "Python snakes: a python file of field notes, kept on the python farm.",
    );
    let mut unfound = vec![
        hit(
            "weather",
            0.0,
            "Tomorrow brings rain in the north and sun along the coast.",
        ),
        hit(
            "cleanup",
            0.0,
            "Erasing something from the disk: os.remove(path) takes it away for good.",
        ),
    ];
    unfound[1].ord = 3;
    let passages: Vec<IndexedPassage> = std::iter::once(&found)
        .chain(&unfound)
        .map(indexed)
        .collect();
    hybrid
        .backfill(&passages, &CancellationToken::new())
        .unwrap();

    let mut asked = Vec::new();
    let mut hits = vec![found.clone()];
    let fetch = |keys: &[PassageKey]| {
        asked = keys.to_vec();
        unfound
            .iter()
            .filter(|h| keys.contains(&indexed(h).key))
            .cloned()
            .collect()
    };
    let reranked = hybrid.rerank(&["how can I remove a file from disk"], &mut hits, fetch);
    assert_eq!(reranked, Reranked::Fused);
    // BM25's own candidate is not asked for again; the nearer passage is asked first
    let asked: Vec<&str> = asked.iter().map(|k| k.doc_id.as_str()).collect();
    assert_eq!(asked, ["cleanup", "weather"]);
    let ranked: Vec<&str> = hits.iter().map(|h| h.passage.doc_id.as_str()).collect();
    assert_eq!(ranked.len(), 3);
    let place = |doc| ranked.iter().position(|d| *d == doc);
    assert!(place("cleanup") < place("weather"), "{hits:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_computes_its_passages_vectors_and_ranks_with_them() -> Result {
    let nats = server();
    let js = jetstream(&nats, &cauce_nats::Limits::default()).await?;
    let dir = tempfile::tempdir()?;
    ingest(&js, &corpus(dir.path())?, false).await?;
    let mut worker_config = WorkerConfig::new(dir.path().join("index"));
    worker_config.hybrid = Some(config(dir.path().join("vectors.bin")));
    let worker = Worker::start_with(&nats, worker_config).await;

    let mut pending = None;
    for _ in 0..600 {
        let stats = worker_stats(&nats).await?;
        pending = stats
            .metrics
            .gauges
            .get("cauce_retrieval_vectors_pending_passages")
            .copied();
        if pending == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(pending, Some(0.0), "every passage has its vector");
    let sources = ask(&js, "How do the gateways scale out?").await?;
    assert!(!sources.is_empty());
    let stats = worker_stats(&nats).await?;
    let fused = stats.metrics.counters["cauce_retrieval_hybrid_searches_total"];
    assert!(fused >= 1.0, "{:?}", stats.metrics.counters);
    worker.stop().await
}
