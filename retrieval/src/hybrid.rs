//! Hybrid ranking: BM25's best candidates, joined by the passages whose dense vectors
//! are nearest the question's, re-scored with both.
//!
//! The nearest passages come from a brute-force dot product over every passage's
//! vector (the Python documentation's 15,227 passages are about 6 M multiply-adds), so
//! a page that shares the question's meaning but not its words is found too. A
//! candidate's fused score is `(1 − w) · bm25 / best bm25 + w · cosine`, with `w` the
//! weight given (a passage found only by its vector has the BM25 score of the question's
//! terms in it, often 0). The worker computes the passages' vectors in the background as it
//! follows `DOCS` ([`Hybrid::backfill`], about 30 passages a second on two cores) and keeps
//! them, by the SHA-256 of the text each was computed from (the passage's page title and
//! headings, then its text), in memory and in a file beside the
//! index (records of the 32-byte hash and 384 little-endian `f32`), so a restart does
//! not compute them again. A search whose candidates do not all have their vector yet
//! keeps BM25's order, so a search never waits on the model for more than its question,
//! and a question longer than its vector reads (a pasted paragraph) keeps it too.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::context::Hit;
use crate::embed::{DIM, EmbedError, Embedder, similarity};

/// Where the model and the vectors are, and how much the vectors weigh.
#[derive(Clone, Debug)]
pub struct HybridConfig {
    /// The folder holding the embedding model's files.
    pub model_dir: PathBuf,
    /// The file the passages' vectors are kept in.
    pub vectors_file: PathBuf,
    /// Weight of the cosine similarity in the fused score, 0 to 1.
    pub weight: f32,
    /// Passages nearest the question by their vectors that join BM25's candidates.
    pub dense_candidates: usize,
}

/// The dense weight tuned on the even questions of `ops/eval-retrieval` with the dense
/// candidates (0.5 to 1; 0.8 to 0.9 found the same pages in the first four, 0.85 is
/// their middle).
pub const DEFAULT_WEIGHT: f32 = 0.85;
/// The dense candidates tuned on the even questions of `ops/eval-retrieval`.
pub const DEFAULT_DENSE_CANDIDATES: usize = 16;

/// Where a passage is in the index: its document and its position there.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PassageKey {
    pub doc_id: String,
    pub ord: u64,
}

/// A passage of the index, for computing its vector.
#[derive(Clone, Debug)]
pub struct IndexedPassage {
    pub key: PassageKey,
    /// Its document's title.
    pub title: String,
    /// The headings of its section, outermost first.
    pub heading_path: Vec<String>,
    pub text: String,
}

impl IndexedPassage {
    fn embedded(&self) -> String {
        embedded_text(&self.title, &self.heading_path, &self.text)
    }
}

/// What a passage's vector is computed from: its document's title and its section's
/// headings (each once), then its text, since a passage deep in a page seldom names the
/// page's topic itself.
fn embedded_text(title: &str, heading_path: &[String], text: &str) -> String {
    let mut names: Vec<&str> = Vec::with_capacity(heading_path.len() + 1);
    for name in std::iter::once(title).chain(heading_path.iter().map(String::as_str)) {
        let name = name.trim();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        return text.to_string();
    }
    format!("{}\n\n{text}", names.join(" > "))
}

/// The key of the vector of `hit`'s passage.
fn hit_hash(hit: &Hit) -> TextHash {
    let p = &hit.passage;
    hash(&embedded_text(&p.title, &p.heading_path, &p.text))
}

/// BM25's best candidates that must all have their vector for a search to fuse (the
/// chat's default of 4 sources fetches 32 candidates); a later one without its vector
/// counts a similarity of 0.
const RERANK_DEPTH: usize = 32;
/// Passages embedded at once by the backfill.
const BATCH: usize = 16;

type TextHash = [u8; 32];

/// The embedding model and the vectors computed so far.
pub struct Hybrid {
    embedder: Embedder,
    weight: f32,
    dense_candidates: usize,
    vectors: Mutex<Vectors>,
    /// The index's passages that have a vector, as of the last backfill.
    dense: RwLock<Arc<Dense>>,
    /// Passages of the index without a vector, as of the last backfill; -1 before one.
    pending: AtomicI64,
}

struct Vectors {
    known: HashMap<TextHash, Vec<f32>>,
    file: Option<File>,
}

/// Passages and their vectors, one row of [`DIM`] floats each, for the nearest search.
#[derive(Default)]
struct Dense {
    keys: Vec<PassageKey>,
    rows: Vec<f32>,
}

impl Hybrid {
    pub fn open(config: &HybridConfig) -> Result<Self, EmbedError> {
        let embedder = Embedder::load(&config.model_dir)?;
        let known = read_vectors(&config.vectors_file);
        info!(vectors = known.len(), file = %config.vectors_file.display(), "hybrid ranking on");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.vectors_file)
            .inspect_err(|err| warn!(error = %err, "vectors are not kept"))
            .ok();
        Ok(Self {
            embedder,
            weight: config.weight.clamp(0.0, 1.0),
            dense_candidates: config.dense_candidates,
            vectors: Mutex::new(Vectors { known, file }),
            dense: RwLock::default(),
            pending: AtomicI64::new(-1),
        })
    }

    /// Adds to `hits` the passages nearest the question by their vectors (`turns`: the
    /// earlier user turns, then the question; `fetch` reads the passages from the index,
    /// with their BM25 score), re-scores them all and sorts them best first. The BM25
    /// order stays when a candidate's vector is not computed yet, the question is longer
    /// than its vector reads, or the model fails.
    pub fn rerank(
        &self,
        turns: &[&str],
        hits: &mut Vec<Hit>,
        fetch: impl FnOnce(&[PassageKey]) -> Vec<Hit>,
    ) -> Reranked {
        if hits.is_empty() || turns.last().is_none_or(|q| q.trim().is_empty()) {
            return Reranked::Skipped;
        }
        let mut hashes: Vec<TextHash> = hits.iter().map(hit_hash).collect();
        if !self.all_known(&hashes[..hashes.len().min(RERANK_DEPTH)]) {
            return Reranked::Warming;
        }
        let question = match self.embedder.embed_question(turns) {
            Ok(Some(vector)) => vector,
            Ok(None) => return Reranked::Long,
            Err(err) => {
                warn!(error = %err, "hybrid ranking skipped");
                return Reranked::Skipped;
            }
        };
        let nearest = self.nearest(&question, hits);
        if !nearest.is_empty() {
            let found = fetch(&nearest);
            hashes.extend(found.iter().map(hit_hash));
            hits.extend(found);
        }
        self.fuse(&question, hits, &hashes);
        Reranked::Fused
    }

    /// The keys of the passages nearest `question` that are not among `hits`.
    fn nearest(&self, question: &[f32], hits: &[Hit]) -> Vec<PassageKey> {
        if self.dense_candidates == 0 {
            return Vec::new();
        }
        let dense = self.dense.read().expect("not poisoned").clone();
        let found = |key: &PassageKey| {
            hits.iter()
                .any(|h| h.ord == key.ord && h.passage.doc_id.as_str() == key.doc_id)
        };
        dense
            .nearest(question, self.dense_candidates + hits.len())
            .into_iter()
            .map(|row| &dense.keys[row])
            .filter(|key| !found(key))
            .take(self.dense_candidates)
            .cloned()
            .collect()
    }

    /// Scores each hit `(1 − w) · bm25 / best bm25 + w · cosine` (a cosine of 0 where
    /// its vector is not known) and sorts them best first.
    /// `hashes` are the hits' [`hit_hash`], in their order.
    fn fuse(&self, question: &[f32], hits: &mut [Hit], hashes: &[TextHash]) {
        let best = hits
            .iter()
            .map(|h| h.passage.score)
            .fold(f32::MIN, f32::max)
            .max(f32::MIN_POSITIVE);
        let vectors = self.vectors.lock().expect("not poisoned");
        let cosines: Vec<f32> = hashes
            .iter()
            .map(|hash| {
                vectors
                    .known
                    .get(hash)
                    .map_or(0.0, |v| similarity(question, v))
            })
            .collect();
        drop(vectors);
        for (hit, cosine) in hits.iter_mut().zip(cosines) {
            hit.passage.score =
                (1.0 - self.weight) * hit.passage.score / best + self.weight * cosine;
        }
        hits.sort_by(|a, b| b.passage.score.total_cmp(&a.passage.score));
    }

    /// Whether every hit's vector is known.
    fn all_known(&self, hashes: &[TextHash]) -> bool {
        let vectors = self.vectors.lock().expect("not poisoned");
        hashes.iter().all(|h| vectors.known.contains_key(h))
    }

    /// Computes and keeps the vectors of the `passages` that have none, in batches,
    /// until `cancel` fires, then makes `passages` the ones the nearest search reads;
    /// returns how many it computed.
    pub fn backfill(
        &self,
        passages: &[IndexedPassage],
        cancel: &CancellationToken,
    ) -> Result<usize, EmbedError> {
        let inputs: Vec<String> = passages.iter().map(IndexedPassage::embedded).collect();
        let hashes: Vec<TextHash> = inputs.iter().map(|text| hash(text)).collect();
        let missing: Vec<(TextHash, &str)> = {
            let vectors = self.vectors.lock().expect("not poisoned");
            hashes
                .iter()
                .zip(&inputs)
                .filter(|(h, _)| !vectors.known.contains_key(*h))
                .map(|(h, text)| (*h, text.as_str()))
                .collect()
        };
        self.pending.store(missing.len() as i64, Ordering::Relaxed);
        let mut computed = 0;
        for batch in missing.chunks(BATCH) {
            if cancel.is_cancelled() {
                break;
            }
            let texts: Vec<&str> = batch.iter().map(|(_, t)| *t).collect();
            let batch_vectors = self.embedder.embed(&texts)?;
            let mut vectors = self.vectors.lock().expect("not poisoned");
            for ((hash, _), vector) in batch.iter().zip(batch_vectors) {
                vectors.keep(*hash, vector);
            }
            computed += batch.len();
            self.pending
                .fetch_sub(batch.len() as i64, Ordering::Relaxed);
        }
        if !cancel.is_cancelled() {
            self.index_dense(passages, &hashes);
        }
        Ok(computed)
    }

    /// Makes the `passages` that have a vector the ones the nearest search reads.
    fn index_dense(&self, passages: &[IndexedPassage], hashes: &[TextHash]) {
        let mut dense = Dense::default();
        {
            let vectors = self.vectors.lock().expect("not poisoned");
            for (passage, hash) in passages.iter().zip(hashes) {
                if let Some(vector) = vectors.known.get(hash) {
                    dense.keys.push(passage.key.clone());
                    dense.rows.extend_from_slice(vector);
                }
            }
        }
        *self.dense.write().expect("not poisoned") = Arc::new(dense);
    }

    /// Vectors known, for the stats.
    pub fn vectors(&self) -> usize {
        self.vectors.lock().expect("not poisoned").known.len()
    }

    /// Passages of the index still without a vector; `None` before the first backfill.
    pub fn pending(&self) -> Option<u64> {
        u64::try_from(self.pending.load(Ordering::Relaxed)).ok()
    }
}

/// What [`Hybrid::rerank`] did with one search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reranked {
    /// Fused scores ranked the candidates.
    Fused,
    /// Some candidate has no vector yet: BM25's order.
    Warming,
    /// The question is longer than its vector reads
    /// ([`QUESTION_TOKENS`](crate::embed::QUESTION_TOKENS)): BM25's order.
    Long,
    /// Nothing to rank, or the model failed: BM25's order.
    Skipped,
}

impl Dense {
    /// The rows of the `k` vectors nearest `question`, nearest first.
    fn nearest(&self, question: &[f32], k: usize) -> Vec<usize> {
        let mut scored: Vec<(f32, usize)> = self
            .rows
            .chunks_exact(DIM)
            .map(|row| similarity(question, row))
            .zip(0..)
            .collect();
        let by_score = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0);
        if scored.len() > k && k > 0 {
            scored.select_nth_unstable_by(k - 1, by_score);
            scored.truncate(k);
        }
        scored.sort_unstable_by(by_score);
        scored.into_iter().take(k).map(|(_, row)| row).collect()
    }
}

impl Vectors {
    fn keep(&mut self, hash: TextHash, vector: Vec<f32>) {
        if let Some(file) = &mut self.file {
            let mut record = Vec::with_capacity(32 + DIM * 4);
            record.extend_from_slice(&hash);
            record.extend(vector.iter().flat_map(|x| x.to_le_bytes()));
            if let Err(err) = file.write_all(&record) {
                warn!(error = %err, "vector not kept");
                self.file = None;
            }
        }
        self.known.insert(hash, vector);
    }
}

fn hash(text: &str) -> TextHash {
    Sha256::digest(text.as_bytes()).into()
}

/// The vectors in `path`; a missing file is none, a cut last record is left out.
fn read_vectors(path: &Path) -> HashMap<TextHash, Vec<f32>> {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_end(&mut bytes);
    }
    bytes
        .chunks_exact(32 + DIM * 4)
        .map(|record| {
            let hash: TextHash = record[..32].try_into().expect("32 bytes");
            let vector = record[32..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect();
            (hash, vector)
        })
        .collect()
}
