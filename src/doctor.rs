//! `kmsgate doctor --config FILE [--listen ADDR]`: checks a set-up before
//! traffic arrives, one verdict per check, with what to do when it fails.
//! Exit status 0 only when no check fails (warnings do not fail).
//!
//! It runs `serve`'s own start-up checks, the same functions
//! ([`crate::preflight`], [`crate::server`]): the config, the transport for
//! the address serve would listen on (`--listen` as serve takes it), the
//! permissions serve refuses, the PIN, the credentials and their policy
//! files, TLS. It is stricter than serve where a set-up works but exposes
//! something (a secret others can read). Then it logs in to the token and
//! probes it step by step, ending with a write that it removes
//! ([`crate::hsm::probe`]). No secret is ever printed.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::hsm::probe::{self, Finding, Verdict};
use crate::preflight::{self, Exposure, FileMode, Role};
use crate::server;

/// Runs every check, for serve listening on `listen` (None: the config's
/// `listen`); returns the findings in order.
pub fn run(config_path: &Path, listen: Option<SocketAddr>) -> Vec<Finding> {
    let mut out = Vec::new();
    let config = match Config::load(config_path) {
        Ok(c) => {
            out.push(Finding::pass(
                "config",
                format!("{} is valid", config_path.display()),
            ));
            c
        }
        Err(e) => {
            out.push(Finding::fail(
                "config",
                e.to_string(),
                "fix the file (docs/configuration.md is the reference)",
            ));
            return out;
        }
    };
    out.push(transport(&config, listen));
    out.extend(preflight::file_modes(&config).iter().map(permissions));
    let pin = match server::user_pin(&config) {
        Ok(pin) => {
            let from = match (&config.hsm.pin_file, &config.hsm.pin_env) {
                (Some(f), _) => format!("hsm.pin_file {}", f.display()),
                (None, Some(v)) => format!("hsm.pin_env {v}"),
                (None, None) => "nowhere".to_owned(),
            };
            out.push(Finding::pass("PIN", format!("read from {from}")));
            Some(pin)
        }
        Err(e) => {
            out.push(Finding::fail(
                "PIN",
                e.to_string(),
                "make hsm.pin_file readable by the gateway's user, or set the variable hsm.pin_env names",
            ));
            None
        }
    };
    out.push(match server::authorizer(&config).and_then(|_| server::verifier(&config)) {
        Ok(_) => Finding::pass(
            "credentials",
            format!(
                "{} access key(s) and their policies parse",
                config.auth.credentials.len()
            ),
        ),
        Err(e) => Finding::fail(
            "credentials",
            e.to_string(),
            "fix [[auth.credentials]] / [[auth.principals]] (secrets readable, policies valid JSON)",
        ),
    });
    out.push(clock());
    if let Some(pin) = pin {
        out.extend(probe::probe(&server::hsm_settings_with_pin(&config, pin)));
    }
    out
}

/// serve's transport check ([`preflight::transport`]) for `listen`: TLS
/// with its files loaded, or plain HTTP where serve allows it (a warning
/// off loopback, where the config opts in).
fn transport(config: &Config, listen: Option<SocketAddr>) -> Finding {
    const CHECK: &str = "transport";
    match preflight::transport(config, listen) {
        Ok(t) if t.tls.is_some() => Finding::pass(
            CHECK,
            format!(
                "TLS on {}: the certificate chain and private key load",
                t.addr
            ),
        ),
        Ok(t) if t.addr.ip().is_loopback() => {
            Finding::pass(CHECK, format!("plain HTTP on {} (loopback)", t.addr))
        }
        Ok(t) => Finding::warn(
            CHECK,
            format!(
                "plain HTTP on {}, which is not a loopback address (insecure_plain_http = true)",
                t.addr
            ),
            "configure [tls]: requests, plaintexts and data keys cross the network unencrypted",
        ),
        Err(e) if config.tls.is_some() => Finding::fail(
            CHECK,
            e.to_string(),
            "point [tls] at readable PEM files: the chain (server certificate first) and its key",
        ),
        Err(e) => Finding::fail(
            CHECK,
            e.to_string(),
            "configure [tls], or listen on a loopback address (listen, or serve --listen), or set insecure_plain_http = true",
        ),
    }
}

/// A file's permissions: others must not change it (serve refuses that,
/// except for the audit directory) and, for a secret, not read it.
fn permissions(f: &FileMode) -> Finding {
    let check = f.role.check();
    let mode = match &f.mode {
        Ok(m) => *m,
        Err(e) => {
            return Finding::fail(
                check,
                format!("{}: {e}", f.path.display()),
                "create the file, or fix the path",
            );
        }
    };
    let shown = format!("{} is mode {mode:04o}", f.path.display());
    match f.exposure() {
        None => Finding::pass(check, shown),
        Some(Exposure::Writable) => Finding::fail(
            check,
            format!(
                "{shown}: other users can change it{}",
                if f.role == Role::AuditDir {
                    " (and remove or replace audit files)"
                } else {
                    " (serve refuses to start)"
                }
            ),
            f.fix(),
        ),
        Some(Exposure::Readable) => {
            Finding::fail(check, format!("{shown}: other users can read it"), f.fix())
        }
    }
}

/// The system clock is plausible: SigV4 refuses requests more than
/// `auth.max_clock_skew_secs` away from it, and key dates come from it.
fn clock() -> Finding {
    // 2025-01-01T00:00:00Z and 2100-01-01T00:00:00Z.
    const FLOOR: u64 = 1_735_689_600;
    const CEILING: u64 = 4_102_444_800;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let shown = time::OffsetDateTime::from_unix_timestamp(i64::try_from(now).unwrap_or(0))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| now.to_string());
    if (FLOOR..CEILING).contains(&now) {
        Finding::pass("clock", format!("{shown} (UTC)"))
    } else {
        Finding::fail(
            "clock",
            format!("the system clock says {shown}"),
            "set the clock (NTP): clients' signatures are checked against it and key dates come from it",
        )
    }
}

/// Prints the findings, one line each (and the remedy under a failure or
/// warning); returns whether none failed.
pub fn report(findings: &[Finding], out: &mut impl std::io::Write) -> std::io::Result<bool> {
    for f in findings {
        let word = match f.verdict {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        writeln!(out, "{word}  {:<24} {}", f.check, f.detail)?;
        if let Some(r) = &f.remedy
            && f.verdict != Verdict::Pass
        {
            writeln!(out, "      {:<24} fix: {r}", "")?;
        }
    }
    let failed = findings
        .iter()
        .filter(|f| f.verdict == Verdict::Fail)
        .count();
    if failed == 0 {
        writeln!(out, "kmsgate doctor: all checks passed")?;
    } else {
        writeln!(out, "kmsgate doctor: {failed} check(s) failed")?;
    }
    Ok(failed == 0)
}
