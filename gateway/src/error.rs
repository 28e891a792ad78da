//! Errors of the gateway, each with a stable snake_case [`Error::kind`], and the one
//! place where an error becomes an HTTP status and an OpenAI-style error body.
//!
//! The body is always `{"error": {"message", "type", "param", "code"}}`, with `code` the
//! error's kind, so a client can branch on it and an operator can grep for it. Errors
//! that happen after an SSE stream started travel as the same object in the stream.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cauce_nats::wire::ErrorKind;
use serde::Serialize;

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is missing, of the wrong type or out of range.
    #[error("{message}")]
    Invalid {
        param: Option<String>,
        message: String,
    },
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the request body could not be read: {0}")]
    BodyRead(String),
    #[error("no API key given: send it as 'Authorization: Bearer <key>'")]
    MissingApiKey,
    #[error("the API key is not valid")]
    InvalidApiKey,
    /// A document write with a key that may only chat.
    #[error(
        "adding or deleting documents needs an admin API key (one of --admin-api-keys or \
         --admin-api-keys-file), sent as 'Authorization: Bearer <key>'{hint}"
    )]
    AdminKeyRequired { hint: &'static str },
    /// An upload of a type cauce does not read, or whose bytes are not its type.
    #[error("{message}")]
    UnsupportedType { message: String },
    #[error("{what} not found")]
    NotFound { what: String },
    /// A `Host` this gateway does not answer to (see [`crate::edge`]).
    #[error(
        "this gateway does not answer to the host {host:?}: reach it as localhost or by its \
         address, or start it with --allowed-hosts naming it"
    )]
    UnknownHost { host: String },
    /// A state-changing request from another site's page.
    #[error(
        "requests that change anything are refused from the page at {origin:?}: only this \
         gateway's own page may send them, or an origin given to --allowed-origins"
    )]
    ForeignOrigin { origin: String },
    /// A JSON endpoint's body sent as something else.
    #[error(
        "the body must be JSON, sent with Content-Type: application/json (this request \
         said {found:?})"
    )]
    NotJson { found: String },
    /// No inference worker has ever served this model.
    #[error("the model {model} does not exist: GET /v1/models lists the models served")]
    ModelNotFound { model: String },
    #[error("no route {method} {path}")]
    UnknownRoute { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("too many requests from this client: retry after {} s", retry_secs(.retry_after))]
    RateLimited { retry_after: Duration },
    /// This gateway holds as many streams as it may.
    #[error("the gateway is at its limit of {limit} requests in flight: retry later")]
    GatewayFull { limit: usize },
    /// Too many prompt jobs wait for the model already.
    #[error("the queue of model {model} holds {pending} jobs, the limit is {limit}: retry later")]
    BacklogFull {
        model: String,
        pending: u64,
        limit: u64,
    },
    /// The question leaves too little of the server's `max_payload` for its passages.
    #[error(
        "the question is {bytes} bytes once encoded, the limit is {limit} bytes (the NATS \
         server's max_payload less room for the retrieved passages): shorten the messages"
    )]
    QuestionTooLarge { bytes: usize, limit: usize },
    /// JetStream refused the question for a reason another try cannot fix.
    #[error("the queue refused the question and would refuse it again: {reason}")]
    Refused { reason: String },
    /// JetStream did not ack the question: it is not queued.
    #[error("the question could not be queued: {reason}")]
    NotQueued { reason: String },
    /// A NATS operation failed after the request was accepted or while reading state.
    #[error("nats {action} failed: {reason}")]
    Nats {
        action: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Wire(#[from] cauce_nats::WireError),
    /// The worker ended the request with an error event.
    #[error("{message}")]
    Worker { kind: ErrorKind, message: String },
    #[error("the request did not finish within {} s", .0.as_secs())]
    DeadlineExceeded(Duration),
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// A search found no retrieval worker to answer it, or the one it found failed.
    #[error("search is unavailable: {reason}; retry later")]
    SearchUnavailable { reason: String },
    /// Starting or running the HTTP server failed.
    #[error("http server: {0}")]
    Serve(#[from] std::io::Error),
    #[error("nats service announcement: {0}")]
    Announce(String),
}

fn retry_secs(duration: &Duration) -> u64 {
    duration.as_secs_f64().ceil().max(1.0) as u64
}

impl From<cauce_nats::NotAcked> for Error {
    fn from(err: cauce_nats::NotAcked) -> Self {
        match err {
            cauce_nats::NotAcked::Refused { .. } => Error::Refused {
                reason: err.to_string(),
            },
            cauce_nats::NotAcked::TimedOut { .. } => Error::NotQueued {
                reason: err.to_string(),
            },
        }
    }
}

impl Error {
    /// A stable label for logs, metric labels and the `code` of error bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "invalid_request",
            Error::InvalidJson(_) => "invalid_json",
            Error::BodyTooLarge { .. } => "body_too_large",
            Error::BodyRead(_) => "body_read",
            Error::MissingApiKey => "missing_api_key",
            Error::InvalidApiKey => "invalid_api_key",
            Error::AdminKeyRequired { .. } => "admin_key_required",
            Error::UnsupportedType { .. } => "unsupported_type",
            Error::NotFound { .. } => "not_found",
            Error::UnknownHost { .. } => "unknown_host",
            Error::ForeignOrigin { .. } => "foreign_origin",
            Error::NotJson { .. } => "unsupported_media_type",
            Error::ModelNotFound { .. } => "model_not_found",
            Error::UnknownRoute { .. } => "unknown_route",
            Error::MethodNotAllowed { .. } => "method_not_allowed",
            Error::RateLimited { .. } => "rate_limit_exceeded",
            Error::GatewayFull { .. } => "gateway_full",
            Error::BacklogFull { .. } => "backlog_full",
            Error::NotQueued { .. } => "not_queued",
            Error::QuestionTooLarge { .. } => "question_too_large",
            Error::Refused { .. } => "refused",
            Error::Nats { .. } => "nats",
            Error::Wire(wire) => wire.kind(),
            Error::Worker { kind, .. } => kind.as_str(),
            Error::DeadlineExceeded(_) => "deadline_exceeded",
            Error::ShuttingDown => "shutting_down",
            Error::SearchUnavailable { .. } => "search_unavailable",
            Error::Serve(_) => "serve",
            Error::Announce(_) => "announce",
        }
    }

    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            param: Some(param.into()),
            message: message.into(),
        }
    }

    pub fn nats(action: &'static str, err: impl std::fmt::Display) -> Self {
        Error::Nats {
            action,
            reason: err.to_string(),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Invalid { .. } | Error::InvalidJson(_) | Error::BodyRead(_) => {
                StatusCode::BAD_REQUEST
            }
            Error::BodyTooLarge { .. } | Error::QuestionTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Error::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::MissingApiKey | Error::InvalidApiKey => StatusCode::UNAUTHORIZED,
            Error::AdminKeyRequired { .. } | Error::ForeignOrigin { .. } => StatusCode::FORBIDDEN,
            Error::UnsupportedType { .. } | Error::NotJson { .. } => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Error::UnknownHost { .. } => StatusCode::MISDIRECTED_REQUEST,
            Error::NotFound { .. } | Error::UnknownRoute { .. } | Error::ModelNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::GatewayFull { .. }
            | Error::BacklogFull { .. }
            | Error::NotQueued { .. }
            | Error::Nats { .. }
            | Error::SearchUnavailable { .. }
            | Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Error::Worker { kind, .. } => match kind {
                ErrorKind::InvalidRequest | ErrorKind::ContextOverflow => StatusCode::BAD_REQUEST,
                ErrorKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Error::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Wire(_) | Error::Serve(_) | Error::Announce(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// How long a client should wait before it tries again, for the errors that pass.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after } => Some(*retry_after),
            Error::GatewayFull { .. }
            | Error::NotQueued { .. }
            | Error::Nats { .. }
            | Error::SearchUnavailable { .. } => Some(Duration::from_secs(1)),
            Error::BacklogFull { .. } | Error::ShuttingDown => Some(Duration::from_secs(5)),
            _ => None,
        }
    }

    /// OpenAI's error `type`.
    fn error_type(&self) -> &'static str {
        match self.status() {
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            status if status.is_client_error() => "invalid_request_error",
            _ => "server_error",
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            Error::Invalid { param, .. } => param.as_deref(),
            Error::ModelNotFound { .. } => Some("model"),
            Error::QuestionTooLarge { .. } => Some("messages"),
            Error::UnsupportedType { .. } => Some("file"),
            Error::Worker {
                kind: ErrorKind::ContextOverflow,
                ..
            } => Some("messages"),
            _ => None,
        }
    }

    /// The OpenAI-style error object, also sent as the last event of a failed stream.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorObject {
                message: self.to_string(),
                r#type: self.error_type(),
                param: self.param(),
                code: self.kind(),
            },
        }
    }
}

/// `{"error": {...}}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorObject<'a>,
}

#[derive(Debug, Serialize)]
pub struct ErrorObject<'a> {
    pub message: String,
    pub r#type: &'static str,
    pub param: Option<&'a str>,
    pub code: &'static str,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(kind = self.kind(), status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(kind = self.kind(), status = status.as_u16(), error = %self, "request refused");
        }
        if let Some(reason) = rejection_reason(&self) {
            metrics::counter!(crate::telemetry::REJECTIONS, "reason" => reason).increment(1);
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        if let Some(retry_after) = self.retry_after() {
            let value = HeaderValue::from(retry_secs(&retry_after));
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// The admission-control label of an error that refused a request before it was queued.
fn rejection_reason(error: &Error) -> Option<&'static str> {
    match error {
        Error::RateLimited { .. } => Some("rate_limited"),
        Error::GatewayFull { .. } => Some("gateway_full"),
        Error::BacklogFull { .. } => Some("backlog_full"),
        Error::NotQueued { .. } => Some("not_queued"),
        Error::MissingApiKey | Error::InvalidApiKey => Some("unauthorized"),
        Error::Invalid { .. } | Error::InvalidJson(_) => Some("invalid"),
        Error::BodyTooLarge { .. } => Some("body_too_large"),
        Error::ShuttingDown => Some("shutting_down"),
        _ => None,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_names_the_param_and_the_kind() {
        let err = Error::invalid("messages", "messages must not be empty");
        let json = serde_json::to_value(err.body()).unwrap();
        assert_eq!(json["error"]["param"], "messages");
        assert_eq!(json["error"]["code"], "invalid_request");
        assert_eq!(json["error"]["type"], "invalid_request_error");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn retryable_errors_carry_retry_after() {
        let limited = Error::RateLimited {
            retry_after: Duration::from_millis(300),
        };
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry_secs(&limited.retry_after().unwrap()), 1);
        let full = Error::GatewayFull { limit: 3 };
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(full.retry_after().is_some());
        assert!(Error::InvalidApiKey.retry_after().is_none());
    }
}
