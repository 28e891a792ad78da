//! Errors of `cauce-nats`, each classified once with a stable snake_case [`Error::kind`].

use std::path::PathBuf;

/// An id that cannot be used: it would break a subject, or it is empty or too long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} bytes long, the limit is {max}")]
    TooLong {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{kind} contains {bad:?}; only {allowed} are allowed")]
    BadChar {
        kind: &'static str,
        bad: char,
        allowed: &'static str,
    },
}

/// A JetStream write that was not stored (see [`crate::retry::until_acked`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotAcked {
    /// Tried again and again until the time limit.
    #[error("{what}: jetstream did not ack within {} ms (last attempt: {last})", .limit.as_millis())]
    TimedOut {
        what: &'static str,
        limit: std::time::Duration,
        last: String,
    },
    /// Refused for a reason another try cannot fix (too large, a wrong expected sequence).
    #[error("{what}: jetstream refused it: {reason}")]
    Refused { what: &'static str, reason: String },
}

impl NotAcked {
    /// A stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            NotAcked::TimedOut { .. } => "not_acked",
            NotAcked::Refused { .. } => "refused",
        }
    }
}

/// A payload that is not a valid message of the expected wire type.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{what} payload is not JSON: {source}")]
    NotJson {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("{what} payload has no version field \"v\"")]
    MissingVersion { what: &'static str },
    #[error("{what} payload has wire version {found}, this build reads version {expected}")]
    WrongVersion {
        what: &'static str,
        found: u64,
        expected: u32,
    },
    #[error("{what} payload does not match its schema: {source}")]
    Schema {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("{what} payload is not valid zstd: {reason}")]
    Compression { what: &'static str, reason: String },
    #[error("{what} could not be encoded: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
}

impl WireError {
    /// A stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            WireError::NotJson { .. } => "wire_not_json",
            WireError::MissingVersion { .. } => "wire_missing_version",
            WireError::WrongVersion { .. } => "wire_wrong_version",
            WireError::Schema { .. } => "wire_schema",
            WireError::Compression { .. } => "wire_compression",
            WireError::Encode { .. } => "wire_encode",
        }
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Id(#[from] IdError),
    #[error(transparent)]
    Wire(#[from] WireError),
    /// An existing stream, consumer or bucket is set up in a way cauce cannot use.
    #[error(
        "{object} exists with {field} = {found}, cauce needs {wanted}; \
         change or delete it (nats stream/consumer/kv commands) and start again"
    )]
    Conflict {
        object: String,
        field: &'static str,
        found: String,
        wanted: String,
    },
    /// A stream, consumer or bucket this process needs has not been set up.
    #[error(
        "{object} does not exist; set up cauce's NATS objects first with \
         `cauce nats apply` (or `cauce up`)"
    )]
    Missing { object: String },
    /// JetStream refused or failed an administrative request.
    #[error("jetstream {action} of {object} failed: {source}")]
    JetStream {
        action: &'static str,
        object: String,
        #[source]
        source: async_nats::Error,
    },
    /// JetStream could not reserve an object's size bound (`max_bytes`) in its store.
    #[error(
        "jetstream {action} of {object} failed: the server has no room to reserve its \
         size bound. JetStream reserves every stream's and bucket's max_bytes against its \
         file store limit, which nats-server sets to 75% of the disk space free when it \
         starts unless its config sets `jetstream {{ max_file_store: ... }}` (as \
         ops/nats/single.conf does). Free disk space where the server keeps its store, or \
         set max_file_store, and start again ({source})"
    )]
    NoStorage {
        action: &'static str,
        object: String,
        #[source]
        source: async_nats::Error,
    },
    /// A core NATS publish, subscribe or request failed.
    #[error("nats {action} on {subject} failed: {source}")]
    Nats {
        action: &'static str,
        subject: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("cannot connect to NATS at {urls}: {source}")]
    Connect {
        urls: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("invalid NATS URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("NATS TLS: {reason}")]
    Tls { reason: String },
    #[error("cannot read NATS credentials file {path}: {source}", path = path.display())]
    Credentials {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    /// A stable label for logs, metric labels and error bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Id(_) => "invalid_id",
            Error::Wire(wire) => wire.kind(),
            Error::Conflict { .. } => "nats_conflict",
            Error::Missing { .. } => "nats_missing",
            Error::JetStream { .. } => "jetstream",
            Error::NoStorage { .. } => "nats_no_storage",
            Error::Nats { .. } => "nats",
            Error::Connect { .. } => "nats_connect",
            Error::BadUrl { .. } => "nats_bad_url",
            Error::Tls { .. } => "nats_tls",
            Error::Credentials { .. } => "nats_credentials",
        }
    }

    pub(crate) fn nats(
        action: &'static str,
        subject: impl Into<String>,
        source: impl Into<async_nats::Error>,
    ) -> Self {
        Error::Nats {
            action,
            subject: subject.into(),
            source: source.into(),
        }
    }

    pub(crate) fn jetstream(
        action: &'static str,
        object: impl Into<String>,
        source: impl Into<async_nats::Error>,
    ) -> Self {
        let (object, source) = (object.into(), source.into());
        if storage_exceeded(&source) {
            return Error::NoStorage {
                action,
                object,
                source,
            };
        }
        Error::JetStream {
            action,
            object,
            source,
        }
    }
}

/// Whether JetStream refused for lack of storage (error code 10047) anywhere in the
/// chain: a bucket's error carries its stream's as its source.
fn storage_exceeded(error: &async_nats::Error) -> bool {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
    while let Some(error) = next {
        if let Some(create) = error.downcast_ref::<CreateStreamError>()
            && let CreateStreamErrorKind::JetStream(refusal) = create.kind()
            && refusal.error_code() == ErrorCode::STORAGE_RESOURCES_EXCEEDED
        {
            return true;
        }
        next = error.source();
    }
    false
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
