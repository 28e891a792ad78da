//! The web edge's checks, before any route, against what a web page elsewhere can make
//! a browser send:
//! - **Host**: only a name this gateway answers to (`localhost`, `127.0.0.1`, `[::1]`,
//!   its listen address, and `--allowed-hosts`), else `421`: a page that rebinds its own
//!   DNS name to 127.0.0.1 reaches no data (what Jupyter checks too). A wildcard bind
//!   needs the allow-list, since any name could reach it.
//! - **Origin**: a request that changes state (POST, PUT, PATCH, DELETE) carrying an
//!   `Origin` other than the gateway's own (or one of `--allowed-origins`) is a `403`,
//!   as Ollama refuses foreign origins: no other site's page uploads, deletes or chats
//!   through a student's browser.
//! - **JSON**: the JSON endpoints take `Content-Type: application/json` only, else `415`,
//!   so a cross-site form or `text/plain` post (a request a browser sends without asking
//!   the server first) is never read.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Error;

/// The routes whose body is JSON.
const JSON_ROUTES: &[&str] = &["/v1/chat/completions", "/v1/tasks", "/v1/search"];

/// Who may reach this gateway, from its listen address and the allow-lists.
#[derive(Clone, Debug)]
pub struct Edge {
    /// Host names (no port), lowercase.
    hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`), lowercase.
    origins: Vec<String>,
}

impl Edge {
    /// The edge of a gateway listening on `listen`; a wildcard address without an
    /// allowed host is an error that says what to add.
    pub fn new(
        listen: SocketAddr,
        allowed_hosts: &[String],
        allowed_origins: &[String],
    ) -> Result<Self, String> {
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .into_iter()
            .map(String::from)
            .collect();
        if listen.ip().is_unspecified() {
            if allowed_hosts.is_empty() {
                return Err(format!(
                    "listening on every address ({listen}) needs --allowed-hosts: the names \
                     clients reach this gateway by (a page elsewhere could point any name at it)"
                ));
            }
        } else {
            hosts.push(host_name(&SocketAddr::new(listen.ip(), 0).to_string()));
        }
        hosts.extend(allowed_hosts.iter().map(|h| host_name(h.trim())));
        let origins = allowed_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .collect();
        Ok(Self { hosts, origins })
    }

    /// Whether a request with this method, path and headers may go on.
    pub fn admit(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Error> {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if let Some(host) = host
            && !self.hosts.contains(&host_name(host))
        {
            return Err(Error::UnknownHost {
                host: host.chars().take(100).collect(),
            });
        }
        let writes = matches!(
            *method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        if !writes {
            return Ok(());
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("").trim().to_ascii_lowercase();
            if !self.origin_allowed(&origin, host) {
                return Err(Error::ForeignOrigin {
                    origin: origin.chars().take(100).collect(),
                });
            }
        }
        if *method == Method::POST && JSON_ROUTES.contains(&path) {
            let found = headers
                .get(header::CONTENT_TYPE)
                .map(|c| String::from_utf8_lossy(c.as_bytes()).into_owned());
            let media = found.as_deref().and_then(|c| c.split(';').next());
            if !media.is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")) {
                return Err(Error::NotJson {
                    found: found
                        .unwrap_or_else(|| "none".into())
                        .chars()
                        .take(100)
                        .collect(),
                });
            }
        }
        Ok(())
    }

    /// The gateway's own origin (the same authority as the Host asked for), or an
    /// allowed one.
    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        if self.origins.iter().any(|o| o == origin) {
            return true;
        }
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        match (authority, host) {
            (Some(authority), Some(host)) => authority.eq_ignore_ascii_case(host),
            _ => false,
        }
    }
}

/// The host name of a `Host` header or an authority, lowercase, without the port
/// (`[::1]:8080` → `[::1]`, `Example.org:80` → `example.org`).
fn host_name(authority: &str) -> String {
    let authority = authority.to_ascii_lowercase();
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => authority[..=end].to_string(),
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name.to_string(),
        _ => authority,
    }
}

/// The middleware: [`Edge::admit`], or the error.
pub async fn check(State(edge): State<Arc<Edge>>, request: Request, next: Next) -> Response {
    if let Err(err) = edge.admit(request.method(), request.uri().path(), request.headers()) {
        tracing::debug!(error = %err, "refused at the edge");
        return err.into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn code(result: Result<(), Error>) -> &'static str {
        result.err().map_or("ok", |e| e.kind())
    }

    #[test]
    fn hosts_origins_and_content_types_are_checked() {
        let listen: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let edge = Edge::new(
            listen,
            &["chat.school.example".into()],
            &["https://moodle.school.example/".into()],
        )
        .unwrap();
        let get = |pairs: &[(header::HeaderName, &str)]| {
            code(edge.admit(&Method::GET, "/v1/models", &headers(pairs)))
        };
        assert_eq!(get(&[(header::HOST, "localhost:8080")]), "ok");
        assert_eq!(get(&[(header::HOST, "127.0.0.1:8080")]), "ok");
        assert_eq!(get(&[(header::HOST, "[::1]:8080")]), "ok");
        assert_eq!(get(&[(header::HOST, "Chat.School.Example")]), "ok");
        assert_eq!(get(&[(header::HOST, "evil.example")]), "unknown_host");
        assert_eq!(
            get(&[(header::HOST, "localhost.evil.example:8080")]),
            "unknown_host"
        );
        assert_eq!(get(&[]), "ok", "HTTP/1.0 without a Host");

        let post = |path: &str, pairs: &[(header::HeaderName, &str)]| {
            code(edge.admit(&Method::POST, path, &headers(pairs)))
        };
        let json = (header::CONTENT_TYPE, "application/json; charset=utf-8");
        let host = (header::HOST, "localhost:8080");
        assert_eq!(
            post("/v1/chat/completions", &[host.clone(), json.clone()]),
            "ok"
        );
        assert_eq!(
            post(
                "/v1/chat/completions",
                &[host.clone(), (header::CONTENT_TYPE, "text/plain")]
            ),
            "unsupported_media_type"
        );
        assert_eq!(
            post("/v1/search", std::slice::from_ref(&host)),
            "unsupported_media_type"
        );
        assert_eq!(
            post("/v1/documents", std::slice::from_ref(&host)),
            "ok",
            "multipart, not JSON"
        );
        let own = (header::ORIGIN, "http://localhost:8080");
        assert_eq!(
            post("/v1/chat/completions", &[host.clone(), json.clone(), own]),
            "ok"
        );
        for foreign in ["http://evil.example", "null", "http://localhost:9999"] {
            let origin = (header::ORIGIN, foreign);
            assert_eq!(
                post("/v1/documents", &[host.clone(), origin]),
                "foreign_origin",
                "{foreign}"
            );
        }
        let allowed = (header::ORIGIN, "https://moodle.school.example");
        assert_eq!(
            post("/v1/chat/completions", &[host.clone(), json, allowed]),
            "ok"
        );
        let delete = edge.admit(
            &Method::DELETE,
            "/v1/documents/x",
            &headers(&[host, (header::ORIGIN, "http://evil.example")]),
        );
        assert_eq!(code(delete), "foreign_origin");
    }

    #[test]
    fn a_wildcard_bind_needs_its_names() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(
            Edge::new(any, &[], &[])
                .unwrap_err()
                .contains("--allowed-hosts")
        );
        let edge = Edge::new(any, &["10.0.0.5".into()], &[]).unwrap();
        let ok = edge.admit(
            &Method::GET,
            "/",
            &headers(&[(header::HOST, "10.0.0.5:8080")]),
        );
        assert!(ok.is_ok());
        let other = edge.admit(
            &Method::GET,
            "/",
            &headers(&[(header::HOST, "0.0.0.0:8080")]),
        );
        assert!(other.is_err());
    }
}
