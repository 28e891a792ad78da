//! Optional API keys and the per-client rate limit, as middleware in front of `/v1`.
//!
//! With keys configured a client is named by its key (a short fingerprint, never the
//! key itself); without, by its address (see [`crate::ratelimit`]), never by a token it
//! sends, which it could change at will. That name keys the rate limit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Error;
use crate::state::AppState;

/// Who a request comes from, for the rate limit and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientName(pub String);

/// Accepted keys, compared in time independent of where they differ: the keys given
/// on the command line, and those of the keys file, which [`ApiKeys::keep_fresh`]
/// reads again when it changes or on SIGHUP, without a restart.
///
/// Keys fail closed: once a keys file is configured, keys stay required whatever the
/// file holds. A file emptied or unreadable later keeps the keys read before (with a
/// warning); one empty from the start lets no request that needs a key in.
#[derive(Clone, Default)]
pub struct ApiKeys {
    fixed: Vec<Vec<u8>>,
    from_file: Arc<RwLock<Vec<Vec<u8>>>>,
    file_configured: bool,
}

impl ApiKeys {
    pub fn new(keys: &[String]) -> Self {
        Self {
            fixed: as_bytes(keys),
            from_file: Arc::default(),
            file_configured: false,
        }
    }

    /// The keys given, and those of `file` (read now: a file that cannot be read is an
    /// error at start, not a gateway that accepts no key).
    pub fn with_file(keys: &[String], file: Option<&Path>) -> std::io::Result<Self> {
        let mut api_keys = Self::new(keys);
        if let Some(file) = file {
            let read = read_keys_file(file)?;
            if read.is_empty() {
                tracing::warn!(file = %file.display(), "the API keys file holds no key: requests that need one are refused until one is added");
            }
            api_keys.replace_file_keys(&read);
            api_keys.file_configured = true;
        }
        Ok(api_keys)
    }

    /// Whether requests need a key: keys were given, or a keys file configured (even
    /// one that holds none).
    pub fn required(&self) -> bool {
        !self.fixed.is_empty() || self.file_configured
    }

    pub fn accepts(&self, candidate: &str) -> bool {
        let candidate = candidate.as_bytes();
        let file_keys = self.file_keys();
        self.fixed
            .iter()
            .chain(file_keys.iter())
            .fold(false, |found, key| found | constant_time_eq(key, candidate))
    }

    fn file_keys(&self) -> std::sync::RwLockReadGuard<'_, Vec<Vec<u8>>> {
        self.from_file.read().unwrap_or_else(|p| p.into_inner())
    }

    fn replace_file_keys(&self, keys: &[String]) {
        *self.from_file.write().unwrap_or_else(|p| p.into_inner()) = as_bytes(keys);
    }

    /// Reads `file` again whenever its modification time changes (looked at every
    /// `every`) or the process gets SIGHUP, until `cancel` fires. A file that cannot be
    /// read keeps the keys read last.
    pub async fn keep_fresh(
        self,
        file: PathBuf,
        every: Duration,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        let mut hangups =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut seen = modified(&file).await;
        loop {
            let hangup = async {
                match hangups.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            let forced = tokio::select! {
                () = cancel.cancelled() => return,
                _ = hangup => true,
                () = tokio::time::sleep(every) => false,
            };
            let now = modified(&file).await;
            if !forced && now == seen {
                continue;
            }
            seen = now;
            let read = tokio::fs::read_to_string(&file)
                .await
                .map(|text| keys_of(&text));
            match read {
                Ok(keys) if keys.is_empty() && !self.file_keys().is_empty() => {
                    tracing::warn!(file = %file.display(), "the API keys file is now empty; keeping the keys read before (keys fail closed: to run without keys, restart without the file)");
                }
                Ok(keys) => {
                    self.replace_file_keys(&keys);
                    tracing::info!(file = %file.display(), keys = keys.len(), "API keys reloaded");
                }
                Err(err) => {
                    tracing::warn!(file = %file.display(), error = %err, "cannot read the API keys file; keeping the keys read before");
                }
            }
        }
    }
}

fn as_bytes(keys: &[String]) -> Vec<Vec<u8>> {
    keys.iter()
        .filter(|k| !k.is_empty())
        .map(|k| k.as_bytes().to_vec())
        .collect()
}

async fn modified(file: &Path) -> Option<SystemTime> {
    tokio::fs::metadata(file)
        .await
        .and_then(|m| m.modified())
        .ok()
}

/// The keys of a keys file: one per line, `#` starts a comment line.
pub fn read_keys_file(file: &Path) -> std::io::Result<Vec<String>> {
    Ok(keys_of(&std::fs::read_to_string(file)?))
}

fn keys_of(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// Whether a request may read `/metrics`: with keys configured only with one (a
/// scraper gets a key of its own), unless the gateway is told they are public.
pub fn may_read_metrics(state: &AppState, request_key: Option<&str>) -> Result<(), Error> {
    if state.config.metrics_public || !keys_required(state) {
        return Ok(());
    }
    match request_key {
        None => Err(Error::MissingApiKey),
        Some(key) if state.api_keys.accepts(key) || state.admin_keys.accepts(key) => Ok(()),
        Some(_) => Err(Error::InvalidApiKey),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// FNV-1a: enough to tell keys apart in a rate-limit map without keeping them.
fn fingerprint(key: &str) -> String {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("key:{hash:016x}")
}

fn bearer(request: &Request) -> Option<&str> {
    bearer_of(request.headers())
}

/// The bearer token of an `Authorization` header.
pub fn bearer_of(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The client's address: the rightmost entry of the trusted proxy's header when one is
/// configured (what that proxy saw), else the peer address of the connection.
fn client_address(request: &Request, trusted_header: Option<&str>) -> String {
    let from_proxy = trusted_header
        .and_then(|name| request.headers().get(name))
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').map(str::trim).find(|a| !a.is_empty()));
    if let Some(address) = from_proxy {
        return format!("addr:{address}");
    }
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(
            || "addr:unknown".to_string(),
            |info| format!("addr:{}", info.0.ip()),
        )
}

/// Whether any key (chat or admin) is configured: then every `/v1` request needs one.
fn keys_required(state: &AppState) -> bool {
    state.api_keys.required() || state.admin_keys.required()
}

/// Whether a request may add or delete documents: always without keys; with keys, only
/// with an admin key.
pub fn may_write_documents(state: &AppState, headers: &axum::http::HeaderMap) -> Result<(), Error> {
    if !keys_required(state) {
        return Ok(());
    }
    match bearer_of(headers) {
        Some(key) if state.admin_keys.accepts(key) => Ok(()),
        _ if !state.admin_keys.required() => Err(Error::AdminKeyRequired {
            hint: "; this gateway has none configured, so start it with one",
        }),
        _ => Err(Error::AdminKeyRequired { hint: "" }),
    }
}

/// Checks the API key (when keys are configured) and the client's rate limit.
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let key = bearer(&request)
        .filter(|k| !k.is_empty())
        .map(str::to_string);
    if keys_required(&state) {
        match key.as_deref() {
            None => return Error::MissingApiKey.into_response(),
            Some(key) if !state.api_keys.accepts(key) && !state.admin_keys.accepts(key) => {
                return Error::InvalidApiKey.into_response();
            }
            Some(_) => {}
        }
    }
    // a key names the client only when keys are checked: a made-up token is no name
    let client = match &key {
        Some(key) if keys_required(&state) => fingerprint(key),
        _ => client_address(&request, state.config.client_address_header.as_deref()),
    };
    if let Some(limiter) = &state.rate_limiter
        && let Err(retry_after) = limiter.check(&client)
    {
        return Error::RateLimited { retry_after }.into_response();
    }
    request.extensions_mut().insert(ClientName(client));
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_matched_exactly() {
        let keys = ApiKeys::new(&["sk-one".into(), "sk-two".into()]);
        assert!(keys.required());
        assert!(keys.accepts("sk-two"));
        assert!(!keys.accepts("sk-tw"));
        assert!(!keys.accepts(""));
        assert!(!ApiKeys::new(&[]).required());
        assert_ne!(fingerprint("a"), fingerprint("b"));
    }
}
