//! A real `nats-server -js` for tests: a free port on 127.0.0.1, a temporary store
//! directory, killed when dropped. Built only with the `testkit` feature.
//!
//! The binary is `$NATS_SERVER_BIN`, else `nats-server` from `PATH`. When neither is
//! there, starting fails with a message that says to run `ops/setup`.

use std::net::TcpListener;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use crate::server::{self, ServerConfig, ServerError};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The JetStream file store limit of a test server. Tests write megabytes; a fixed
/// bound keeps the reservation of cauce's streams (several GiB of `max_bytes`) from
/// depending on the disk space free on the machine that runs them.
pub const TEST_MAX_FILE_STORE: u64 = 64 << 30;

/// A running `nats-server` with JetStream enabled.
pub struct NatsServer {
    config: ServerConfig,
    // dropped after the child is killed, which deletes the store
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free port with a fresh store directory and waits until it
    /// accepts clients with JetStream enabled.
    pub fn start() -> Result<Self, ServerError> {
        Self::start_syncing(true)
    }

    /// [`start`](Self::start), fsyncing every write (`true`, what cauce runs) or with
    /// nats-server's default interval (`false`), for benchmarks of the difference.
    pub fn start_syncing(sync_always: bool) -> Result<Self, ServerError> {
        Self::start_configured(sync_always, String::new(), TEST_MAX_FILE_STORE)
    }

    /// [`start`](Self::start) with a JetStream file store of `max_file_store` bytes.
    pub fn start_with_store_limit(max_file_store: u64) -> Result<Self, ServerError> {
        Self::start_configured(true, String::new(), max_file_store)
    }

    /// [`start`](Self::start) with more configuration appended to the server's file (an
    /// `authorization` block, and the variables it names).
    pub fn start_with_config(extra: &str) -> Result<Self, ServerError> {
        Self::start_configured(true, extra.to_string(), TEST_MAX_FILE_STORE)
    }

    fn start_configured(
        sync_always: bool,
        extra: String,
        max_file_store: u64,
    ) -> Result<Self, ServerError> {
        let binary = server::find_binary()?;
        let store = tempfile::Builder::new()
            .prefix("cauce-nats-test-")
            .tempdir()?;
        let config = ServerConfig {
            binary,
            host: "127.0.0.1".into(),
            port: TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(),
            store_dir: store.path().join("jetstream"),
            log_file: server::log_file_for(store.path()),
            sync_always,
            extra,
            max_file_store: Some(max_file_store),
        };
        let child = server::spawn(&config, READY_TIMEOUT)?;
        Ok(Self {
            config,
            store,
            child: Some(child),
        })
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.config.port)
    }

    pub fn port(&self) -> u16 {
        self.config.port
    }

    /// The directory holding the JetStream store and the server log, kept across
    /// [`restart`](Self::restart).
    pub fn dir(&self) -> &Path {
        self.store.path()
    }

    /// A plain client connected to this server, reconnecting for ever.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .max_reconnects(None)
            .connect(self.url())
            .await
            .expect("connect to the test nats-server")
    }

    /// Stops the server gracefully (SIGTERM, then SIGKILL after a timeout).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            server::stop(&mut child, STOP_TIMEOUT);
        }
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server and starts it again on the same port with the same store.
    pub fn restart(&mut self) -> Result<(), ServerError> {
        self.stop();
        self.child = Some(server::spawn(&self.config, READY_TIMEOUT)?);
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
