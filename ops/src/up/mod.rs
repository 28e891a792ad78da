//! `cauce up`: the whole service on one machine, with defaults that need no flag, as a
//! launcher of one process per component.
//!
//! It uses the NATS at `--nats-url`, or starts a `nats-server` child that requires a
//! login (one user per role, see [`crate::credentials`]) when nothing answers there. It
//! sets up every stream and bucket (it is their owner), ingests the bundled corpus when
//! `DOCS` is empty (in a `cauce ingest` child), binds the HTTP port, and then runs the
//! gateway, one retrieval worker, one inference worker and one ingest worker (uploads)
//! as child processes: `cauce gateway`, `cauce retrieval`, `cauce inference` and `cauce
//! ingest --follow`, the same code as alone, with the flags `cauce up` was given passed
//! as their environment variables ([`flags`]). The gateway inherits the listening
//! socket, so the port stays open across its restarts and connections wait in the
//! backlog meanwhile.
//!
//! A child that dies is restarted with backoff, and why it died is logged
//! ([`children`]); `cauce status` shows each child and its restarts ([`service`]).
//! Nothing outlives `cauce up`, not even a SIGKILL of it: every child and the
//! `nats-server` carry a parent-death signal.
//!
//! Ctrl-C shuts down in order: the gateway stops accepting and finishes its streams,
//! the workers drain, the NATS child goes last. A second Ctrl-C exits at once.

pub mod children;
mod flags;
mod service;

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use cauce_nats::async_nats::jetstream;
use cauce_nats::permissions::Role;
use cauce_nats::{Auth, connect, names};
use cauce_retrieval::Language;
use clap::{ArgMatches, Args};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cache::CacheArgs;
use crate::cli::{HomeArgs, LimitsArgs, NatsArgs};
use crate::gateway::GatewayHttpArgs;
use crate::inference::ModelArgs;
use crate::local_nats::{self, LocalNats};
use crate::signals;
use children::{ChildSpec, Spawner, Supervised};

include!(concat!(env!("OUT_DIR"), "/bundled_docs.rs"));

/// How long the workers may drain on shutdown before they are killed.
const WORKER_GRACE: Duration = Duration::from_secs(60);
/// What the gateway gets beyond its own `--shutdown-grace`.
const GATEWAY_GRACE_MARGIN: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    home: HomeArgs,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    limits: LimitsArgs,
    #[command(flatten)]
    http: GatewayHttpArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    hybrid: crate::retrieval::HybridArgs,
    #[command(flatten)]
    convert: crate::ingest::ConvertArgs,
    /// Language of the corpus: english or spanish
    #[arg(long, env = "CAUCE_LANGUAGE", default_value = "english")]
    language: Language,
    /// Folder ingested when DOCS is empty, and served under /docs/ [default: the guide
    /// bundled in the binary; a ./docs folder is not taken unless named here]
    #[arg(long, env = "CAUCE_DOCS")]
    docs: Option<PathBuf>,
}

pub async fn run(args: UpArgs, matches: &ArgMatches) -> anyhow::Result<()> {
    let home = args.home.dir()?;
    std::fs::create_dir_all(&home)
        .with_context(|| format!("creating the cauce home directory {}", home.display()))?;
    // the children would refuse these; refuse them once, here, before anything starts
    let model = args.model.worker_config(&args.home)?.engine.model_path;
    let gateway_config = args.http.config()?;
    let address = args.http.address()?;
    info!(home = %home.display(), nats_url = %args.nats.url_for_logs(), "cauce up");

    let spawner = Spawner::start()?;
    let local_nats = local_nats::find_or_start(&args.nats.nats_url, &home, &spawner).await?;
    let shutdown = signals::shutdown_token()?;
    let children = Children::new(&args, matches, &home, &model, local_nats.as_ref())?;
    let mut options = args.nats.connect_options(Role::Operator, "cauce-up")?;
    if let Some(nats) = &local_nats {
        options.auth = login(nats, Role::Operator);
    }
    let client = connect(&options).await?;
    let js = jetstream::new(client.clone());
    let limits = args.limits.apply(&js).await?;
    info!(?limits, "nats objects");
    let docs_dir = docs_folder(&home, args.docs.as_deref())?;
    ingest_bundled_docs(&js, &docs_dir, &children, &spawner, &shutdown).await?;

    let listener = std::net::TcpListener::bind(address)
        .with_context(|| format!("listening on {address}; pass --port to use another port"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let fatal = CancellationToken::new();
    let start = |spec| Supervised::start(spec, spawner.clone(), fatal.clone());
    let workers = vec![
        start(children.spec("retrieval", &["retrieval"], Role::Retrieval)),
        start(children.spec("inference", &["inference"], Role::Inference)),
        start(children.spec("ingest", &["ingest", "--follow"], Role::Ingest)),
    ];
    let gateway = start(children.gateway(listener.as_raw_fd(), &docs_dir));
    let states = workers
        .iter()
        .chain([&gateway])
        .map(|c| c.state.clone())
        .collect();
    let announced = service::announce(&client, states).await?;
    print_welcome(&url, args.model.model_name.as_ref());

    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = fatal.cancelled() => {}
    }
    info!("stopping the gateway");
    // the gateway's copy of the socket closes with it; the launcher's would keep
    // accepting connections into the backlog that nobody serves
    drop(listener);
    gateway
        .stop(gateway_config.shutdown_grace + GATEWAY_GRACE_MARGIN)
        .await;
    info!("draining the workers");
    futures::future::join_all(workers.into_iter().map(|w| w.stop(WORKER_GRACE))).await;
    announced.stop().await;
    client.drain().await.ok();
    if let Some(nats) = local_nats {
        tokio::task::spawn_blocking(move || nats.stop()).await?;
    }
    if fatal.is_cancelled() {
        anyhow::bail!("a component failed at start (its error is above); cauce stopped");
    }
    info!("cauce stopped");
    Ok(())
}

fn login(nats: &LocalNats, role: Role) -> Auth {
    Auth::UserPassword {
        user: role.user(),
        password: nats.password(role).to_string(),
    }
}

fn print_welcome(url: &str, model: &str) {
    println!("cauce is up: the chat page is at {url}/");
    println!(
        "try: curl -N {url}/v1/chat/completions -H 'Content-Type: application/json' \
         -d '{{\"model\":\"{model}\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"What is cauce?\"}}]}}'"
    );
}

/// What every child of this launcher runs with.
struct Children {
    program: PathBuf,
    /// The flags `cauce up` was given, as variables, and what it resolved.
    env: Vec<(OsString, OsString)>,
    /// Each role's password when `cauce up` started the server.
    logins: Option<Vec<(Role, String)>>,
}

impl Children {
    fn new(
        args: &UpArgs,
        matches: &ArgMatches,
        home: &Path,
        model: &Path,
        local_nats: Option<&LocalNats>,
    ) -> anyhow::Result<Self> {
        // this very binary, even after a newer one was installed over its path
        let program = PathBuf::from("/proc/self/exe");
        let command = UpArgs::augment_args(clap::Command::new("up"));
        let mut env = flags::given_as_env(&command, matches);
        // the inference worker's own file first, for counting prompts exactly
        let mut models_dirs = model
            .parent()
            .map(Path::as_os_str)
            .unwrap_or_default()
            .to_os_string();
        models_dirs.push(",");
        models_dirs.push(home.join("models"));
        env.extend([
            ("CAUCE_HOME".into(), home.into()),
            ("CAUCE_MODEL".into(), model.into()),
            ("CAUCE_MODELS_DIR".into(), models_dirs),
            ("NATS_URL".into(), args.nats.nats_url.clone().into()),
        ]);
        Ok(Self {
            program,
            env,
            logins: local_nats.map(|nats| nats.logins.clone()),
        })
    }

    /// `cauce <args>` as `name`, logged in as `role`.
    fn spec(&self, name: &'static str, args: &[&str], role: Role) -> ChildSpec {
        // each child gets the settings its command reads, and no other (the API keys
        // reach the gateway alone)
        let reads = flags::variables_of(&flags::command_of(name));
        let mut env: Vec<_> = (self.env.iter())
            .filter(|(name, _)| reads.contains(name) || name == "CAUCE_HOME")
            .cloned()
            .collect();
        let mut env_remove = Vec::new();
        if let Some(logins) = &self.logins {
            let password = logins
                .iter()
                .find(|(r, _)| *r == role)
                .map(|(_, p)| p.clone());
            env.push(("NATS_USER".into(), role.user().into()));
            env.push(("NATS_PASSWORD".into(), password.unwrap_or_default().into()));
            env_remove.extend(["NATS_TOKEN".into(), "NATS_CREDS".into()]);
        }
        ChildSpec {
            name,
            program: self.program.clone(),
            args: args.iter().map(OsString::from).collect(),
            env,
            env_remove,
            listener_fd: None,
        }
    }

    /// The gateway, serving on the launcher's socket and the corpus under `/docs/`.
    fn gateway(&self, listener_fd: i32, docs_dir: &Path) -> ChildSpec {
        let mut spec = self.spec("gateway", &["gateway"], Role::Gateway);
        spec.env
            .push(("CAUCE_LISTEN_FD".into(), listener_fd.to_string().into()));
        spec.env
            .push(("CAUCE_GATEWAY_DOCS_DIR".into(), docs_dir.into()));
        spec.listener_fd = Some(listener_fd);
        spec
    }
}

/// The folder of the corpus: `--docs`, else the copy in the binary. Whatever `./docs`
/// the working directory holds is not taken unasked: the gateway serves the folder.
fn docs_folder(home: &Path, docs: Option<&Path>) -> anyhow::Result<PathBuf> {
    let folder = match docs {
        Some(folder) => folder.to_path_buf(),
        None => write_bundled_docs(home)?,
    };
    // children start elsewhere in time, not in space, but an absolute path reads better
    Ok(std::path::absolute(&folder).unwrap_or(folder))
}

/// Ingests the corpus in `folder` when `DOCS` holds nothing yet, in a `cauce ingest`
/// child: the launcher itself parses no document.
async fn ingest_bundled_docs(
    js: &jetstream::Context,
    folder: &Path,
    children: &Children,
    spawner: &Spawner,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let mut stream = js
        .get_stream(names::DOCS)
        .await
        .context("looking up DOCS")?;
    if stream.info().await.context("reading DOCS")?.state.messages > 0 {
        return Ok(());
    }
    info!(folder = %folder.display(), "DOCS is empty: ingesting the bundled corpus");
    let mut spec = children.spec("ingest", &["ingest"], Role::Ingest);
    spec.args.extend(["--id-prefix".into(), "guide".into()]);
    spec.args.extend(["--location-base".into(), "docs/".into()]);
    spec.args.push(folder.into());
    let status = tokio::select! {
        status = children::run_once(spec, spawner) => status?,
        _ = cancel.cancelled() => anyhow::bail!("stopped while ingesting the bundled corpus"),
    };
    if !status.success() {
        anyhow::bail!(
            "ingesting the bundled corpus failed: `cauce ingest` {}",
            children::describe(status)
        );
    }
    info!("bundled corpus ingested");
    Ok(())
}

/// Writes the corpus bundled in the binary to `home/docs`.
pub(crate) fn write_bundled_docs(home: &Path) -> anyhow::Result<PathBuf> {
    let folder = home.join("docs");
    std::fs::create_dir_all(&folder)?;
    for (name, text) in BUNDLED_DOCS {
        std::fs::write(folder.join(name), text)?;
    }
    Ok(folder)
}
