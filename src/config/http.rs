//! The listener's part of the configuration: TLS, and the connection
//! limits and timeouts of the HTTP server.

use std::path::PathBuf;

use serde::Deserialize;

/// TLS on the listener (rustls). PEM files; re-read on SIGHUP.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate first, then the intermediates.
    pub cert_chain_file: PathBuf,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key_file: PathBuf,
    /// When set, every client must present a certificate issued by a CA
    /// in this bundle (mTLS).
    pub client_ca_file: Option<PathBuf>,
    /// When true, the client certificate's subject CN must equal the name
    /// of the principal that signed the request: a second factor beside
    /// SigV4. Needs `client_ca_file`.
    #[serde(default)]
    pub client_cert_principal: bool,
}

/// Connection limits and timeouts of the HTTP server: what keeps a client
/// that opens connections and never finishes a request from taking the
/// gateway down.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Open client connections at most (further capped by the file
    /// descriptor limit). At the limit the connection idle the longest is
    /// closed to make room; with none idle, the new one is.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Request line plus headers larger than this are refused.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Time a client has to send a complete request head (from the first
    /// byte of it, or from connecting for the first request).
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// Time a client has to send the request body once the head is in.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// HTTP/2 streams (requests) in flight on one connection at most
    /// (SETTINGS_MAX_CONCURRENT_STREAMS); clients wait for a slot.
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// Request bodies one connection may be receiving before they are
    /// authenticated, in bytes declared by their content-length (or
    /// `max_body_bytes` for one without), at least `max_body_bytes`. Over
    /// HTTP/2 several streams share it; a request that finds it spent is
    /// refused with ThrottlingException.
    #[serde(default = "default_connection_body_bytes")]
    pub connection_body_bytes: usize,
    /// The same, summed over every connection of the process: what
    /// unauthenticated clients can make the gateway hold in bodies.
    #[serde(default = "default_pending_body_bytes")]
    pub pending_body_bytes: usize,
    /// A connection with no request in flight for this long is closed.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// On SIGTERM or SIGINT, how long requests in flight may take to finish
    /// before their connections are cut.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_connections: default_max_connections(),
            max_header_bytes: default_max_header_bytes(),
            header_timeout_ms: default_header_timeout_ms(),
            body_timeout_ms: default_body_timeout_ms(),
            max_concurrent_streams: default_max_concurrent_streams(),
            connection_body_bytes: default_connection_body_bytes(),
            pending_body_bytes: default_pending_body_bytes(),
            idle_timeout_ms: default_idle_timeout_ms(),
            shutdown_grace_ms: default_shutdown_grace_ms(),
        }
    }
}

fn default_max_connections() -> usize {
    4096
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_header_timeout_ms() -> u64 {
    10_000
}
fn default_body_timeout_ms() -> u64 {
    10_000
}
fn default_max_concurrent_streams() -> u32 {
    16
}
fn default_connection_body_bytes() -> usize {
    256 * 1024
}
fn default_pending_body_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_idle_timeout_ms() -> u64 {
    60_000
}
fn default_shutdown_grace_ms() -> u64 {
    10_000
}

impl HttpConfig {
    /// Why the stream and body limits cannot be served, if they cannot.
    pub(super) fn check_body_limits(&self) -> Result<(), String> {
        if self.max_concurrent_streams == 0 {
            return Err("http.max_concurrent_streams must be at least 1".into());
        }
        if self.connection_body_bytes > self.pending_body_bytes {
            return Err(format!(
                "http.connection_body_bytes ({}) must not exceed http.pending_body_bytes ({})",
                self.connection_body_bytes, self.pending_body_bytes
            ));
        }
        Ok(())
    }
}

/// The Prometheus endpoint (`[metrics]`; docs/operations.md "Metrics").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `GET /metrics` is served, plain HTTP and unauthenticated, apart
    /// from the KMS listener; no endpoint (and no metrics kept) when unset.
    pub listen: Option<std::net::SocketAddr>,
    /// Label the per-key-version GCM usage gauge with key ids (one series
    /// per key version: off by default to keep the series count bounded).
    #[serde(default)]
    pub key_labels: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_streams_or_a_connection_budget_past_the_total_is_refused() {
        assert!(HttpConfig::default().check_body_limits().is_ok());
        let no_streams = HttpConfig {
            max_concurrent_streams: 0,
            ..HttpConfig::default()
        };
        assert!(no_streams.check_body_limits().is_err());
        let inverted = HttpConfig {
            connection_body_bytes: 2 << 20,
            pending_body_bytes: 1 << 20,
            ..HttpConfig::default()
        };
        let why = inverted.check_body_limits().unwrap_err();
        assert!(why.contains("http.connection_body_bytes"), "{why}");
    }
}
