//! `cauce-ingest` will own reading documents (Markdown, plain text, HTML), splitting
//! them into passages along headings and paragraphs, and publishing each document,
//! zstd-compressed, to the `DOCS` stream with content-hash versions and tombstones.
//!
//! It does not search or index: retrieval workers build their own index from `DOCS`.
//! Not built yet; the foundation only reserves the crate.
