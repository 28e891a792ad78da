//! The real processes a chaos run starts, kills and restarts: a `nats-server` with a
//! file store, and `cauce` components (this very binary) as children.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use cauce_nats::server::{self, ServerConfig};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A `cauce` component: how to start it, and the child while it runs.
pub struct Component {
    pub name: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    pub kills: u32,
}

impl Component {
    pub fn new(name: &str, args: Vec<String>, logs: &Path) -> Self {
        Self {
            name: name.into(),
            args,
            log: logs.join(format!("{name}.log")),
            child: None,
            kills: 0,
        }
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(std::env::current_exe()?)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, as a crash would, then wait for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.kills += 1;
        }
    }

    /// SIGINT and a grace period, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
        for _ in 0..100 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The run's nats-server: one port and one store, across restarts.
pub struct Nats {
    config: ServerConfig,
    child: Option<Child>,
    pub restarts: u32,
}

impl Nats {
    pub fn start(dir: &Path, port: u16) -> anyhow::Result<Self> {
        let store_dir = dir.join("nats");
        let config = ServerConfig {
            binary: server::find_binary()?,
            host: "127.0.0.1".into(),
            port,
            log_file: server::log_file_for(&store_dir),
            store_dir,
        };
        let child = server::spawn(&config, Duration::from_secs(20))?;
        Ok(Self {
            config,
            child: Some(child),
            restarts: 0,
        })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.config.port)
    }

    /// SIGKILL (a crash: only what was fsynced survives), a pause, then the same
    /// server again on the same port and store.
    pub fn crash_and_restart(&mut self, down_for: Duration) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        std::thread::sleep(down_for);
        self.child = Some(server::spawn(&self.config, Duration::from_secs(30))?);
        self.restarts += 1;
        Ok(())
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            server::stop(&mut child, Duration::from_secs(5));
        }
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
