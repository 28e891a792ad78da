//! Running a local `nats-server -js` as a child process: for `cauce up` when no NATS
//! answers, and for tests (see the `testkit` feature).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Why a local server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "nats-server not found: NATS_SERVER_BIN is not set and no nats-server is on PATH; \
         run ./ops/setup to install it"
    )]
    NotInstalled,
    #[error("cannot start {binary}: {source}; run ./ops/setup to install nats-server", binary = binary.display())]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "nats-server on port {port} did not become ready with JetStream: {reason}\n--- server log ---\n{log}"
    )]
    NotReady {
        port: u16,
        reason: String,
        log: String,
    },
    #[error("local nats-server: {0}")]
    Io(#[from] std::io::Error),
}

/// Where a local server listens and keeps its data.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub binary: PathBuf,
    pub host: String,
    pub port: u16,
    /// JetStream store directory.
    pub store_dir: PathBuf,
    pub log_file: PathBuf,
    /// Fsync every JetStream write before acking it (`sync_interval: always`); `false`
    /// keeps nats-server's default (every 2 minutes), for measuring what it costs.
    pub sync_always: bool,
    /// More of the server's configuration, appended as given (an `authorization` block).
    pub extra: String,
    /// JetStream's file store limit in bytes; `None` leaves nats-server's own (75% of the
    /// disk space free when it starts), which makes whether cauce's streams fit depend on
    /// the disk at that moment.
    pub max_file_store: Option<u64>,
}

/// `$NATS_SERVER_BIN`, else `nats-server` on `PATH`.
pub fn find_binary() -> Result<PathBuf, ServerError> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN").filter(|b| !b.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH").ok_or(ServerError::NotInstalled)?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .ok_or(ServerError::NotInstalled)
}

/// Starts the server and waits until it greets clients with JetStream enabled.
pub fn spawn(config: &ServerConfig, ready_timeout: Duration) -> Result<Child, ServerError> {
    spawn_prepared(config, ready_timeout, |_| {})
}

/// [`spawn`], with `prepare` setting more of the command first (a parent-death signal,
/// a process group).
pub fn spawn_prepared(
    config: &ServerConfig,
    ready_timeout: Duration,
    prepare: impl FnOnce(&mut Command),
) -> Result<Child, ServerError> {
    std::fs::create_dir_all(&config.store_dir)?;
    let config_file = write_config_file(config)?;
    let mut command = Command::new(&config.binary);
    prepare(&mut command);
    let mut child = command
        .arg("-c")
        .arg(&config_file)
        .args(["-js", "-a", &config.host, "-p", &config.port.to_string()])
        .arg("-l")
        .arg(&config.log_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| ServerError::Spawn {
            binary: config.binary.clone(),
            source,
        })?;
    match wait_ready(&config.host, config.port, &mut child, ready_timeout) {
        Ok(()) => Ok(child),
        Err(reason) => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&config.log_file).unwrap_or_default();
            Err(ServerError::NotReady {
                port: config.port,
                reason,
                log,
            })
        }
    }
}

/// The server's config file, beside its store: the store directory and what the
/// command line cannot say.
/// `sync_interval: always` fsyncs every JetStream write before it is acknowledged; with
/// the default (every 2 minutes) a machine crash can lose writes already acked to a
/// client (Jepsen's NATS 2.12.1 analysis, December 2025).
fn write_config_file(config: &ServerConfig) -> std::io::Result<PathBuf> {
    let store = config.store_dir.display().to_string();
    let quoted = serde_json::to_string(&store).map_err(std::io::Error::other)?;
    let sync = if config.sync_always {
        "  sync_interval: always\n"
    } else {
        ""
    };
    let store_limit = config
        .max_file_store
        .map(|bytes| format!("  max_file_store: {bytes}\n"))
        .unwrap_or_default();
    let text = format!(
        "# written by cauce for a locally started nats-server\n\
         jetstream {{\n  store_dir: {quoted}\n{sync}{store_limit}}}\n{extra}",
        extra = config.extra
    );
    let path = config.store_dir.with_extension("conf");
    // it may hold the users' passwords: only this user reads it
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    Ok(path)
}

/// Stops a server gracefully: SIGTERM, then SIGKILL when it has not exited in time.
pub fn stop(child: &mut Child, timeout: Duration) {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether something at `host:port` greets like a NATS server.
pub fn answers(host: &str, port: u16) -> bool {
    read_info(host, port).is_ok_and(|info| info.starts_with("INFO"))
}

fn wait_ready(host: &str, port: u16, child: &mut Child, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut reason = String::from("no answer");
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the server exited with {status}"));
        }
        match read_info(host, port) {
            Ok(info) if info.contains("\"jetstream\":true") => return Ok(()),
            Ok(_) => reason = "INFO does not announce JetStream".into(),
            Err(err) => reason = err.to_string(),
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(format!("timed out after {timeout:?}: {reason}"))
}

/// Reads the `INFO {...}` line a NATS server greets every client with.
fn read_info(host: &str, port: u16) -> std::io::Result<String> {
    use std::net::ToSocketAddrs;
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{host} does not resolve")))?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(300))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line)
}

/// The log file of a server whose store is `store_dir`, beside it.
pub fn log_file_for(store_dir: &Path) -> PathBuf {
    store_dir.join("nats-server.log")
}
