//! `kmsgate doctor --config FILE`: checks a set-up before traffic arrives,
//! one verdict per check, with what to do when it fails. Exit status 0
//! only when no check fails (warnings do not fail). It reads the config,
//! the PIN and the credentials' secrets as `serve` does, logs in to the
//! token and writes nothing; no secret is ever printed.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::hsm::probe::{self, Finding, Verdict};
use crate::server;

/// Runs every check; returns the findings in order.
pub fn run(config_path: &Path) -> Vec<Finding> {
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
    out.push(file_mode(
        "config permissions",
        config_path,
        0o022,
        "chmod go-w",
    ));
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
    if let Some(file) = &config.hsm.pin_file {
        out.push(file_mode("PIN file permissions", file, 0o077, "chmod 600"));
    }
    for c in &config.auth.credentials {
        if let Some(file) = &c.secret_file {
            out.push(file_mode(
                "secret file permissions",
                file,
                0o077,
                "chmod 600",
            ));
        }
    }
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
    if config.tls.is_some() {
        out.push(match server::tls(&config) {
            Ok(_) => Finding::pass("TLS", "certificate chain and private key load"),
            Err(e) => Finding::fail(
                "TLS",
                e.to_string(),
                "point [tls] at readable PEM files: the chain (server certificate first) and its key",
            ),
        });
    }
    out.push(clock());
    if let Some(pin) = pin {
        out.extend(probe::probe(
            &config.hsm.module,
            &config.hsm.token(),
            &pin,
            config.hsm.iv_source,
            config.hsm.use_wrap_when_available,
        ));
    }
    out
}

/// Fails when `path` has any of the `forbidden` mode bits.
fn file_mode(check: &'static str, path: &Path, forbidden: u32, fix: &str) -> Finding {
    match std::fs::metadata(path) {
        Ok(m) if m.mode() & forbidden != 0 => Finding::fail(
            check,
            format!(
                "{} is mode {:04o}: {}",
                path.display(),
                m.mode() & 0o7777,
                if forbidden == 0o077 {
                    "other users can read it"
                } else {
                    "other users can change it"
                }
            ),
            format!("{fix} {}", path.display()),
        ),
        Ok(m) => Finding::pass(
            check,
            format!("{} is mode {:04o}", path.display(), m.mode() & 0o7777),
        ),
        Err(e) => Finding::fail(
            check,
            format!("{}: {e}", path.display()),
            "create the file, or fix the path",
        ),
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
