//! Black-box tests of the command-line tools other than `serve`: their exit
//! status is their contract, so every run is checked for a clean exit (not
//! a signal), and `init-token` for never putting a PIN on a command line.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};

use common::*;

fn kmsgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kmsgate"))
}

/// "exit 0", "exit 1" or "killed by signal 11": what a run ended with.
fn how_it_ended(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => format!(
            "killed by signal {sig}{}",
            if status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            }
        ),
        (None, None) => format!("{status:?}"),
    }
}

// ------------------------------------------------------------- check-keys

/// `check-keys` finishes its PKCS#11 work and unloads the library only when
/// no thread of its own is still inside it: 50 runs on a 200-key token all
/// exit 0. (Before, a pool thread still closing its session while the
/// process exited made about one run in seven die with SIGSEGV.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_keys_exits_cleanly_every_time_on_a_200_key_token() {
    const KEYS: usize = 200;
    const RUNS: usize = 50;
    let gw = Gateway::start();
    let kms = gw.client();
    for _ in 0..KEYS {
        create_key(&kms).await;
    }
    let token = gw.stop();
    let config = token.config();

    let mut failures = Vec::new();
    for run in 0..RUNS {
        let out = kmsgate()
            .env("SOFTHSM2_CONF", token.softhsm_conf())
            .args(["check-keys", "--config"])
            .arg(&config)
            .output()
            .expect("kmsgate runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary = format!("{KEYS} key versions checked, 0 unsafe");
        if !out.status.success() || !stdout.lines().any(|l| l == summary) {
            failures.push(format!(
                "run {run}: {}; last line {:?}; stderr tail {:?}",
                how_it_ended(out.status),
                stdout.lines().last().unwrap_or(""),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .rev()
                    .take(3)
                    .collect::<Vec<_>>(),
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {RUNS} check-keys runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
