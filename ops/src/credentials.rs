//! The NATS logins `cauce up` generates for the server it starts: one random password
//! per role ([`Role`]), kept in `<home>/nats-auth/<role>` (folder 0700, files 0600).
//!
//! `cauce up` writes them on first start and reuses them after; the server's
//! configuration holds them, each child gets its role's login in its environment, and
//! the operator commands (`status`, `replay`, `nats`, `cache`, `ingest`) read theirs
//! from here when no credentials are given and the server is on this machine, so the
//! one-command install needs no flag and still refuses a client without a login.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use cauce_nats::permissions::Role;

/// Bytes of randomness in a password (hex-encoded: 64 characters).
const PASSWORD_BYTES: usize = 32;

/// The folder of the generated logins in `home`.
pub fn dir(home: &Path) -> PathBuf {
    home.join("nats-auth")
}

/// The password of `role` stored in `home`, if `cauce up` generated one there.
pub fn stored(home: &Path, role: Role) -> anyhow::Result<Option<String>> {
    let path = dir(home).join(role.as_str());
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_string()).filter(|p| !p.is_empty())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// Every role's password in `home`, generating the ones missing.
pub fn ensure(home: &Path) -> anyhow::Result<Vec<(Role, String)>> {
    let folder = dir(home);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&folder)
        .with_context(|| format!("creating {}", folder.display()))?;
    // a folder made by an older version, or by hand, is closed too
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700))?;
    Role::ALL
        .into_iter()
        .map(|role| {
            let password = match stored(home, role)? {
                Some(password) => password,
                None => write_new(&folder.join(role.as_str()))?,
            };
            Ok((role, password))
        })
        .collect()
}

/// Writes a new password to `path` whole or not at all: to a file beside it, renamed
/// over it once written, so a crash never leaves an empty one behind.
fn write_new(path: &Path) -> anyhow::Result<String> {
    let password = random_hex()?;
    let partial = path.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    file.write_all(password.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(password)
}

fn random_hex() -> anyhow::Result<String> {
    let mut bytes = [0u8; PASSWORD_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The nats-server configuration that requires these logins: each password as a
/// variable, then the generated permissions of every role.
pub fn server_config(passwords: &[(Role, String)]) -> String {
    let mut text: String = passwords
        .iter()
        .map(|(role, password)| format!("{}: \"{password}\"\n", role.password_variable()))
        .collect();
    text.push_str(&cauce_nats::permissions::server_config());
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_are_generated_once_and_only_the_owner_reads_them() {
        let home = tempfile::tempdir().unwrap();
        let first = ensure(home.path()).unwrap();
        assert_eq!(first.len(), Role::ALL.len());
        assert!(first.iter().all(|(_, p)| p.len() == 2 * PASSWORD_BYTES));
        assert_ne!(first[0].1, first[1].1);
        assert_eq!(ensure(home.path()).unwrap(), first, "reused, not rotated");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir(home.path())), 0o700);
        assert_eq!(mode(&dir(home.path()).join("gateway")), 0o600);
        assert_eq!(
            stored(home.path(), Role::Operator).unwrap().as_deref(),
            Some(first[4].1.as_str())
        );
        let config = server_config(&first);
        assert!(config.contains(&format!("CAUCE_NATS_GATEWAY_PASSWORD: \"{}\"", first[0].1)));
        assert!(config.contains("authorization {"));
    }
}
