//! Finding NATS for `cauce up`: use the server at the URL when one answers, otherwise
//! start a `nats-server -js` child with its store in the cauce home directory. The
//! server it starts requires a login: one user per role, with the permissions
//! `cauce-nats` generates and the passwords of [`credentials`], and it dies with `cauce
//! up` (SIGTERM, from its parent-death signal) even when `cauce up` is SIGKILLed.

use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use cauce_nats::permissions::Role;
use cauce_nats::server::{self, ServerConfig};
use nix::sys::signal::Signal;
use tracing::info;

use crate::credentials;
use crate::up::children::{Spawner, tie_to_launcher};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// JetStream's file store limit of the server `cauce up` starts, as in
/// `ops/nats/single.conf`: room for the default bounds of every stream and bucket
/// (about 9.6 GiB), whatever the disk space free when it starts.
const MAX_FILE_STORE: u64 = 16 << 30;

/// The pid of the nats-server this process started, 0 when none: an exit at once (a
/// second Ctrl-C) skips destructors, and must still not leave the server behind.
static CHILD_PID: AtomicU32 = AtomicU32::new(0);

/// Kills the nats-server this process started, if any, without waiting.
pub fn kill_now() {
    let pid = CHILD_PID.swap(0, Ordering::SeqCst);
    if pid != 0 {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A `nats-server` this process started; stopped when dropped.
pub struct LocalNats {
    child: Child,
    port: u16,
    /// The password of each role's user.
    pub logins: Vec<(Role, String)>,
}

impl LocalNats {
    /// The password of `role`'s user.
    pub fn password(&self, role: Role) -> &str {
        self.logins
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, password)| password.as_str())
            .expect("a login for every role")
    }
}

impl LocalNats {
    /// Stops the server gracefully.
    pub fn stop(mut self) {
        CHILD_PID.store(0, Ordering::SeqCst);
        info!(port = self.port, "stopping local nats-server");
        server::stop(&mut self.child, STOP_TIMEOUT);
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            server::stop(&mut self.child, STOP_TIMEOUT);
        }
    }
}

/// Returns `None` when a NATS server already answers at the first URL; otherwise
/// starts one there (only for a loopback URL), from the spawner's thread, and returns it.
pub async fn find_or_start(
    nats_url: &str,
    home: &Path,
    spawner: &Spawner,
) -> anyhow::Result<Option<LocalNats>> {
    let (nats_url, home) = (nats_url.to_string(), home.to_path_buf());
    spawner
        .run(move || find_or_start_here(&nats_url, &home))
        .await
}

fn find_or_start_here(nats_url: &str, home: &Path) -> anyhow::Result<Option<LocalNats>> {
    let urls = cauce_nats::connect::split_urls(nats_url);
    let addrs = cauce_nats::connect::server_addrs(&urls)?;
    let first = &addrs[0];
    let (host, port) = (first.host().to_string(), first.port());
    if addrs
        .iter()
        .any(|addr| server::answers(addr.host(), addr.port()))
    {
        let url = cauce_nats::connect::redact_urls(nats_url);
        info!(url = %url, "using the nats-server that answers");
        return Ok(None);
    }
    if !matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1") {
        bail!(
            "no NATS server answers at {}; cauce starts one only on a loopback address",
            cauce_nats::connect::redact_urls(nats_url)
        );
    }
    let binary = server::find_binary()?;
    let store_dir = home.join("nats");
    let logins = credentials::ensure(home)?;
    let config = ServerConfig {
        sync_always: true,
        extra: credentials::server_config(&logins),
        max_file_store: Some(MAX_FILE_STORE),
        binary,
        host: if host == "localhost" {
            "127.0.0.1".into()
        } else {
            host
        },
        port,
        log_file: server::log_file_for(&store_dir),
        store_dir,
    };
    info!(
        port,
        store = %config.store_dir.display(),
        binary = %config.binary.display(),
        "no nats-server answers, starting one that requires a login"
    );
    let child = server::spawn_prepared(&config, READY_TIMEOUT, |command| {
        tie_to_launcher(command, Signal::SIGTERM)
    })
    .with_context(|| format!("starting nats-server on port {port}"))?;
    CHILD_PID.store(child.id(), Ordering::SeqCst);
    Ok(Some(LocalNats {
        child,
        port,
        logins,
    }))
}
