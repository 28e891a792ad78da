//! Connecting to NATS the way every cauce process does: a URL list, a client name,
//! optional credentials, TLS when a URL asks for it, and reconnects without end.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::{Client, ServerAddr};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::permissions::Role;

/// How a client proves who it is.
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    /// A `.creds` file (JWT and NKey seed), as `nsc` writes them.
    CredsFile(PathBuf),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("none"),
            Auth::UserPassword { user, .. } => write!(f, "user {user:?}, password <redacted>"),
            Auth::Token(_) => f.write_str("token <redacted>"),
            Auth::CredsFile(path) => write!(f, "creds file {}", path.display()),
        }
    }
}

/// TLS to NATS beyond what a `tls://` URL asks for: a CA to trust (a private one, not
/// the system's roots) and a client certificate for servers that verify clients.
#[derive(Clone, Debug, Default)]
pub struct Tls {
    /// PEM file of the CA that signed the servers' certificates.
    pub ca: Option<PathBuf>,
    /// PEM files of this client's certificate and its key (mutual TLS).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl Tls {
    fn is_set(&self) -> bool {
        self.ca.is_some() || self.client_cert.is_some() || self.client_key.is_some()
    }
}

/// Everything needed to connect.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// One or more server URLs (`nats://`, `tls://`), as a list or comma-separated.
    pub urls: Vec<String>,
    /// Shown in the server's connection list (`cauce-gateway gw-1`, `cauce-inference`).
    pub client_name: String,
    pub auth: Auth,
    pub tls: Tls,
    /// The kind of process, whose inbox prefix its replies come to (see
    /// [`permissions`](crate::permissions)); `None` keeps NATS' default `_INBOX`.
    pub role: Option<Role>,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
}

impl ConnectOptions {
    pub fn new(urls: &str, client_name: impl Into<String>) -> Self {
        Self {
            urls: split_urls(urls),
            client_name: client_name.into(),
            auth: Auth::None,
            tls: Tls::default(),
            role: None,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// The same options for a process of `role`.
    pub fn as_role(mut self, role: Role) -> Self {
        self.role = Some(role);
        self
    }

    /// The URL list as one comma-separated string, for logs: a password or token in a
    /// URL shows as `<redacted>`.
    pub fn urls_display(&self) -> String {
        redact_urls(&self.urls.join(","))
    }
}

/// `urls` (comma-separated) with the secret of each URL's user info replaced:
/// `nats://user:pw@host` → `nats://user:<redacted>@host`, `nats://token@host` →
/// `nats://<redacted>@host`.
pub fn redact_urls(urls: &str) -> String {
    split_urls(urls)
        .iter()
        .map(|url| redact_url(url))
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let (user_info, host) = (&rest[..at], &rest[at..]);
    let shown = match user_info.split_once(':') {
        Some((user, _)) => format!("{user}:<redacted>"),
        None => "<redacted>".to_string(),
    };
    format!("{scheme}{shown}{host}")
}

/// Whether a URL carries its own credentials (`nats://user:pw@host`).
fn has_user_info(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest[..rest.find('/').unwrap_or(rest.len())].contains('@')
}

/// Splits `nats://a:4222,nats://b:4222` (spaces allowed) into URLs.
pub fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect()
}

/// Parses the URL list into server addresses, rejecting what async-nats would not take.
pub fn server_addrs(urls: &[String]) -> Result<Vec<ServerAddr>> {
    if urls.is_empty() {
        return Err(Error::BadUrl {
            url: String::new(),
            reason: "no NATS URL given".into(),
        });
    }
    urls.iter()
        .map(|url| {
            url.parse::<ServerAddr>().map_err(|err| Error::BadUrl {
                url: url.clone(),
                reason: err.to_string(),
            })
        })
        .collect()
}

/// Connects, waiting for the first connection; after that the client reconnects by
/// itself for ever, with a log line for every disconnect and reconnect.
pub async fn connect(options: &ConnectOptions) -> Result<Client> {
    let addrs = server_addrs(&options.urls)?;
    let urls = options.urls_display();
    let tls = options.tls.is_set() || addrs.iter().any(|addr| addr.tls_required());
    let mut nats_options = async_nats::ConnectOptions::new()
        .name(&options.client_name)
        .connection_timeout(options.connect_timeout)
        .max_reconnects(None)
        .require_tls(tls)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => info!("nats connected"),
                async_nats::Event::Disconnected => warn!("nats disconnected, reconnecting"),
                async_nats::Event::LameDuckMode => warn!("nats server entered lame duck mode"),
                async_nats::Event::SlowConsumer(sid) => warn!(sid, "nats slow consumer"),
                async_nats::Event::ServerError(err) => warn!(error = %err, "nats server error"),
                async_nats::Event::ClientError(err) => warn!(error = %err, "nats client error"),
                async_nats::Event::Draining | async_nats::Event::Closed => {}
            }
        });
    if let Some(role) = options.role {
        nats_options = nats_options.custom_inbox_prefix(role.inbox_prefix());
    }
    nats_options = with_tls(nats_options, &options.tls)?;
    nats_options = match &options.auth {
        Auth::None => {
            if !options.urls.iter().any(|url| has_user_info(url)) {
                warn!(
                    urls = %urls,
                    "connecting to NATS without credentials: if this server accepts that, any \
                     process that reaches it can read every question and answer and delete \
                     cauce's streams; give --nats-user and --nats-password (or --nats-creds), \
                     or let `cauce up` start its own server, which requires a login"
                );
            }
            nats_options
        }
        Auth::UserPassword { user, password } => {
            nats_options.user_and_password(user.clone(), password.clone())
        }
        Auth::Token(token) => nats_options.token(token.clone()),
        Auth::CredsFile(path) => nats_options
            .credentials_file(path)
            .await
            .map_err(|source| Error::Credentials {
                path: path.clone(),
                source,
            })?,
    };
    let client = nats_options
        .connect(addrs)
        .await
        .map_err(|source| Error::Connect {
            urls: urls.clone(),
            source: source.into(),
        })?;
    info!(urls = %urls, client = %options.client_name, "nats ready");
    Ok(client)
}

fn with_tls(
    mut nats_options: async_nats::ConnectOptions,
    tls: &Tls,
) -> Result<async_nats::ConnectOptions> {
    for path in [&tls.ca, &tls.client_cert, &tls.client_key]
        .into_iter()
        .flatten()
    {
        if !path.is_file() {
            return Err(Error::Tls {
                reason: format!("{} is not a readable file", path.display()),
            });
        }
    }
    if let Some(ca) = &tls.ca {
        nats_options = nats_options.add_root_certificates(ca.clone());
    }
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            nats_options = nats_options.add_client_certificate(cert.clone(), key.clone());
        }
        (None, None) => {}
        _ => {
            return Err(Error::Tls {
                reason: "a client certificate needs its key, and a key its certificate: \
                         give both --nats-tls-cert and --nats-tls-key"
                    .into(),
            });
        }
    }
    Ok(nats_options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_lists_split_on_commas() {
        assert_eq!(
            split_urls(" nats://a:4222, nats://b:4223 ,,"),
            vec!["nats://a:4222".to_string(), "nats://b:4223".to_string()]
        );
        assert_eq!(
            server_addrs(&split_urls("nats://a:1,tls://b:2"))
                .unwrap()
                .len(),
            2
        );
        assert!(server_addrs(&[]).is_err());
    }

    #[test]
    fn secrets_never_print() {
        let auth = Auth::UserPassword {
            user: "ops".into(),
            password: "hunter2".into(),
        };
        let shown = format!("{auth:?} {:?}", Auth::Token("sekrit".into()));
        assert!(
            !shown.contains("hunter2") && !shown.contains("sekrit"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn passwords_in_urls_never_print() {
        assert_eq!(
            redact_urls("nats://ops:hunter2@a:4222, tls://sekrit@b:4223,nats://c:1"),
            "nats://ops:<redacted>@a:4222,tls://<redacted>@b:4223,nats://c:1"
        );
        let options = ConnectOptions::new("nats://ops:hunter2@a:4222", "x");
        assert_eq!(options.urls_display(), "nats://ops:<redacted>@a:4222");
        assert!(has_user_info("nats://u:p@h:1") && !has_user_info("nats://h:1"));
    }
}
