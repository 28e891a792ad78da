//! Flags shared by every subcommand: the cauce home directory, how to reach NATS, and
//! the limits of the JetStream objects.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use cauce_nats::{Auth, ConnectOptions, Limits};
use clap::Args;

/// Where cauce keeps models, local indexes and a locally started NATS store.
#[derive(Debug, Clone, Args)]
pub struct HomeArgs {
    /// Home directory [default: ~/.local/share/cauce]
    #[arg(long, env = "CAUCE_HOME", global = true)]
    pub home: Option<PathBuf>,
}

impl HomeArgs {
    pub fn dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(home) = &self.home {
            return Ok(home.clone());
        }
        let user_home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .context("HOME is not set: pass --home or set CAUCE_HOME")?;
        Ok(PathBuf::from(user_home).join(".local/share/cauce"))
    }
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
}

impl NatsArgs {
    pub fn connect_options(&self, client_name: &str) -> anyhow::Result<ConnectOptions> {
        let mut options = ConnectOptions::new(&self.nats_url, client_name);
        options.auth = match (
            &self.nats_user,
            &self.nats_password,
            &self.nats_token,
            &self.nats_creds,
        ) {
            (None, None, None, None) => Auth::None,
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
}

/// Limits of cauce's streams, consumers and buckets, applied by `ensure` at start.
#[derive(Debug, Clone, Args)]
pub struct LimitsArgs {
    /// Replicas of every stream and bucket (3 on a 3-node cluster)
    #[arg(long, env = "CAUCE_REPLICAS", default_value_t = 1)]
    pub replicas: usize,
    /// How long accepted questions are kept for replay
    #[arg(long, env = "CAUCE_QUESTIONS_MAX_AGE", default_value = "7d", value_parser = humantime::parse_duration)]
    pub questions_max_age: Duration,
    /// How long results stay readable through the tasks API
    #[arg(long, env = "CAUCE_RESULTS_TTL", default_value = "7d", value_parser = humantime::parse_duration)]
    pub results_ttl: Duration,
    /// How long a cached answer lives
    #[arg(long, env = "CAUCE_CACHE_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub cache_ttl: Duration,
    /// Size bound of the response cache bucket, in bytes
    #[arg(long, env = "CAUCE_CACHE_MAX_BYTES", default_value_t = 256 << 20)]
    pub cache_max_bytes: i64,
    /// Deliveries of a question or prompt job before it becomes a dead letter
    #[arg(long, env = "CAUCE_MAX_DELIVERIES", default_value_t = 5)]
    pub max_deliveries: i64,
    /// How long a worker may hold a job without acking before it is redelivered
    #[arg(long, env = "CAUCE_ACK_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ack_wait: Duration,
    /// Window in which a repeated message id is dropped as a duplicate
    #[arg(long, env = "CAUCE_DUPLICATE_WINDOW", default_value = "2m", value_parser = humantime::parse_duration)]
    pub duplicate_window: Duration,
}

impl LimitsArgs {
    pub fn limits(&self) -> Limits {
        let mut limits = Limits {
            replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            retrieval_ack_wait: self.ack_wait,
            inference_ack_wait: self.ack_wait,
            max_deliveries: self.max_deliveries,
            ..Limits::default()
        };
        limits.questions.max_age = self.questions_max_age;
        limits.results.max_age = self.results_ttl;
        limits.cache.max_age = self.cache_ttl;
        limits.cache.max_bytes = self.cache_max_bytes;
        limits
    }
}
