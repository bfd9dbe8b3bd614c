//! The audit record: one line per request on the `kmsgate::audit` target.
//!
//! KMS requests, and the requests the HTTP layer refuses before any
//! operation runs, write the same fields, so one query over the audit log
//! sees every request a client made.

use std::time::Instant;

/// What one audit line says about one request.
pub struct Audit<'a> {
    pub request_id: &'a str,
    pub principal: Option<&'a str>,
    pub access_key_id: Option<&'a str>,
    pub operation: &'a str,
    pub key: Option<&'a str>,
    pub status: u16,
    pub error: Option<&'a str>,
    pub started: Instant,
}

impl Audit<'_> {
    pub fn write(&self) {
        tracing::info!(
            target: "kmsgate::audit",
            request_id = %self.request_id,
            principal = self.principal.unwrap_or("-"),
            access_key_id = self.access_key_id.unwrap_or("-"),
            operation = %self.operation,
            key = self.key.unwrap_or("-"),
            status = self.status,
            error = self.error.unwrap_or("-"),
            micros = self.started.elapsed().as_micros() as u64,
        );
    }
}
