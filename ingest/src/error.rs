//! Errors of `cauce-ingest`, each with a stable label.

use std::path::PathBuf;

/// Everything that can make an ingest run fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path given on the command line does not exist or cannot be read.
    #[error("cannot read {path}: {source}", path = path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Walking a folder failed part way.
    #[error("cannot walk {path}: {source}", path = path.display())]
    Walk {
        path: PathBuf,
        source: walkdir::Error,
    },
    /// `--id-prefix` or a path produced an id that cannot be a subject token.
    #[error("invalid document id for {path}: {source}", path = path.display())]
    Id {
        path: PathBuf,
        source: cauce_nats::IdError,
    },
    /// An `--exclude` glob that does not parse.
    #[error("--exclude {pattern:?} is not a glob: {reason}")]
    BadExclude { pattern: String, reason: String },
    /// A document, once compressed, is larger than one NATS message may be.
    #[error(
        "{path} is too large for one NATS message: {size} bytes compressed, the server's \
         max_payload is {limit} bytes; split the file or raise max_payload",
        path = path.display()
    )]
    TooLarge {
        path: PathBuf,
        size: usize,
        limit: usize,
    },
    #[error(transparent)]
    Wire(#[from] cauce_nats::WireError),
    #[error(transparent)]
    Nats(#[from] cauce_nats::Error),
    /// JetStream refused or failed a request about the `DOCS` stream.
    #[error("jetstream {action} failed: {source}")]
    JetStream {
        action: &'static str,
        #[source]
        source: async_nats::Error,
    },
    /// The run was cancelled before it finished.
    #[error("ingest cancelled")]
    Cancelled,
}

impl Error {
    /// A stable label for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Read { .. } => "read",
            Error::Walk { .. } => "walk",
            Error::BadExclude { .. } => "bad_exclude",
            Error::Id { .. } => "invalid_id",
            Error::TooLarge { .. } => "too_large",
            Error::Wire(err) => err.kind(),
            Error::Nats(err) => err.kind(),
            Error::JetStream { .. } => "jetstream",
            Error::Cancelled => "cancelled",
        }
    }

    pub(crate) fn jetstream(action: &'static str, source: impl Into<async_nats::Error>) -> Self {
        Error::JetStream {
            action,
            source: source.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
