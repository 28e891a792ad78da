//! Optional API keys and the per-client rate limit, as middleware in front of `/v1`.
//!
//! A client is named by its API key when it sends one (a short fingerprint, never the
//! key itself) and by its address otherwise; that name keys the rate limit.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Error;
use crate::state::AppState;

/// Who a request comes from, for the rate limit and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientName(pub String);

/// Accepted keys, compared in time independent of where they differ.
#[derive(Clone, Default)]
pub struct ApiKeys(Vec<Vec<u8>>);

impl ApiKeys {
    pub fn new(keys: &[String]) -> Self {
        Self(
            keys.iter()
                .filter(|k| !k.is_empty())
                .map(|k| k.as_bytes().to_vec())
                .collect(),
        )
    }

    pub fn required(&self) -> bool {
        !self.0.is_empty()
    }

    pub fn accepts(&self, candidate: &str) -> bool {
        let candidate = candidate.as_bytes();
        self.0
            .iter()
            .fold(false, |found, key| found | constant_time_eq(key, candidate))
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
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
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

/// Checks the API key (when keys are configured) and the client's rate limit.
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let key = bearer(&request)
        .filter(|k| !k.is_empty())
        .map(str::to_string);
    if state.api_keys.required() {
        match key.as_deref() {
            None => return Error::MissingApiKey.into_response(),
            Some(key) if !state.api_keys.accepts(key) => {
                return Error::InvalidApiKey.into_response();
            }
            Some(_) => {}
        }
    }
    // a key names the client only when keys are checked: a made-up token is no name
    let client = match &key {
        Some(key) if state.api_keys.required() => fingerprint(key),
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
