//! Searching the local index for a conversation, and counting searches for the stats.
//! [`Searcher::search`] blocks (it reads segments): async callers run it on
//! `spawn_blocking`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use cauce_nats::metrics::{self, Histogram};
use cauce_nats::wire::{ChatMessage, MAX_TOP_K, Passage, Role};
use cauce_nats::{Collection, DocId};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery, TermSetQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::schema::Value;
use tantivy::{DocAddress, IndexReader, TantivyDocument, Term};
use tracing::warn;

use crate::context::{self, Hit};
use crate::error::{Error, Result};
use crate::hybrid::{Hybrid, IndexedPassage, PassageKey, Reranked};
use crate::index::LocalIndex;
use crate::query::{MAX_QUERY_TERMS, SearchTerms};
use crate::schema::{Fields, Language};

/// Candidates fetched per passage wanted, so that merging neighbours and keeping one
/// source per document still fill `top_k`.
const CANDIDATES_PER_PASSAGE: usize = 8;

/// Search counters, shared with the stats handler.
#[derive(Debug)]
pub struct SearchStats {
    pub searches: AtomicU64,
    pub total_micros: AtomicU64,
    pub max_micros: AtomicU64,
    pub latency: Histogram,
    /// Searches ranked by fused BM25 and dense scores.
    pub hybrid_fused: AtomicU64,
    /// Searches left in BM25's order because a candidate had no vector yet.
    pub hybrid_warming: AtomicU64,
    /// Searches left in BM25's order because the question was longer than its vector
    /// reads.
    pub hybrid_long: AtomicU64,
}

impl Default for SearchStats {
    fn default() -> Self {
        Self {
            searches: AtomicU64::default(),
            total_micros: AtomicU64::default(),
            max_micros: AtomicU64::default(),
            latency: Histogram::new(metrics::SECONDS),
            hybrid_fused: AtomicU64::default(),
            hybrid_warming: AtomicU64::default(),
            hybrid_long: AtomicU64::default(),
        }
    }
}

/// A cheap-to-clone handle that searches the index as of its last commit.
#[derive(Clone)]
pub struct Searcher {
    reader: IndexReader,
    fields: Fields,
    language: Language,
    stats: Arc<SearchStats>,
    hybrid: Option<Arc<Hybrid>>,
}

impl Searcher {
    pub fn new(index: &LocalIndex) -> Self {
        Self {
            reader: index.reader(),
            fields: index.fields,
            language: index.language,
            stats: Arc::default(),
            hybrid: None,
        }
    }

    /// The same searcher, re-scoring BM25's candidates with dense vectors.
    pub fn with_hybrid(mut self, hybrid: Arc<Hybrid>) -> Self {
        self.hybrid = Some(hybrid);
        self
    }

    pub fn stats(&self) -> &Arc<SearchStats> {
        &self.stats
    }

    /// Passages in the index now.
    pub fn passages(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The hybrid ranking this searcher uses, if any.
    pub fn hybrid(&self) -> Option<&Arc<Hybrid>> {
        self.hybrid.as_ref()
    }

    /// Every passage in the index now, for computing their vectors.
    pub fn passages_to_embed(&self) -> Result<Vec<IndexedPassage>> {
        let searcher = self.reader.searcher();
        let f = self.fields;
        let mut passages = Vec::new();
        for segment in searcher.segment_readers() {
            let store = segment
                .get_store_reader(16)
                .map_err(|e| Error::index("open the document store")(e.into()))?;
            for doc in store.iter::<TantivyDocument>(segment.alive_bitset()) {
                let doc = doc.map_err(Error::index("read document"))?;
                let text = |field| doc.get_first(field).and_then(|v| v.as_str());
                let ord = doc.get_first(f.ord).and_then(|v| v.as_u64());
                let (Some(doc_id), Some(ord), Some(title), Some(body)) =
                    (text(f.doc_id), ord, text(f.title), text(f.text))
                else {
                    continue;
                };
                passages.push(IndexedPassage {
                    key: PassageKey {
                        doc_id: doc_id.to_string(),
                        ord,
                    },
                    title: title.to_string(),
                    heading_path: doc
                        .get_all(f.headings)
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect(),
                    text: body.to_string(),
                });
            }
        }
        Ok(passages)
    }

    /// Documents in the index now: their first passages.
    pub fn documents(&self) -> u64 {
        let first = TermQuery::new(
            Term::from_field_u64(self.fields.ord, 0),
            IndexRecordOption::Basic,
        );
        self.reader
            .searcher()
            .search(&first, &Count)
            .map_or(0, |n| n as u64)
    }

    /// The best passages for the conversation, at most `top_k` (and never more than
    /// [`MAX_TOP_K`]), merged with their neighbours, whole; only from documents of
    /// `collections`, unless it is empty. No text makes this fail: text without
    /// searchable words finds nothing.
    pub fn search(
        &self,
        messages: &[ChatMessage],
        top_k: usize,
        collections: &[Collection],
    ) -> Result<Vec<Passage>> {
        let started = Instant::now();
        let terms = SearchTerms::from_conversation(&mut self.language.analyzer(), messages);
        let turns = dense_turns(messages);
        let top_k = top_k.min(MAX_TOP_K as usize);
        let passages = self.search_terms(terms, &turns, top_k, collections);
        let micros = started.elapsed().as_micros() as u64;
        self.stats.searches.fetch_add(1, Ordering::Relaxed);
        self.stats.total_micros.fetch_add(micros, Ordering::Relaxed);
        self.stats.max_micros.fetch_max(micros, Ordering::Relaxed);
        self.stats.latency.observe(micros as f64 / 1e6);
        passages
    }

    fn search_terms(
        &self,
        terms: SearchTerms,
        turns: &[&str],
        top_k: usize,
        collections: &[Collection],
    ) -> Result<Vec<Passage>> {
        if terms.is_empty() || top_k == 0 {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let terms = terms
            .most_selective(&searcher, &self.fields, MAX_QUERY_TERMS)
            .map_err(Error::index("look up term frequencies"))?;
        let scoring = terms.to_query(&self.fields);
        let query = self.in_collections(scoring.box_clone(), collections);
        let collector = TopDocs::with_limit(top_k * CANDIDATES_PER_PASSAGE).order_by_score();
        let top = searcher
            .search(&*query, &collector)
            .map_err(Error::index("search"))?;
        let mut hits = self.hits(&searcher, top)?;
        if let Some(hybrid) = &self.hybrid {
            let fetch = |keys: &[PassageKey]| {
                self.passages_at(&searcher, keys, &*scoring, collections)
                    .inspect_err(|err| warn!(error = %err, "nearest passages not read"))
                    .unwrap_or_default()
            };
            let counter = match hybrid.rerank(turns, &mut hits, fetch) {
                Reranked::Fused => Some(&self.stats.hybrid_fused),
                Reranked::Warming => Some(&self.stats.hybrid_warming),
                Reranked::Long => Some(&self.stats.hybrid_long),
                Reranked::Skipped => None,
            };
            if let Some(counter) = counter {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(context::assemble(hits, top_k))
    }

    /// The hits of `top`, read from the index.
    fn hits(&self, searcher: &tantivy::Searcher, top: Vec<(f32, DocAddress)>) -> Result<Vec<Hit>> {
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument = searcher
                .doc(address)
                .map_err(Error::index("read document"))?;
            match self.hit(&doc, score) {
                Some(hit) => hits.push(hit),
                None => warn!(?address, "indexed passage lacks a stored field, skipped"),
            }
        }
        Ok(hits)
    }

    /// The passages at `keys` that are in `collections`, each scored as `query` scores
    /// it (0 when it holds none of its terms).
    fn passages_at(
        &self,
        searcher: &tantivy::Searcher,
        keys: &[PassageKey],
        query: &dyn Query,
        collections: &[Collection],
    ) -> Result<Vec<Hit>> {
        let f = self.fields;
        let term =
            |term| Box::new(TermQuery::new(term, IndexRecordOption::Basic)) as Box<dyn Query>;
        let at = keys
            .iter()
            .map(|key| {
                let both = BooleanQuery::new(vec![
                    (
                        Occur::Must,
                        term(Term::from_field_text(f.doc_id, &key.doc_id)),
                    ),
                    (Occur::Must, term(Term::from_field_u64(f.ord, key.ord))),
                ]);
                (Occur::Should, Box::new(both) as Box<dyn Query>)
            })
            .collect();
        let located = ConstScoreQuery::new(Box::new(BooleanQuery::new(at)), 0.0);
        let scored = BooleanQuery::new(vec![
            (Occur::Must, Box::new(located) as Box<dyn Query>),
            (Occur::Should, query.box_clone()),
        ]);
        let query = self.in_collections(Box::new(scored), collections);
        let collector = TopDocs::with_limit(keys.len().max(1)).order_by_score();
        let top = searcher
            .search(&*query, &collector)
            .map_err(Error::index("search"))?;
        self.hits(searcher, top)
    }

    /// `query` limited to passages of `collections` (every passage when it is empty),
    /// scored as `query` alone scores them.
    fn in_collections(&self, query: Box<dyn Query>, collections: &[Collection]) -> Box<dyn Query> {
        if collections.is_empty() {
            return query;
        }
        let terms = collections
            .iter()
            .map(|c| Term::from_field_text(self.fields.collection, c.as_str()));
        let filter = ConstScoreQuery::new(Box::new(TermSetQuery::new(terms)), 0.0);
        Box::new(BooleanQuery::new(vec![
            (Occur::Must, query),
            (Occur::Must, Box::new(filter)),
        ]))
    }

    fn hit(&self, doc: &TantivyDocument, score: f32) -> Option<Hit> {
        let f = self.fields;
        let text = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        Some(Hit {
            passage: Passage {
                doc_id: DocId::parse(text(f.doc_id)?).ok()?,
                version: text(f.version)?,
                title: text(f.title)?,
                heading_path: doc
                    .get_all(f.headings)
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                location: text(f.location)?,
                score,
                text: text(f.text)?,
            },
            ord: doc.get_first(f.ord).and_then(|v| v.as_u64())?,
        })
    }
}

/// What the question's vector is computed from: the user turn before the last, when
/// there is one (a follow-up's topic is in the earlier turn), then the last.
fn dense_turns(messages: &[ChatMessage]) -> Vec<&str> {
    let mut turns: Vec<&str> = messages
        .iter()
        .rev()
        .filter(|m| m.role == Role::User)
        .take(2)
        .map(|m| m.content.as_str())
        .collect();
    turns.reverse();
    turns
}
