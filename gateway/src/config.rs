//! The gateway's configuration: what `cauce gateway` and `cauce up` fill from flags.

use std::fmt;
use std::time::Duration;

use cauce_nats::{GatewayId, ModelName};

/// A token bucket per client: `per_second` requests on average, bursts of `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// Everything one gateway needs besides its NATS client and listener.
#[derive(Clone)]
pub struct GatewayConfig {
    /// Token of this gateway's reply subjects; unique among running gateways.
    pub id: GatewayId,
    /// The model a request without `model` goes to.
    pub default_model: ModelName,
    /// Accepted `Authorization: Bearer` keys; empty means no key is needed.
    pub api_keys: Vec<String>,
    /// A file of more keys, one per line, read again when it changes or on SIGHUP.
    pub api_keys_file: Option<std::path::PathBuf>,
    /// Keys that may also add and delete documents; with any key configured, document
    /// writes need one of these. They chat too.
    pub admin_api_keys: Vec<String>,
    /// A file of more admin keys, reloaded like [`Self::api_keys_file`].
    pub admin_api_keys_file: Option<std::path::PathBuf>,
    /// Largest upload request (`POST /v1/documents`, all its files together).
    pub max_upload_bytes: usize,
    /// Files one upload request may carry.
    pub max_upload_files: usize,
    /// `/metrics` without a key even when keys are configured (by default it needs one).
    pub metrics_public: bool,
    /// Host names clients reach the gateway by, besides localhost and its listen
    /// address ([`crate::edge`]); required for a wildcard bind.
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://name[:port]`) whose pages may send state-changing requests,
    /// besides the gateway's own.
    pub allowed_origins: Vec<String>,
    /// Serve on an address other than loopback with no API key configured.
    pub open_without_keys: bool,
    /// Streams (chat requests, task event streams) this gateway holds at once.
    pub max_in_flight: usize,
    /// Prompt jobs waiting in `PROMPTS` for one model beyond which new work is refused.
    pub max_backlog: u64,
    /// Per-client rate limit; `None` turns it off.
    pub rate_limit: Option<RateLimit>,
    /// Header a trusted reverse proxy puts the client's address in (for example
    /// `X-Forwarded-For`); without it the peer address names the client.
    pub client_address_header: Option<String>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens_limit: u32,
    /// How long a write that accepts a request (the question, a task record) is retried
    /// until JetStream acks it, before answering 503.
    pub publish_timeout: Duration,
    /// How long a request may take from acceptance to its last event.
    pub request_timeout: Duration,
    /// Interval of SSE keep-alive comments while nothing else is sent.
    pub keep_alive: Duration,
    /// On shutdown, how long running streams may go on before they are cut.
    pub shutdown_grace: Duration,
    /// How long one discovery round of the worker view gathers answers from workers.
    pub discovery_wait: Duration,
    /// How often the worker view behind `/readyz` and `/v1/models` is refreshed.
    pub view_refresh: Duration,
    /// How long a `PROMPTS` backlog reading is reused before it is read again.
    pub backlog_refresh: Duration,
    /// A folder served read-only under `/docs/`, so that source links of documents
    /// ingested with the location base `docs/` open from the chat page.
    pub docs_dir: Option<std::path::PathBuf>,
}

impl GatewayConfig {
    /// Defaults for a gateway with a fresh random id.
    pub fn new() -> Self {
        Self {
            id: GatewayId::generate(),
            default_model: ModelName::default_model(),
            api_keys: Vec::new(),
            api_keys_file: None,
            admin_api_keys: Vec::new(),
            admin_api_keys_file: None,
            max_upload_bytes: 64 << 20,
            max_upload_files: 16,
            metrics_public: false,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            open_without_keys: false,
            max_in_flight: 1024,
            max_backlog: 1000,
            rate_limit: Some(RateLimit {
                per_second: 10.0,
                burst: 40,
            }),
            client_address_header: None,
            max_body_bytes: 1 << 20,
            max_tokens_limit: 4096,
            publish_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(300),
            keep_alive: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            discovery_wait: Duration::from_millis(300),
            view_refresh: Duration::from_secs(2),
            backlog_refresh: Duration::from_millis(500),
            docs_dir: None,
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |keys: &[String]| match keys.len() {
            0 => "none".to_string(),
            n => format!("{n} <redacted>"),
        };
        f.debug_struct("GatewayConfig")
            .field("id", &self.id.as_str())
            .field("default_model", &self.default_model.as_str())
            .field("api_keys", &redacted(&self.api_keys))
            .field("api_keys_file", &self.api_keys_file)
            .field("admin_api_keys", &redacted(&self.admin_api_keys))
            .field("admin_api_keys_file", &self.admin_api_keys_file)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("metrics_public", &self.metrics_public)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("allowed_origins", &self.allowed_origins)
            .field("open_without_keys", &self.open_without_keys)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_backlog", &self.max_backlog)
            .field("rate_limit", &self.rate_limit)
            .field("client_address_header", &self.client_address_header)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_tokens_limit", &self.max_tokens_limit)
            .field("publish_timeout", &self.publish_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("keep_alive", &self.keep_alive)
            .field("shutdown_grace", &self.shutdown_grace)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_never_print() {
        let config = GatewayConfig {
            api_keys: vec!["sk-secret".into()],
            admin_api_keys: vec!["sk-admin-secret".into()],
            ..GatewayConfig::new()
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("sk-secret")
                && !shown.contains("sk-admin-secret")
                && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
