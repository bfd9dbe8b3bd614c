//! The audit trail (DESIGN.md decision 16): one JSON line per request, in
//! CloudTrail's field names, each line carrying the SHA-256 of the line
//! before it, so that a changed, removed or reordered line is found by
//! `kmsgate audit verify`.
//!
//! * [`record`] builds a request's record from what the HTTP layer knows
//!   (never a plaintext, a secret or an encryption-context value unless
//!   the config asks for context values);
//! * [`chain`] links the records: the chain fields and the genesis value;
//! * [`writer`] writes them: to a file of their own, rotated by size and
//!   group-committed (one write and one fdatasync for every record that
//!   arrived meanwhile), or, with no file configured, to the process log;
//! * [`verify`] checks a chain across files.
//!
//! The module depends on nothing else in kmsgate: the HTTP layer hands it
//! plain values.

pub mod chain;
mod file;
pub mod record;
pub mod verify;
pub mod writer;

use std::path::PathBuf;

use serde::Deserialize;

pub use record::{Event, Identity, Realm, ServiceEvent, XksEvent};
pub use writer::{AuditLog, Unaudited};

/// The `[audit]` config table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The audit file. Unset: the records go to the process log (stderr)
    /// on the `kmsgate::audit` target, still chained, never synced.
    pub path: Option<PathBuf>,
    /// `sync`: a response leaves only once its record is on disk
    /// (fdatasync, group-committed). `async`: records are written behind
    /// the responses; losses are counted and logged.
    #[serde(default)]
    pub durability: Durability,
    /// The file is rotated (renamed `PATH.<UTC time>-<n>`, names that never
    /// repeat, see `file`) before it would grow past this size; the chain
    /// continues.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Log encryption-context values too. Off: only the keys are logged.
    #[serde(default)]
    pub log_context_values: bool,
    /// Set for a worker of `serve --workers N` (never in the config): its
    /// number, declared in the first line of each chain it begins, so that
    /// the chains of several workers in one process log verify side by
    /// side ([`chain::ChainStart`]).
    #[serde(skip)]
    pub worker: Option<usize>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: None,
            durability: Durability::default(),
            max_file_bytes: default_max_file_bytes(),
            log_context_values: false,
            worker: None,
        }
    }
}

fn default_max_file_bytes() -> u64 {
    64 * 1024 * 1024
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    #[default]
    Sync,
    Async,
}
