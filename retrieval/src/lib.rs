//! `cauce-retrieval` owns the local tantivy BM25 index that each retrieval worker
//! builds and follows from the `DOCS` stream, the search for a conversation, context
//! assembly under a budget, and the worker that turns questions into prompt jobs.
//!
//! - [`index`]: open or rebuild the index; the last applied `DOCS` sequence is the
//!   commit payload, written atomically with the segments it describes.
//! - [`follow`]: catch up from that sequence, then follow live; commits in batches.
//! - [`query`], [`search`], [`context`]: user text is analyzed, never parsed as query
//!   syntax; hits are merged and trimmed into the prompt's passages.
//! - [`worker`]: the `retrieval` consumer loop and the service API announcement.
//!
//! It does not read files (that is `cauce-ingest`) nor talk HTTP. Decisions: one
//! index per language (`<home>/index/<language>`); a worker answers questions only
//! once its index has caught up with what `DOCS` held when it started; a request with
//! retrieval off, or an empty index, passes straight through with no sources.

pub mod answer_search;
pub mod context;
pub mod embed;
pub mod error;
pub mod fit;
pub mod follow;
pub mod hybrid;
pub mod index;
pub mod query;
pub mod schema;
pub mod search;
mod service;
pub mod worker;

pub use error::{Error, Result};
pub use index::{LocalIndex, default_dir};
pub use schema::Language;
pub use search::Searcher;
pub use service::WorkerStats;
pub use worker::{WorkerConfig, run};
