//! Hybrid ranking: BM25's best candidates re-scored with the cosine similarity of their
//! dense vectors to the question's.
//!
//! A candidate's fused score is `(1 − w) · bm25 / best bm25 + w · cosine`, with `w` the
//! weight given. The worker computes the passages' vectors in the background as it
//! follows `DOCS` ([`Hybrid::backfill`], about 18 passages a second on two cores) and keeps
//! them, by the SHA-256 of each passage's text, in memory and in a file beside the
//! index (records of the 32-byte hash and 384 little-endian `f32`), so a restart does
//! not compute them again. A search whose candidates do not all have their vector yet
//! keeps BM25's order, so a search never waits on the model for more than its question.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

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
}

/// BM25's best candidates that are re-scored; the rest count a similarity of 0 (the
/// chat's default of 4 sources fetches 32 candidates).
const RERANK_DEPTH: usize = 32;
/// Passages embedded at once by the backfill.
const BATCH: usize = 16;

type TextHash = [u8; 32];

/// The embedding model and the vectors computed so far.
pub struct Hybrid {
    embedder: Embedder,
    weight: f32,
    vectors: Mutex<Vectors>,
    /// Passages of the index without a vector, as of the last backfill; -1 before one.
    pending: AtomicI64,
}

struct Vectors {
    known: HashMap<TextHash, Vec<f32>>,
    file: Option<File>,
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
            vectors: Mutex::new(Vectors { known, file }),
            pending: AtomicI64::new(-1),
        })
    }

    /// Re-scores `hits` for `query` and sorts them best first. The BM25 order stays
    /// when a candidate's vector is not computed yet, or the model fails.
    pub fn rerank(&self, query: &str, hits: &mut [Hit]) -> Reranked {
        if hits.is_empty() || query.trim().is_empty() {
            return Reranked::Skipped;
        }
        let depth = hits.len().min(RERANK_DEPTH);
        let Some(vectors) = self.known_vectors(&hits[..depth]) else {
            return Reranked::Warming;
        };
        let question = match self.embedder.embed(&[query]) {
            Ok(mut vectors) => vectors.pop().unwrap_or_else(|| vec![0.0; DIM]),
            Err(err) => {
                warn!(error = %err, "hybrid ranking skipped");
                return Reranked::Skipped;
            }
        };
        let best = hits
            .iter()
            .map(|h| h.passage.score)
            .fold(f32::MIN, f32::max)
            .max(f32::MIN_POSITIVE);
        let cosines = vectors
            .iter()
            .map(|v| similarity(&question, v))
            .chain(std::iter::repeat(0.0));
        for (hit, cosine) in hits.iter_mut().zip(cosines) {
            hit.passage.score =
                (1.0 - self.weight) * hit.passage.score / best + self.weight * cosine;
        }
        hits.sort_by(|a, b| b.passage.score.total_cmp(&a.passage.score));
        Reranked::Fused
    }

    /// The vectors of the hits' texts, if every one is known.
    fn known_vectors(&self, hits: &[Hit]) -> Option<Vec<Vec<f32>>> {
        let vectors = self.vectors.lock().expect("not poisoned");
        hits.iter()
            .map(|h| vectors.known.get(&hash(&h.passage.text)).cloned())
            .collect()
    }

    /// Computes and keeps the vectors of the `texts` that have none, in batches, until
    /// `cancel` fires; returns how many it computed.
    pub fn backfill(
        &self,
        texts: &[String],
        cancel: &CancellationToken,
    ) -> Result<usize, EmbedError> {
        let missing: Vec<(TextHash, &str)> = {
            let vectors = self.vectors.lock().expect("not poisoned");
            texts
                .iter()
                .map(|t| (hash(t), t.as_str()))
                .filter(|(h, _)| !vectors.known.contains_key(h))
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
        Ok(computed)
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
    /// Nothing to rank, or the model failed: BM25's order.
    Skipped,
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
