//! The file descriptor limit: raised as far as allowed, and kept clear of
//! the connection limit so that the token and the logs always have some.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept free of client connections: the PKCS#11 module (token
/// files, sockets of a network HSM), log files, the listener.
pub const RESERVED_FDS: u64 = 256;

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the
/// connection limit to use: `configured`, capped so that
/// [`RESERVED_FDS`] descriptors stay free.
pub fn connection_limit(configured: usize) -> usize {
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = raised,
            Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
        }
    }
    let effective = match limit.current {
        None => configured,
        Some(fds) => configured.min(fds.saturating_sub(RESERVED_FDS).max(1) as usize),
    };
    let fds = limit
        .current
        .map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    if effective < configured {
        tracing::warn!(
            configured,
            effective,
            fd_limit = %fds,
            reserved = RESERVED_FDS,
            "max_connections lowered to fit the file descriptor limit"
        );
    } else {
        tracing::info!(max_connections = effective, fd_limit = %fds, "connection limit");
    }
    effective
}
