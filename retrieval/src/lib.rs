//! `cauce-retrieval` will own the local tantivy BM25 index that each retrieval worker
//! builds and follows from the `DOCS` stream, the search for a conversation, context
//! assembly under a budget, and the worker that turns questions into prompt jobs.
//!
//! It does not read files (that is `cauce-ingest`) nor talk HTTP. Not built yet; the
//! foundation only reserves the crate.
