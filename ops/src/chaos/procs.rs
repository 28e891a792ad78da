//! The real processes a chaos run starts, kills and restarts: a `nats-server` with a
//! file store, and `cauce` components (this very binary) as children.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use cauce_nats::server;
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

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGSTOP: the process hangs, holding whatever it pulled.
    pub fn freeze(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGSTOP);
        }
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

/// Lines of the logs of components whose name starts with `prefix` (every start of
/// each appends to one file) that contain `needle`.
pub fn count_in_logs(dir: &Path, prefix: &str, needle: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|log| log.lines().filter(|l| l.contains(needle)).count())
        .sum()
}

impl Drop for Component {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The run's NATS: one nats-server, or a 3-node cluster from the configs in
/// `ops/nats/` (ports moved to free ones); each node keeps its port and store across
/// restarts.
pub struct Nats {
    nodes: Vec<NatsNode>,
    pub restarts: u32,
    pub nodes_killed: u32,
}

struct NatsNode {
    binary: PathBuf,
    config_file: PathBuf,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
}

const CLUSTER_CONFIGS: [&str; 3] = [
    include_str!("../../nats/cluster-a.conf"),
    include_str!("../../nats/cluster-b.conf"),
    include_str!("../../nats/cluster-c.conf"),
];

impl NatsNode {
    fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(&self.log)?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        for _ in 0..300 {
            if server::answers("127.0.0.1", self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        anyhow::bail!(
            "nats-server on port {} did not answer; see {}",
            self.port,
            self.log.display()
        )
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Nats {
    /// One server with its store in `dir`.
    pub fn single(dir: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let store = serde_json::to_string(&dir.join("nats").display().to_string())?;
        let config = format!(
            "listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: {store}\n  sync_interval: always\n}}\n"
        );
        Self::start(dir, vec![(port, config)])
    }

    /// The three nodes of `ops/nats/cluster-*.conf`, their ports replaced by free ones.
    pub fn cluster(dir: &Path) -> anyhow::Result<Self> {
        let mut moved = Vec::new();
        for node in 0..3u16 {
            for example in [4222, 6222, 8222] {
                moved.push((format!("127.0.0.1:{}", example + node), free_port()?));
            }
        }
        let mut configs = Vec::new();
        for (node, template) in CLUSTER_CONFIGS.iter().enumerate() {
            // the chaos run's processes log in with no user: its servers leave the
            // shipped permissions out (their own test covers them)
            let mut config = template.replace("include permissions.conf", "");
            for (example, free) in &moved {
                config = config.replace(example, &format!("127.0.0.1:{free}"));
            }
            let store = dir.join(format!("nats-{node}"));
            let store = serde_json::to_string(&store.display().to_string())?;
            config = config.replacen(
                "jetstream {",
                &format!("jetstream {{\n  store_dir: {store}"),
                1,
            );
            configs.push((moved[node * 3].1, config));
        }
        Self::start(dir, configs)
    }

    fn start(dir: &Path, configs: Vec<(u16, String)>) -> anyhow::Result<Self> {
        let binary = server::find_binary()?;
        let mut nodes = Vec::new();
        for (i, (port, config)) in configs.into_iter().enumerate() {
            let config_file = dir.join(format!("nats-{i}.conf"));
            std::fs::write(&config_file, config)?;
            let log = dir.join(format!("nats-{i}.log"));
            let (binary, child) = (binary.clone(), None);
            nodes.push(NatsNode {
                binary,
                config_file,
                port,
                log,
                child,
            });
        }
        for node in &mut nodes {
            node.start()?;
        }
        Ok(Self {
            nodes,
            restarts: 0,
            nodes_killed: 0,
        })
    }

    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn is_cluster(&self) -> bool {
        self.nodes.len() > 1
    }

    /// SIGKILL of the first node (a crash: only what was fsynced survives), a pause,
    /// then the same node again on its port and store.
    pub fn crash_and_restart(&mut self, down_for: Duration) -> anyhow::Result<()> {
        self.nodes[0].kill();
        std::thread::sleep(down_for);
        self.nodes[0].start()?;
        self.restarts += 1;
        Ok(())
    }

    /// SIGKILL of one node of a cluster, for good: the other two keep a quorum.
    pub fn kill_a_node(&mut self) {
        if let Some(node) = self.nodes.last_mut() {
            node.kill();
            self.nodes_killed += 1;
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
