//! The child processes of `cauce up`: started from one thread that lives as long as
//! the launcher, tied to it by a parent-death signal, watched, and restarted with
//! backoff when they die.
//!
//! Linux sends a child's parent-death signal when the *thread* that forked it exits,
//! not the process; tokio retires its blocking threads when idle, so every child is
//! forked by [`Spawner`]'s own thread, which never exits. A child also gets a process
//! group of its own: Ctrl-C in a terminal reaches `cauce up` alone, which then stops
//! the children in order.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// A child that ran this long before dying is restarted at once, and its backoff reset.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// First and largest delay before a restart.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A child whose very first run ends with an error status sooner than this has a
/// setting wrong (a model file missing, a port taken): `cauce up` stops with it rather
/// than restart it for ever.
const STARTUP_WINDOW: Duration = Duration::from_secs(20);

type Job = Box<dyn FnOnce() + Send>;

/// Runs closures (spawning children) on one thread that lives until the process exits.
#[derive(Clone)]
pub struct Spawner {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Spawner {
    pub fn start() -> anyhow::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("cauce-spawner".into())
            .spawn(move || {
                for job in queue {
                    job();
                }
                // never exit: the children's parent-death signal is tied to this thread
                loop {
                    std::thread::park();
                }
            })
            .context("starting the spawner thread")?;
        Ok(Self { jobs })
    }

    /// Runs `work` on the spawner thread and returns what it returned.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done_tx.send(work());
        });
        self.jobs
            .send(job)
            .expect("the spawner thread runs until the process exits");
        done_rx.await.expect("the spawner thread runs every job")
    }
}

/// Makes the process `command` starts receive `signal` when the thread that spawns it
/// exits (with `cauce up`, even by SIGKILL), in a process group of its own.
pub fn tie_to_launcher(command: &mut Command, signal: Signal) {
    let launcher = nix::unistd::getpid();
    command.process_group(0);
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe system calls prctl and getppid; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(signal)?;
            // the launcher died between fork and prctl: its signal is never coming
            // (no allocation here: an error from the OS's numbers)
            if nix::unistd::getppid() != launcher {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Lets the process `command` starts inherit the listening socket `fd`.
pub fn pass_listener(command: &mut Command, fd: RawFd) {
    #[allow(unsafe_code)]
    // SAFETY: fcntl is async-signal-safe; it clears close-on-exec in the child only.
    unsafe {
        command.pre_exec(move || {
            let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )?;
            Ok(())
        });
    }
}

/// One component's process: what runs, and with what.
#[derive(Clone, Debug)]
pub struct ChildSpec {
    /// `gateway`, `retrieval`, `inference`, `ingest`.
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Set over the launcher's own environment.
    pub env: Vec<(OsString, OsString)>,
    pub env_remove: Vec<OsString>,
    /// A listening socket the child inherits (the gateway's port).
    pub listener_fd: Option<RawFd>,
}

impl ChildSpec {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.arg0("cauce").args(&self.args).stdin(Stdio::null());
        for name in &self.env_remove {
            command.env_remove(name);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        tie_to_launcher(&mut command, Signal::SIGKILL);
        if let Some(fd) = self.listener_fd {
            pass_listener(&mut command, fd);
        }
        command
    }
}

/// What `cauce status` shows of a child.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChildState {
    pub name: &'static str,
    /// `None` while it is not running (between a death and its restart).
    pub pid: Option<u32>,
    pub restarts: u32,
    /// How its last run ended: `killed by SIGKILL`, `exited with status 1`.
    pub last_exit: Option<String>,
    /// When its current run started (ms since the epoch).
    pub started_at_ms: Option<u64>,
}

/// A supervised child: stop it, and read its state.
pub struct Supervised {
    pub name: &'static str,
    pub state: watch::Receiver<ChildState>,
    /// Asks the supervisor to stop the child, giving it this long to exit.
    stop_tx: oneshot::Sender<Duration>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Supervised {
    /// Starts `spec` and keeps it running until [`Supervised::stop`]. A first run that
    /// fails at once cancels `fatal`.
    pub fn start(spec: ChildSpec, spawner: Spawner, fatal: CancellationToken) -> Self {
        let (state_tx, state) = watch::channel(ChildState {
            name: spec.name,
            ..ChildState::default()
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let name = spec.name;
        let task = tokio::spawn(supervise(spec, spawner, state_tx, stop_rx, fatal));
        Self {
            name,
            state,
            stop_tx,
            task,
        }
    }

    /// Sends SIGTERM, waits up to `grace` for the child to drain and exit, then kills
    /// it. Logs what went wrong rather than returning it, so that every child stops.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop_tx.send(grace);
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!(child = self.name, error = %err, "child supervisor"),
            Err(err) => warn!(child = self.name, error = %err, "child supervisor task"),
        }
    }
}

/// How a child's run ended, or that the launcher asked it to stop.
enum Next {
    Exited(std::io::Result<ExitStatus>),
    Stop(Duration),
}

async fn supervise(
    spec: ChildSpec,
    spawner: Spawner,
    state_tx: watch::Sender<ChildState>,
    mut stop_rx: oneshot::Receiver<Duration>,
    fatal: CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = FIRST_BACKOFF;
    let mut first_run = true;
    loop {
        let (how, ran) = match spawn(&spawner, &spec).await {
            Ok(mut child) => {
                let pid = child.id().unwrap_or_default();
                let started = Instant::now();
                state_tx.send_modify(|state| {
                    state.pid = Some(pid);
                    state.started_at_ms = Some(cauce_nats::wire::now_ms());
                });
                info!(child = spec.name, pid, "child started");
                let status = match tokio::select! {
                    status = child.wait() => Next::Exited(status),
                    grace = &mut stop_rx => Next::Stop(grace.unwrap_or_default()),
                } {
                    Next::Exited(status) => status?,
                    Next::Stop(grace) => return terminate(spec.name, &mut child, grace).await,
                };
                let ran = started.elapsed();
                let fails_at_start = status.code().is_some_and(|code| code != 0);
                if first_run && fails_at_start && ran < STARTUP_WINDOW {
                    let how = describe(status);
                    state_tx.send_modify(|state| state.last_exit = Some(how.clone()));
                    error!(child = spec.name, exit = %how, "child failed at start: see its error above");
                    fatal.cancel();
                    anyhow::bail!("the {} child {how} at start", spec.name);
                }
                (describe(status), ran)
            }
            Err(err) => (format!("could not start: {err}"), Duration::ZERO),
        };
        first_run = false;
        state_tx.send_modify(|state| {
            state.pid = None;
            state.last_exit = Some(how.clone());
        });
        if ran >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        warn!(
            child = spec.name,
            exit = %how,
            ran_ms = ran.as_millis() as u64,
            restart_in_ms = backoff.as_millis() as u64,
            "child died, restarting"
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = &mut stop_rx => return Ok(()),
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        state_tx.send_modify(|state| state.restarts += 1);
    }
}

/// Starts `spec` from the spawner's thread, as a child tokio watches: tokio reaps it
/// only when its exit is awaited, so a signal sent by pid before that never reaches
/// another process that took the pid.
async fn spawn(spawner: &Spawner, spec: &ChildSpec) -> std::io::Result<tokio::process::Child> {
    let command = spec.command();
    let runtime = tokio::runtime::Handle::current();
    spawner
        .run(move || {
            let _entered = runtime.enter();
            tokio::process::Command::from(command).spawn()
        })
        .await
}

/// Runs `spec` once, tied to the launcher like the others, and waits for its exit.
pub async fn run_once(spec: ChildSpec, spawner: &Spawner) -> anyhow::Result<ExitStatus> {
    let mut child = spawn(spawner, &spec)
        .await
        .with_context(|| format!("starting {}", spec.program.display()))?;
    Ok(child.wait().await?)
}

/// SIGTERM, then up to `grace` for the child's own drain, then SIGKILL.
async fn terminate(
    name: &'static str,
    child: &mut tokio::process::Child,
    grace: Duration,
) -> anyhow::Result<()> {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status?,
        Err(_) => {
            warn!(
                child = name,
                grace_ms = grace.as_millis() as u64,
                "child did not stop in time, killing it"
            );
            let _ = child.start_kill();
            child.wait().await?
        }
    };
    info!(child = name, exit = %describe(status), "child stopped");
    Ok(())
}

/// `exited with status 1`, `killed by SIGKILL`, `killed by SIGABRT (core dumped)`.
pub fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    let Some(number) = status.signal() else {
        return status.to_string();
    };
    let name = Signal::try_from(number)
        .map_or_else(|_| format!("signal {number}"), |s| s.as_str().to_string());
    let core = if status.core_dumped() {
        " (core dumped)"
    } else {
        ""
    };
    format!("killed by {name}{core}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_described_by_status_or_signal() {
        assert_eq!(
            describe(ExitStatus::from_raw(1 << 8)),
            "exited with status 1"
        );
        assert_eq!(describe(ExitStatus::from_raw(9)), "killed by SIGKILL");
        assert_eq!(
            describe(ExitStatus::from_raw(6 | 0x80)),
            "killed by SIGABRT (core dumped)"
        );
    }
}
