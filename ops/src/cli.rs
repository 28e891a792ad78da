//! Flags shared by every subcommand: the cauce home directory, how to reach NATS, and
//! the limits of the JetStream objects.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use cauce_nats::async_nats::jetstream;
use cauce_nats::permissions::Role;
use cauce_nats::{Auth, ConnectOptions, Limits, Need, Tls};
use clap::Args;

use crate::credentials;

/// Where cauce keeps models, local indexes and a locally started NATS store.
#[derive(Debug, Clone, Args)]
pub struct HomeArgs {
    /// Home directory [default: ~/.local/share/cauce]
    #[arg(long, env = "CAUCE_HOME", global = true)]
    pub home: Option<PathBuf>,
}

impl HomeArgs {
    pub fn dir(&self) -> anyhow::Result<PathBuf> {
        match &self.home {
            Some(home) => Ok(home.clone()),
            None => default_home(),
        }
    }
}

/// `$CAUCE_HOME`, else `~/.local/share/cauce`: the home of a command without `--home`.
pub fn default_home() -> anyhow::Result<PathBuf> {
    if let Some(home) = std::env::var_os("CAUCE_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    let user_home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("HOME is not set: pass --home or set CAUCE_HOME")?;
    Ok(PathBuf::from(user_home).join(".local/share/cauce"))
}

/// How to reach NATS.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URLs, comma-separated (`tls://` for TLS)
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    pub nats_url: String,
    /// NATS user name (with --nats-password)
    #[arg(long, env = "NATS_USER", global = true)]
    pub nats_user: Option<String>,
    /// NATS password
    #[arg(long, env = "NATS_PASSWORD", global = true, hide_env_values = true)]
    pub nats_password: Option<String>,
    /// NATS token
    #[arg(long, env = "NATS_TOKEN", global = true, hide_env_values = true)]
    pub nats_token: Option<String>,
    /// NATS credentials file (JWT and NKey seed)
    #[arg(long, env = "NATS_CREDS", global = true)]
    pub nats_creds: Option<PathBuf>,
    /// PEM file of the CA that signed the NATS servers' certificates (turns TLS on)
    #[arg(long, env = "NATS_TLS_CA", global = true)]
    pub nats_tls_ca: Option<PathBuf>,
    /// PEM file of this client's certificate, for servers that verify clients
    #[arg(long, env = "NATS_TLS_CERT", global = true)]
    pub nats_tls_cert: Option<PathBuf>,
    /// PEM file of the key of --nats-tls-cert
    #[arg(long, env = "NATS_TLS_KEY", global = true)]
    pub nats_tls_key: Option<PathBuf>,
}

impl NatsArgs {
    /// How a process of `role` connects, named `client_name` in the server's list.
    pub fn connect_options(&self, role: Role, client_name: &str) -> anyhow::Result<ConnectOptions> {
        let mut options = ConnectOptions::new(&self.nats_url, client_name).as_role(role);
        options.tls = Tls {
            ca: self.nats_tls_ca.clone(),
            client_cert: self.nats_tls_cert.clone(),
            client_key: self.nats_tls_key.clone(),
        };
        options.auth = match (
            &self.nats_user,
            &self.nats_password,
            &self.nats_token,
            &self.nats_creds,
        ) {
            (None, None, None, None) => self.stored_login(role)?,
            (Some(user), password, None, None) => Auth::UserPassword {
                user: user.clone(),
                password: password.clone().unwrap_or_default(),
            },
            (None, None, Some(token), None) => Auth::Token(token.clone()),
            (None, None, None, Some(path)) => Auth::CredsFile(path.clone()),
            (None, Some(_), None, None) => bail!("--nats-password needs --nats-user"),
            _ => bail!("give one of --nats-user, --nats-token or --nats-creds, not several"),
        };
        Ok(options)
    }

    /// The login `cauce up` generated for `role` (see [`credentials`]), when every URL
    /// is on this machine and the home holds one; else no credentials. A password is
    /// never offered to a server elsewhere.
    fn stored_login(&self, role: Role) -> anyhow::Result<Auth> {
        let urls = cauce_nats::connect::split_urls(&self.nats_url);
        let addrs = cauce_nats::connect::server_addrs(&urls)?;
        let local = addrs
            .iter()
            .all(|addr| matches!(addr.host(), "127.0.0.1" | "localhost" | "::1" | "[::1]"));
        if !local {
            return Ok(Auth::None);
        }
        let Ok(home) = default_home() else {
            return Ok(Auth::None);
        };
        Ok(match credentials::stored(&home, role)? {
            Some(password) => Auth::UserPassword {
                user: role.user(),
                password,
            },
            None => Auth::None,
        })
    }

    /// The URL list with any password in it replaced, for logs.
    pub fn url_for_logs(&self) -> String {
        cauce_nats::connect::redact_urls(&self.nats_url)
    }
}

/// Limits of cauce's streams, consumers and buckets. The owner commands (`cauce up`,
/// `cauce nats apply`) set the ones given and create missing objects with the defaults;
/// every other command only checks that each flag given agrees with the server and
/// refuses to start when one does not: no process rewrites shared settings.
#[derive(Debug, Clone, Default, Args)]
pub struct LimitsArgs {
    /// Replicas of every stream and bucket (3 on a 3-node cluster) [default: 1]
    #[arg(long, env = "CAUCE_REPLICAS")]
    pub replicas: Option<usize>,
    /// How long accepted questions are kept for replay [default: 7d]
    #[arg(long, env = "CAUCE_QUESTIONS_MAX_AGE", value_parser = humantime::parse_duration)]
    pub questions_max_age: Option<Duration>,
    /// How long results stay readable through the tasks API [default: 7d]
    #[arg(long, env = "CAUCE_RESULTS_TTL", value_parser = humantime::parse_duration)]
    pub results_ttl: Option<Duration>,
    /// How long a cached answer lives [default: 24h]
    #[arg(long, env = "CAUCE_CACHE_TTL", value_parser = humantime::parse_duration)]
    pub cache_ttl: Option<Duration>,
    /// Size bound of the response cache bucket, in bytes [default: 268435456]
    #[arg(long, env = "CAUCE_CACHE_MAX_BYTES")]
    pub cache_max_bytes: Option<i64>,
    /// Size bound of the uploaded files' object store, in bytes [default: 2147483648]
    #[arg(long, env = "CAUCE_UPLOADS_MAX_BYTES")]
    pub uploads_max_bytes: Option<i64>,
    /// Deliveries of a question or prompt job before it becomes a dead letter; a worker
    /// that dies holding a job spends one [default: 10]
    #[arg(long, env = "CAUCE_MAX_DELIVERIES")]
    pub max_deliveries: Option<i64>,
    /// How long a retrieval worker may hold a question without acking before it is
    /// redelivered [default: 1s]
    #[arg(long, env = "CAUCE_RETRIEVAL_ACK_WAIT", value_parser = humantime::parse_duration)]
    pub retrieval_ack_wait: Option<Duration>,
    /// How long an inference worker may go without an (in-progress) ack before its job
    /// is redelivered [default: 1s]
    #[arg(long, env = "CAUCE_INFERENCE_ACK_WAIT", value_parser = humantime::parse_duration)]
    pub inference_ack_wait: Option<Duration>,
    /// Window in which a repeated message id is dropped as a duplicate [default: 2m]
    #[arg(long, env = "CAUCE_DUPLICATE_WINDOW", value_parser = humantime::parse_duration)]
    pub duplicate_window: Option<Duration>,
}

/// Prints one field of the limits.
type Show = fn(&Limits) -> String;

/// Each limit flag, the object field it sets, and how to print that field.
const LIMIT_FLAGS: &[(&str, &str, Show)] = &[
    ("--replicas", "replicas of stream QUESTIONS", |l| {
        l.replicas.to_string()
    }),
    ("--questions-max-age", "max_age of stream QUESTIONS", |l| {
        span(l.questions.max_age)
    }),
    ("--results-ttl", "max_age of bucket cauce-results", |l| {
        span(l.results.max_age)
    }),
    ("--cache-ttl", "max_age of bucket cauce-cache", |l| {
        span(l.cache.max_age)
    }),
    (
        "--cache-max-bytes",
        "max_bytes of bucket cauce-cache",
        |l| l.cache.max_bytes.to_string(),
    ),
    (
        "--uploads-max-bytes",
        "max_bytes of object store cauce-uploads",
        |l| l.uploads.max_bytes.to_string(),
    ),
    (
        "--max-deliveries",
        "max_deliver of the work consumers",
        |l| l.max_deliveries.to_string(),
    ),
    (
        "--retrieval-ack-wait",
        "ack_wait of consumer QUESTIONS/retrieval",
        |l| span(l.retrieval_ack_wait),
    ),
    (
        "--inference-ack-wait",
        "ack_wait of the PROMPTS consumers",
        |l| span(l.inference_ack_wait),
    ),
    (
        "--duplicate-window",
        "duplicate_window of the streams",
        |l| span(l.duplicate_window),
    ),
];

/// One line per limit flag: the flag, the object field and its value.
pub fn describe_limits(limits: &Limits) -> String {
    LIMIT_FLAGS
        .iter()
        .map(|(flag, field, value)| format!("{flag:<22} {:<12} {field}", value(limits)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn span(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

impl LimitsArgs {
    /// `base` with every flag given set over it.
    pub fn over(&self, base: Limits) -> Limits {
        let mut limits = base;
        let set = |field: &mut Duration, flag: Option<Duration>| {
            if let Some(value) = flag {
                *field = value;
            }
        };
        set(&mut limits.questions.max_age, self.questions_max_age);
        set(&mut limits.results.max_age, self.results_ttl);
        set(&mut limits.cache.max_age, self.cache_ttl);
        set(&mut limits.retrieval_ack_wait, self.retrieval_ack_wait);
        set(&mut limits.inference_ack_wait, self.inference_ack_wait);
        set(&mut limits.duplicate_window, self.duplicate_window);
        limits.replicas = self.replicas.unwrap_or(limits.replicas);
        limits.cache.max_bytes = self.cache_max_bytes.unwrap_or(limits.cache.max_bytes);
        limits.uploads.max_bytes = self.uploads_max_bytes.unwrap_or(limits.uploads.max_bytes);
        limits.max_deliveries = self.max_deliveries.unwrap_or(limits.max_deliveries);
        limits
    }

    /// What a process that is not the owner does at start: the objects in `needs` must
    /// exist (nothing is created or changed) and every flag given must agree with the
    /// server. Returns the server's limits.
    pub async fn check(&self, js: &jetstream::Context, needs: &[Need]) -> anyhow::Result<Limits> {
        let server = cauce_nats::check(js, needs).await?;
        self.agree_with(&server)?;
        Ok(server)
    }

    /// What the owner commands do: the server's limits (defaults for missing objects)
    /// with the flags given over them, applied. Prints what changed.
    pub async fn apply(&self, js: &jetstream::Context) -> anyhow::Result<Limits> {
        let limits = self.over(cauce_nats::read(js).await?);
        let report = cauce_nats::apply(js, &limits)
            .await
            .context("setting up streams, consumers and buckets")?;
        for ensured in report {
            if ensured.action != cauce_nats::Action::Unchanged {
                tracing::info!(object = %ensured.object, action = ?ensured.action, "jetstream");
            }
        }
        Ok(limits)
    }

    /// Fails, naming each object, field, both values and the command that changes them,
    /// when a flag given disagrees with the limits the server holds.
    pub fn agree_with(&self, server: &Limits) -> anyhow::Result<()> {
        let asked = self.over(server.clone());
        let differ: Vec<_> = LIMIT_FLAGS
            .iter()
            .filter(|(_, _, value)| value(server) != value(&asked))
            .collect();
        if differ.is_empty() {
            return Ok(());
        }
        let what: Vec<String> = differ
            .iter()
            .map(|(flag, field, value)| {
                format!(
                    "{field} is {} but {flag} asks for {}",
                    value(server),
                    value(&asked)
                )
            })
            .collect();
        let command: Vec<String> = differ
            .iter()
            .map(|(flag, _, value)| format!("{flag} {}", value(&asked)))
            .collect();
        bail!(
            "{}; change the server's settings with `cauce nats apply {}`, or drop the flag \
             to use what the server has",
            what.join("; "),
            command.join(" ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_not_given_take_the_servers_values() {
        let server = Limits {
            retrieval_ack_wait: Duration::from_secs(10),
            ..Limits::default()
        };
        let none = LimitsArgs::default();
        assert_eq!(none.over(server.clone()), server);
        none.agree_with(&server).unwrap();

        let asked = LimitsArgs {
            retrieval_ack_wait: Some(Duration::from_secs(10)),
            ..LimitsArgs::default()
        };
        asked.agree_with(&server).unwrap();
    }

    #[test]
    fn a_flag_that_disagrees_names_object_field_values_and_command() {
        let server = Limits::default();
        let asked = LimitsArgs {
            retrieval_ack_wait: Some(Duration::from_secs(10)),
            max_deliveries: Some(9),
            ..LimitsArgs::default()
        };
        let message = asked.agree_with(&server).unwrap_err().to_string();
        for part in [
            "ack_wait of consumer QUESTIONS/retrieval is 1s but --retrieval-ack-wait asks for 10s",
            "max_deliver of the work consumers is 10 but --max-deliveries asks for 9",
            "`cauce nats apply --max-deliveries 9 --retrieval-ack-wait 10s`",
        ] {
            assert!(message.contains(part), "{message}");
        }
    }
}
