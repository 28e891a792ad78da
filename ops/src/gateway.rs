//! `cauce gateway`: one HTTP gateway. Several can run side by side, each with its own
//! id, against the same NATS.
//!
//! [`GatewayHttpArgs`] is also what `cauce up` flattens to run a gateway in-process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cauce_gateway::{GatewayConfig, RateLimit};
use cauce_nats::{GatewayId, ModelName, Need, connect};
use clap::Args;

use crate::cli::{LimitsArgs, NatsArgs};

#[derive(Debug, Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    limits: LimitsArgs,
    #[command(flatten)]
    http: GatewayHttpArgs,
    /// Folder served under /docs/, where the bundled guide's source links point
    #[arg(long, env = "CAUCE_GATEWAY_DOCS_DIR")]
    docs_dir: Option<PathBuf>,
    /// Serve on this inherited listening socket instead of binding --host and --port
    /// (how `cauce up` hands its port to the gateway it starts)
    #[arg(long, env = "CAUCE_LISTEN_FD", hide = true)]
    listen_fd: Option<i32>,
}

/// The gateway's own flags.
#[derive(Debug, Clone, Args)]
pub struct GatewayHttpArgs {
    /// Address to listen on
    #[arg(long, env = "CAUCE_GATEWAY_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on
    #[arg(long, env = "CAUCE_GATEWAY_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Id of this gateway, unique among running gateways [default: random]
    #[arg(long, env = "CAUCE_GATEWAY_ID")]
    pub gateway_id: Option<String>,
    /// Model of requests that name none
    #[arg(long, env = "CAUCE_DEFAULT_MODEL", default_value = ModelName::DEFAULT)]
    pub default_model: String,
    /// Accepted API keys, comma-separated; none means no key is needed
    #[arg(long, env = "CAUCE_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// File of accepted API keys, one per line ('#' starts a comment); read again when
    /// it changes or on SIGHUP, without a restart
    #[arg(long, env = "CAUCE_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// Admin API keys, comma-separated: they chat too, and with any key configured only
    /// they may add or delete documents (POST and DELETE /v1/documents)
    #[arg(long, env = "CAUCE_ADMIN_API_KEYS", hide_env_values = true)]
    pub admin_api_keys: Option<String>,
    /// File of admin API keys, one per line; reloaded like --api-keys-file
    #[arg(long, env = "CAUCE_ADMIN_API_KEYS_FILE")]
    pub admin_api_keys_file: Option<PathBuf>,
    /// Largest upload request (POST /v1/documents, all its files), in bytes
    #[arg(long, env = "CAUCE_MAX_UPLOAD", default_value_t = 64 << 20)]
    pub max_upload: usize,
    /// Files one upload request may carry
    #[arg(long, env = "CAUCE_MAX_UPLOAD_FILES", default_value_t = 16)]
    pub max_upload_files: usize,
    /// /metrics without a key even when API keys are configured (by default, it needs
    /// one: give a scraper a key of its own)
    #[arg(long, env = "CAUCE_METRICS_PUBLIC")]
    pub metrics_public: bool,
    /// Host names clients reach the gateway by, comma-separated, besides localhost and
    /// the listen address; any other Host gets 421 (required with --host 0.0.0.0)
    #[arg(long, env = "CAUCE_ALLOWED_HOSTS")]
    pub allowed_hosts: Option<String>,
    /// Origins whose pages may send requests that change anything (https://name[:port],
    /// comma-separated), besides the gateway's own page; others get 403
    #[arg(long, env = "CAUCE_ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,
    /// Serve on an address other than loopback without any API key (anyone who reaches
    /// it may chat, upload and delete)
    #[arg(long, env = "CAUCE_OPEN_WITHOUT_KEYS")]
    pub open_without_keys: bool,
    /// What --metrics-public undoes, the default now; kept so that older command lines
    /// still start
    #[arg(long, env = "CAUCE_METRICS_NEED_KEY", hide = true)]
    pub metrics_need_key: bool,
    /// Streams this gateway holds at once; beyond it new requests get 503
    #[arg(long, env = "CAUCE_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Prompt jobs waiting for a model beyond which new requests get 503
    #[arg(long, env = "CAUCE_MAX_BACKLOG", default_value_t = 1000)]
    pub max_backlog: u64,
    /// Requests per second per client (its API key when keys are configured, else its
    /// address); 0 turns the limit off
    #[arg(long, env = "CAUCE_RATE_LIMIT", default_value_t = 10.0)]
    pub rate_limit: f64,
    /// Burst of requests a client may send at once
    #[arg(long, env = "CAUCE_RATE_BURST", default_value_t = 40)]
    pub rate_burst: u32,
    /// Header in which a trusted reverse proxy passes the client's address (for example
    /// X-Forwarded-For; its rightmost entry is used); without it the peer address is
    #[arg(long, env = "CAUCE_CLIENT_ADDRESS_HEADER")]
    pub client_address_header: Option<String>,
    /// Largest request body in bytes
    #[arg(long, env = "CAUCE_MAX_BODY", default_value_t = 1 << 20)]
    pub max_body: usize,
    /// How long a request may take from acceptance to its last token
    #[arg(long, env = "CAUCE_REQUEST_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// How long a write that accepts a request (the question, a task record) is retried until JetStream acks it, before answering 503
    #[arg(long, env = "CAUCE_PUBLISH_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub publish_timeout: Duration,
    /// On shutdown, how long running streams may go on
    #[arg(long, env = "CAUCE_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl GatewayHttpArgs {
    /// The address to bind.
    pub fn address(&self) -> anyhow::Result<SocketAddr> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let ip: std::net::IpAddr = host
            .parse()
            .with_context(|| format!("--host {:?} is not an IP address", self.host))?;
        Ok(SocketAddr::new(ip, self.port))
    }

    /// The gateway configuration these flags describe.
    pub fn config(&self) -> anyhow::Result<GatewayConfig> {
        let split = |keys: &Option<String>| -> Vec<String> {
            keys.iter()
                .flat_map(|keys| keys.split(','))
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(String::from)
                .collect()
        };
        let id = match &self.gateway_id {
            Some(id) => GatewayId::parse(id.as_str()).context("--gateway-id")?,
            None => GatewayId::generate(),
        };
        let rate_limit = (self.rate_limit > 0.0).then_some(RateLimit {
            per_second: self.rate_limit,
            burst: self.rate_burst.max(1),
        });
        Ok(GatewayConfig {
            id,
            default_model: ModelName::parse(self.default_model.as_str())
                .context("--default-model")?,
            api_keys: split(&self.api_keys),
            api_keys_file: self.api_keys_file.clone(),
            admin_api_keys: split(&self.admin_api_keys),
            admin_api_keys_file: self.admin_api_keys_file.clone(),
            max_upload_bytes: self.max_upload,
            max_upload_files: self.max_upload_files.max(1),
            metrics_public: self.metrics_public && !self.metrics_need_key,
            allowed_hosts: split(&self.allowed_hosts),
            allowed_origins: split(&self.allowed_origins),
            open_without_keys: self.open_without_keys,
            max_in_flight: self.max_in_flight.max(1),
            max_backlog: self.max_backlog,
            rate_limit,
            client_address_header: self.client_address_header.clone(),
            max_body_bytes: self.max_body,
            request_timeout: self.request_timeout,
            publish_timeout: self.publish_timeout,
            shutdown_grace: self.shutdown_grace,
            ..GatewayConfig::new()
        })
    }
}

pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let mut config = args.http.config()?;
    config.docs_dir = args.docs_dir.clone();
    let address = args.http.address()?;
    let client = connect(&args.nats.connect_options(
        cauce_nats::permissions::Role::Gateway,
        &format!("cauce-gateway {}", config.id),
    )?)
    .await?;
    let js = cauce_nats::async_nats::jetstream::new(client.clone());
    args.limits.check(&js, Need::GATEWAY).await?;
    let listener = match args.listen_fd {
        Some(fd) => inherited_listener(fd)?,
        None => tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("listening on {address}"))?,
    };
    println!(
        "cauce gateway {} listening on http://{}",
        config.id,
        listener.local_addr()?
    );

    let cancel = crate::signals::shutdown_token()?;
    cauce_gateway::serve(config, client.clone(), listener, cancel).await?;
    client.drain().await.ok();
    Ok(())
}

/// The listening socket a parent handed over as descriptor `fd`.
fn inherited_listener(fd: i32) -> anyhow::Result<tokio::net::TcpListener> {
    use std::os::fd::FromRawFd;
    if fd < 3 {
        anyhow::bail!("--listen-fd {fd} is not an inherited socket");
    }
    #[allow(unsafe_code)]
    // SAFETY: `cauce up` passed this descriptor to this process for it alone; nothing
    // else here owns it, and `local_addr` below checks it is a socket.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    listener
        .local_addr()
        .with_context(|| format!("--listen-fd {fd} is not a listening socket"))?;
    listener.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(listener)?)
}
