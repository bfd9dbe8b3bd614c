//! The checks `kmsgate serve` makes before it reaches the token, in one
//! place, so that `kmsgate doctor` runs the same functions rather than
//! copies: the transport (TLS, or plain HTTP only where serve allows it)
//! for the address serve would listen on, and the permissions of the files
//! that decide who may do what.
//!
//! The config, the PIN and secret files, identity policy files and the TLS
//! files are refused by serve when a user other than their owner can
//! change them (group- or world-writable): whoever can write one of them
//! decides, at the next start, which module is loaded, which policies
//! apply or which certificate the gateway presents. AWS has no such files;
//! this is sshd's `StrictModes` rule. Secrets that others can read (the
//! PIN, a credential's secret, the TLS private key) and an audit directory
//! others can write to are logged by serve and failed by the doctor: the
//! secret is exposed already, and refusing to start would not undo that.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::http::tls::Tls;
use crate::server::{self, StartError};

/// Where serve listens and how.
pub struct Transport {
    pub addr: SocketAddr,
    /// None: plain HTTP.
    pub tls: Option<Arc<Tls>>,
}

/// The address serve listens on (`--listen`, else the config's `listen`),
/// refused for plain HTTP off loopback unless the config opts in, and the
/// listener's TLS with its files loaded.
pub fn transport(config: &Config, listen: Option<SocketAddr>) -> Result<Transport, StartError> {
    let addr = listen.unwrap_or(config.listen);
    config.check_transport(addr)?;
    let tls = server::tls(config)?;
    Ok(Transport { addr, tls })
}

/// What a file is to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Config,
    Pin,
    Secret,
    Policy,
    TlsChain,
    TlsKey,
    ClientCa,
    /// The directory of `[audit] path`: whoever can write it can remove or
    /// replace audit files.
    AuditDir,
}

impl Role {
    /// The doctor's name for the check of such a file.
    pub fn check(self) -> &'static str {
        match self {
            Role::Config => "config permissions",
            Role::Pin => "PIN file permissions",
            Role::Secret => "secret file permissions",
            Role::Policy => "policy file permissions",
            Role::TlsChain => "TLS chain permissions",
            Role::TlsKey => "TLS key permissions",
            Role::ClientCa => "client CA permissions",
            Role::AuditDir => "audit dir permissions",
        }
    }

    /// Others must not read it either.
    fn secret(self) -> bool {
        matches!(self, Role::Pin | Role::Secret | Role::TlsKey)
    }

    /// serve refuses to start when others can change it.
    fn refused_by_serve(self) -> bool {
        self != Role::AuditDir
    }
}

/// What is wrong with a file's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Group- or world-writable.
    Writable,
    /// A secret that the group or others can read.
    Readable,
}

/// A file whose permissions matter, as found.
pub struct FileMode {
    pub role: Role,
    pub path: PathBuf,
    /// The permission bits, or why they could not be read.
    pub mode: std::io::Result<u32>,
}

impl FileMode {
    /// What is wrong with the mode, if anything.
    pub fn exposure(&self) -> Option<Exposure> {
        let mode = *self.mode.as_ref().ok()?;
        if mode & 0o022 != 0 {
            Some(Exposure::Writable)
        } else if self.role.secret() && mode & 0o077 != 0 {
            Some(Exposure::Readable)
        } else {
            None
        }
    }

    /// The command that fixes an exposure.
    pub fn fix(&self) -> String {
        let how = if self.role.secret() {
            "chmod 600"
        } else {
            "chmod go-w"
        };
        format!("{how} {}", self.path.display())
    }
}

/// Every file (and the audit directory) of `config` whose permissions
/// matter, with its mode (symbolic links followed, as the files are read).
pub fn file_modes(config: &Config) -> Vec<FileMode> {
    let mut files: Vec<(Role, PathBuf)> = Vec::new();
    if !config.path.as_os_str().is_empty() {
        files.push((Role::Config, config.path.clone()));
    }
    if let Some(f) = &config.hsm.pin_file {
        files.push((Role::Pin, f.clone()));
    }
    for c in &config.auth.credentials {
        if let Some(f) = &c.secret_file {
            files.push((Role::Secret, f.clone()));
        }
    }
    for p in &config.auth.principals {
        files.extend(p.policy_files.iter().map(|f| (Role::Policy, f.clone())));
    }
    if let Some(t) = &config.tls {
        files.push((Role::TlsChain, t.cert_chain_file.clone()));
        files.push((Role::TlsKey, t.private_key_file.clone()));
        if let Some(ca) = &t.client_ca_file {
            files.push((Role::ClientCa, ca.clone()));
        }
    }
    if let Some(path) = &config.audit.path {
        files.push((Role::AuditDir, audit_dir(path)));
    }
    files
        .into_iter()
        .map(|(role, path)| FileMode {
            role,
            mode: std::fs::metadata(&path).map(|m| m.mode() & 0o7777),
            path,
        })
        .collect()
}

fn audit_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// serve's rule: refuses a file of [`file_modes`] that users other than its
/// owner can change (not the audit directory); logs a secret others can
/// read. A file that cannot be read is left to the code that reads it.
pub fn refuse_exposed(config: &Config) -> Result<(), StartError> {
    let mut refused = Vec::new();
    for f in file_modes(config) {
        let Ok(mode) = f.mode else { continue };
        match f.exposure() {
            Some(Exposure::Writable) if f.role.refused_by_serve() => refused.push(format!(
                "{} is mode {mode:04o}: users other than its owner can change it (fix: {})",
                f.path.display(),
                f.fix()
            )),
            Some(exposure) => tracing::warn!(
                path = %f.path.display(),
                mode = format!("{mode:04o}"),
                fix = %f.fix(),
                "{}",
                if exposure == Exposure::Readable {
                    "a secret file is readable by other users"
                } else {
                    "the audit directory is writable by other users"
                }
            ),
            None => {}
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!("refusing to start: {}", refused.join("; ")).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(role: Role, mode: u32) -> Option<Exposure> {
        FileMode {
            role,
            path: PathBuf::from("/x"),
            mode: Ok(mode),
        }
        .exposure()
    }

    #[test]
    fn writable_by_others_is_exposed_and_secrets_must_not_be_readable() {
        for role in [Role::Config, Role::Policy, Role::TlsChain, Role::TlsKey] {
            assert_eq!(mode(role, 0o666), Some(Exposure::Writable), "{role:?}");
            assert_eq!(mode(role, 0o620), Some(Exposure::Writable), "{role:?}");
        }
        assert_eq!(mode(Role::Policy, 0o644), None);
        assert_eq!(mode(Role::TlsKey, 0o644), Some(Exposure::Readable));
        assert_eq!(mode(Role::Pin, 0o640), Some(Exposure::Readable));
        assert_eq!(mode(Role::Pin, 0o600), None);
        assert_eq!(mode(Role::AuditDir, 0o1777), Some(Exposure::Writable));
        assert_eq!(mode(Role::AuditDir, 0o755), None);
    }
}
