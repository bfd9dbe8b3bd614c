//! Fault injection for the black-box tests: tokens whose gateway loads the
//! test-only module faulty-pkcs11 (which forwards to SoftHSM2), and
//! [`Faults`], the handle that sets the module's rules and reads its log.
//! The control file grammar and the log lines are in faulty-pkcs11/README.md.
//!
//! ```ignore
//! let gw = Gateway::start_faulty();
//! let faults = gw.faults();
//! faults.set("C_Encrypt fail 0x30 once");
//! // ... a request that answers 500 ...
//! assert_eq!(faults.count("fail C_Encrypt"), 1);
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::{Gateway, Token, softhsm_module};

/// How long [`Faults::set`] and [`Faults::clear`] wait after writing the
/// control file: the module looks at it at most every 20 ms, so after this
/// every call sees the new rules.
pub const SETTLE: Duration = Duration::from_millis(100);

/// Builds faulty-pkcs11 (once per test process) and returns the path of
/// the module.
pub fn faulty_module() -> PathBuf {
    static MODULE: OnceLock<PathBuf> = OnceLock::new();
    MODULE
        .get_or_init(|| {
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let out = Command::new(cargo)
                .args(["build", "-p", "faulty-pkcs11", "--message-format=json"])
                .arg("--manifest-path")
                .arg(&manifest)
                .output()
                .expect("cargo runs");
            assert!(
                out.status.success(),
                "cargo build -p faulty-pkcs11 failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The artifact's path from cargo's own report, wherever the
            // target dir is.
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|m| {
                    m["reason"] == "compiler-artifact" && m["target"]["name"] == "faulty_pkcs11"
                })
                .flat_map(|m| {
                    m["filenames"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|f| f.as_str().map(PathBuf::from))
                        .collect::<Vec<_>>()
                })
                .find(|f| f.extension().is_some_and(|e| e == "so"))
                .expect("cargo reported libfaulty_pkcs11.so")
        })
        .clone()
}

impl Token {
    /// As [`Token::with_config`], but the gateway's `[hsm] module` is
    /// faulty-pkcs11. Start gateways on it with
    /// [`Gateway::start_faulty_on`], which tells the module where SoftHSM2
    /// and the control file are.
    pub fn with_faulty_config(extra: &str) -> Arc<Token> {
        Self::with_faulty_hsm("", extra)
    }

    /// As [`with_faulty_config`](Self::with_faulty_config), with
    /// `hsm_lines` added to the `[hsm]` table (e.g. `call_timeout_ms = 1000`).
    pub fn with_faulty_hsm(hsm_lines: &str, extra: &str) -> Arc<Token> {
        let token = Token::with_config(extra);
        let config = std::fs::read_to_string(token.config()).unwrap();
        let real = format!("module = \"{}\"", softhsm_module().display());
        assert!(config.contains(&real), "unexpected config:\n{config}");
        let faulty = format!("module = \"{}\"\n{hsm_lines}", faulty_module().display());
        std::fs::write(token.config(), config.replacen(&real, &faulty, 1)).unwrap();
        token
    }

    /// A fresh token behind faulty-pkcs11, with no extra config.
    pub fn faulty() -> Arc<Token> {
        Self::with_faulty_config("")
    }

    /// The fault controls of gateways started on this token with
    /// [`Gateway::start_faulty_on`].
    pub fn faults(&self) -> Faults {
        Faults {
            control: self.path().join("faults"),
            log: self.path().join("faults.log"),
        }
    }

    /// The environment that points faulty-pkcs11 at SoftHSM2, the control
    /// file and the log.
    pub fn faulty_env(&self) -> Vec<(String, String)> {
        let faults = self.faults();
        vec![
            (
                "FAULTY_PKCS11_MODULE".into(),
                softhsm_module().display().to_string(),
            ),
            (
                "FAULTY_PKCS11_CONTROL".into(),
                faults.control.display().to_string(),
            ),
            ("FAULTY_PKCS11_LOG".into(), faults.log.display().to_string()),
        ]
    }
}

impl Gateway {
    /// A gateway on a fresh token behind faulty-pkcs11, with no rules.
    pub fn start_faulty() -> Gateway {
        Self::start_faulty_on(Token::faulty())
    }

    /// A gateway on a token made by [`Token::with_faulty_config`].
    pub fn start_faulty_on(token: Arc<Token>) -> Gateway {
        Self::start_faulty_on_with_env(token, &[])
    }

    /// As [`start_faulty_on`](Self::start_faulty_on), with extra environment
    /// variables.
    pub fn start_faulty_on_with_env(token: Arc<Token>, env: &[(&str, &str)]) -> Gateway {
        let mut all = token.faulty_env();
        all.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Self::start_on_with_env(token, &all)
    }

    /// The fault controls of this gateway's token.
    pub fn faults(&self) -> Faults {
        self.token.faults()
    }
}

/// The control file and log of faulty-pkcs11 for one token. Every gateway
/// started on the token with [`Gateway::start_faulty_on`] obeys the same
/// rules and writes to the same log.
#[derive(Clone, Debug)]
pub struct Faults {
    control: PathBuf,
    log: PathBuf,
}

static NEXT_TMP: AtomicUsize = AtomicUsize::new(0);

impl Faults {
    /// Replaces the rules with `rules` (one per line, see
    /// faulty-pkcs11/README.md) and waits until the module applies them.
    /// Rules loaded again count as new: setting the same `once` rule twice
    /// arms it twice.
    pub fn set(&self, rules: &str) {
        let n = NEXT_TMP.fetch_add(1, Ordering::SeqCst);
        let tmp = self.control.with_extension(format!("tmp{n}"));
        std::fs::write(&tmp, format!("{rules}\n")).unwrap();
        std::fs::rename(&tmp, &self.control).unwrap();
        std::thread::sleep(SETTLE);
    }

    /// Removes every rule (and so ends every stall) and waits until the
    /// module has noticed.
    pub fn clear(&self) {
        match std::fs::remove_file(&self.control) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing {}: {e}", self.control.display()),
        }
        std::thread::sleep(SETTLE);
    }

    /// The module's log so far ("" before anything was logged).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many log lines are `what` or start with `what` and a space:
    /// `count("fail C_Encrypt")` counts every injected C_Encrypt failure,
    /// `count("fail C_Encrypt 0x30")` those with that code,
    /// `count("call C_Initialize")` the library's initialisations.
    pub fn count(&self, what: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| {
                l.strip_prefix(what)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
            })
            .count()
    }

    /// Waits up to `timeout` until [`count(what)`](Self::count) reaches
    /// `n`; returns the last count seen.
    pub fn wait_for_count(&self, what: &str, n: usize, timeout: Duration) -> usize {
        let start = Instant::now();
        loop {
            let c = self.count(what);
            if c >= n || start.elapsed() >= timeout {
                return c;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The control file.
    pub fn control_file(&self) -> &Path {
        &self.control
    }

    /// The log file.
    pub fn log_file(&self) -> &Path {
        &self.log
    }
}
