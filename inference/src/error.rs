//! Errors of the inference engine and worker, each with a stable [`Error::kind`] and a
//! decision whether trying again elsewhere could help ([`Error::is_deterministic`]).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model file {path} not found; run ./ops/setup to install the default model or pass --model", path = path.display())]
    ModelMissing { path: PathBuf },
    #[error("cannot load model {path}: {reason}", path = path.display())]
    ModelLoad { path: PathBuf, reason: String },
    #[error("cannot create a llama.cpp context: {0}")]
    Context(String),
    #[error("the chat template could not render this conversation: {0}")]
    Template(String),
    #[error(
        "the prompt is {prompt_tokens} tokens, the context holds {context_tokens} per sequence; shorten the conversation or lower the retrieval top_k"
    )]
    ContextOverflow {
        prompt_tokens: usize,
        context_tokens: usize,
    },
    #[error("llama.cpp decode failed: {0}")]
    Decode(String),
    #[error("the engine thread has stopped")]
    EngineStopped,
    #[error("invalid engine option: {0}")]
    Config(String),
    #[error(transparent)]
    Nats(#[from] cauce_nats::Error),
    #[error("nats {action} failed: {source}")]
    NatsOp {
        action: &'static str,
        #[source]
        source: async_nats::Error,
    },
}

impl Error {
    /// A stable label for logs, metrics and error events.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::ModelMissing { .. } => "model_missing",
            Error::ModelLoad { .. } => "model_load",
            Error::Context(_) => "context",
            Error::Template(_) => "template",
            Error::ContextOverflow { .. } => "context_overflow",
            Error::Decode(_) => "decode",
            Error::EngineStopped => "engine_stopped",
            Error::Config(_) => "config",
            Error::Nats(err) => err.kind(),
            Error::NatsOp { .. } => "nats",
        }
    }

    /// Whether the same job would fail the same way on any worker: such a job ends
    /// with an error event instead of being redelivered.
    pub fn is_deterministic(&self) -> bool {
        matches!(self, Error::Template(_) | Error::ContextOverflow { .. })
    }

    /// The wire error kind a client sees for this error.
    pub fn wire_kind(&self) -> cauce_nats::wire::ErrorKind {
        use cauce_nats::wire::ErrorKind;
        match self {
            Error::Template(_) => ErrorKind::Template,
            Error::ContextOverflow { .. } => ErrorKind::ContextOverflow,
            _ => ErrorKind::Internal,
        }
    }

    pub(crate) fn nats(action: &'static str, source: impl Into<async_nats::Error>) -> Self {
        Error::NatsOp {
            action,
            source: source.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
