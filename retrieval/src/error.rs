//! Errors of `cauce-retrieval`, each with a stable label.

use std::path::PathBuf;

/// Everything that can stop the index or the worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// tantivy failed to open, write, commit or search the index.
    #[error("index {action} failed: {source}")]
    Index {
        action: &'static str,
        #[source]
        source: tantivy::TantivyError,
    },
    /// The index directory cannot be created or cleared.
    #[error("cannot use the index directory {path}: {source}", path = path.display())]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Nats(#[from] cauce_nats::Error),
    #[error(transparent)]
    Wire(#[from] cauce_nats::WireError),
    /// JetStream refused or failed a request.
    #[error("jetstream {action} failed: {source}")]
    JetStream {
        action: &'static str,
        #[source]
        source: async_nats::Error,
    },
    /// A blocking task (indexing, search) panicked or was cancelled.
    #[error("{what} task failed: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// The embedding model of hybrid ranking cannot be loaded.
    #[error(transparent)]
    Embed(#[from] crate::embed::EmbedError),
}

impl Error {
    /// A stable label for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Index { .. } => "index",
            Error::Directory { .. } => "index_directory",
            Error::Nats(err) => err.kind(),
            Error::Wire(err) => err.kind(),
            Error::JetStream { .. } => "jetstream",
            Error::Task { .. } => "task",
            Error::Embed(_) => "embedding_model",
        }
    }

    pub(crate) fn index(action: &'static str) -> impl FnOnce(tantivy::TantivyError) -> Self {
        move |source| Error::Index { action, source }
    }

    pub(crate) fn jetstream(action: &'static str) -> impl FnOnce(async_nats::Error) -> Self {
        move |source| Error::JetStream { action, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
