//! `kmsgate serve --workers N` (DESIGN.md decision 15): N gateway
//! processes on one token under a supervisor that serves nothing.
//!
//! The token is kmsgate's only state, so workers are exactly several
//! gateways on one token: each has its own PKCS#11 context, login, session
//! pool, caches, scheduler and audit chain. SoftHSM2 (and many vendors'
//! client libraries) serialise inside one process, so processes scale
//! where threads do not.
//!
//! How a worker is wired to its supervisor:
//!
//! * the supervisor binds the listening socket once and every worker
//!   inherits it as its standard input (inetd's `wait` convention), so
//!   connections queued while a worker restarts wait in the shared queue
//!   for another worker instead of being reset with a worker's own socket;
//! * the worker's standard output is one end of a Unix socket pair, the
//!   control channel: the supervisor writes the user PIN on it (one line,
//!   hex), the worker answers `ready` once it is logged in and its key
//!   store is loaded, and the supervisor keeps its end open. When the
//!   supervisor is gone the worker reads end-of-file and stops as on
//!   SIGTERM, so a killed supervisor leaves no worker behind. The PIN is
//!   never on a command line or in a worker's environment;
//! * stderr is inherited: workers log to the supervisor's log.
//!
//! * [`supervisor`] starts the workers one at a time (their logins
//!   staggered), restarts a dead one with backoff and forwards SIGTERM,
//!   SIGINT and SIGHUP;
//! * [`worker`] is the worker process.

mod metrics;
pub mod supervisor;
pub mod worker;

use std::path::PathBuf;

use crate::audit::AuditConfig;

/// The subcommand that makes the binary run as a worker (hidden).
pub const WORKER_ARG: &str = "__worker";

/// What a worker answers on its control channel once it serves.
const READY: &str = "ready";

/// The file in which the workers tell each other that the token refused
/// the PIN (`hsm::link::PinGate`), next to their change counters file
/// `changes`; its lock file is this with `.lock` appended. The supervisor
/// removes both when it ends, and the marker on SIGHUP.
pub fn pin_marker(changes: &std::path::Path) -> PathBuf {
    changes.with_extension("pin-refused")
}

/// The files the workers of one supervisor share: the change counters
/// file `changes`, the PIN marker and its lock file (removed when the
/// supervisor ends, or by its workers when it was killed).
fn shared_files(changes: &std::path::Path) -> [PathBuf; 3] {
    let marker = pin_marker(changes);
    let mut lock = marker.clone().into_os_string();
    lock.push(".lock");
    [changes.to_owned(), marker, lock.into()]
}

/// Worker `index`'s audit table: its own chain in its own file, the
/// configured path with `.w{index}` appended (`audit.jsonl.w1`, ...), so
/// each file verifies on its own. With no path configured every worker's
/// chain goes to the shared process log, told apart by its chain id, its
/// first line declaring the worker (`audit verify` follows the chains side
/// by side).
pub fn audit_config(audit: &AuditConfig, index: usize) -> AuditConfig {
    let mut own = audit.clone();
    own.worker = Some(index);
    if let Some(path) = &audit.path {
        let mut name = path.clone().into_os_string();
        name.push(format!(".w{index}"));
        own.path = Some(PathBuf::from(name));
    }
    own
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_audits_to_its_own_file() {
        let audit = AuditConfig {
            path: Some("/var/log/kmsgate/audit.jsonl".into()),
            ..AuditConfig::default()
        };
        assert_eq!(
            audit_config(&audit, 2).path,
            Some(PathBuf::from("/var/log/kmsgate/audit.jsonl.w2"))
        );
        assert_eq!(audit_config(&AuditConfig::default(), 1).path, None);
        assert_eq!(audit_config(&AuditConfig::default(), 1).worker, Some(1));
    }
}
