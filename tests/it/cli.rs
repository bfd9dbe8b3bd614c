//! Black-box tests of the command-line tools other than `serve`: their exit
//! status is their contract, so every run is checked for a clean exit (not
//! a signal), and `init-token` for never putting a PIN on a command line.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};

use crate::common::*;

const SO_PIN: &str = "cli-test-so-pin-0042";

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
/// exit 0. (Before, pool threads still closing their sessions while the
/// process exited killed 1 to 8 runs in 50 with SIGSEGV or SIGABRT.)
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
            .env("KRYOPTIC_CONF", token.kryoptic_conf())
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

// ------------------------------------------------------------- init-token

/// `kmsgate init-token` on `token`'s SoftHSM2 config.
fn init_token(token: &Token, label: &str, so_pin_file: &Path, pin_file: &Path) -> Output {
    kmsgate()
        .env("SOFTHSM2_CONF", token.softhsm_conf())
        .env("KRYOPTIC_CONF", token.kryoptic_conf())
        .arg("init-token")
        .arg("--module")
        .arg(softhsm_module())
        .args(["--label", label, "--so-pin-file"])
        .arg(so_pin_file)
        .arg("--pin-file")
        .arg(pin_file)
        .output()
        .expect("kmsgate runs")
}

/// A temp dir with a gateway config whose token does not exist yet: the
/// harness's token directory, emptied (SoftHSM2 then offers one free slot).
fn token_without_a_token() -> std::sync::Arc<Token> {
    let token = Token::new();
    let tokens = token.path().join("tokens");
    std::fs::remove_dir_all(&tokens).unwrap();
    std::fs::create_dir(&tokens).unwrap();
    token
}

fn assert_no_pin_in(what: &str, text: &str) {
    for pin in [PIN, SO_PIN] {
        assert!(!text.contains(pin), "a PIN appears in {what}:\n{text}");
    }
}

#[tokio::test]
async fn init_token_makes_a_token_the_gateway_serves_and_never_initialises_it_twice() {
    let token = token_without_a_token();
    let so_pin_file = token.path().join("so-pin");
    let pin_file = token.path().join("pin");
    // One trailing newline, as `echo` writes: not part of the PIN.
    std::fs::write(&so_pin_file, format!("{SO_PIN}\n")).unwrap();
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();

    let out = init_token(&token, "kmsgate", &so_pin_file, &pin_file);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "init-token: {}\n{stdout}\n{stderr}",
        how_it_ended(out.status)
    );
    assert!(
        stdout.starts_with("token 'kmsgate' initialised (serial "),
        "{stdout}"
    );
    assert_no_pin_in("init-token's output", &format!("{stdout}{stderr}"));

    // The gateway logs in with the user PIN from the same file and keeps keys.
    let gw = Gateway::start_on(token.clone());
    let kms = gw.client();
    let key = create_key(&kms).await;
    let blob = encrypt(&kms, &key, b"kept").await;
    let token = gw.stop();

    // The label is taken: refused, exit status 1, and nothing changed.
    let before = token_files(&token);
    let out = init_token(&token, "kmsgate", &so_pin_file, &pin_file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a second init-token: {}\n{stderr}",
        how_it_ended(out.status)
    );
    assert!(
        stderr.contains("a token labelled 'kmsgate' exists already"),
        "{stderr}"
    );
    assert_no_pin_in("init-token's refusal", &stderr);
    assert_eq!(
        token_files(&token),
        before,
        "the refused run changed the token"
    );

    let gw = Gateway::start_on(token);
    let kms = gw.client();
    let back = kms
        .decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .expect("the key survived");
    assert_eq!(back.plaintext.unwrap().as_ref(), b"kept");
    assert_eq!(back.key_id.unwrap(), key_arn(&key));
}

/// Every file under the token directory with its contents.
fn token_files(token: &Token) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_none_or(|e| e != "lock") {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(&token.path().join("tokens"), &mut out);
    out.sort();
    out
}

#[test]
fn init_token_refuses_bad_input_without_touching_the_token() {
    let token = token_without_a_token();
    let so_pin_file = token.path().join("so-pin");
    let pin_file = token.path().join("pin");
    std::fs::write(&so_pin_file, SO_PIN).unwrap();
    std::fs::write(&pin_file, PIN).unwrap();
    let empty = token.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let missing = token.path().join("missing");
    let long_label = "x".repeat(33);
    for (label, so, user, expected) in [
        (long_label.as_str(), &so_pin_file, &pin_file, "1-32 bytes"),
        (" padded", &so_pin_file, &pin_file, "spaces"),
        ("kmsgate", &empty, &pin_file, "is empty"),
        ("kmsgate", &so_pin_file, &missing, "missing"),
    ] {
        let out = init_token(&token, label, so, user);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{label:?}: {}\n{stderr}",
            how_it_ended(out.status)
        );
        assert!(stderr.contains(expected), "{label:?}: {stderr}");
        assert_no_pin_in("init-token's refusal", &stderr);
    }
    assert!(
        token_files(&token).is_empty(),
        "a refused init-token created a token"
    );
}

// ------------------------------------------------------------ setup-token

/// scripts/setup-token makes a working set-up, and no process it starts has
/// a PIN among its arguments. Under strace (required: scripts/test installs
/// it; the test fails without it) every execve of the script and its
/// children is checked; the kmsgate it runs is also a wrapper that records
/// its arguments, and the script's text is checked for PIN options.
#[test]
fn setup_token_puts_no_pin_on_a_command_line() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts/setup-token");
    let text = std::fs::read_to_string(&script).unwrap();
    for option in ["--pin ", "--so-pin ", "--pin=", "--so-pin="] {
        assert!(
            !text.contains(option),
            "scripts/setup-token passes {option:?}"
        );
    }

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("setup");
    let argv_log = tmp.path().join("kmsgate-argv");
    let wrapper = tmp.path().join("kmsgate-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >>'{log}'\nexec '{bin}' \"$@\"\n",
            log = argv_log.display(),
            bin = env!("CARGO_BIN_EXE_kmsgate"),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

    let strace = Command::new("strace").arg("-V").output();
    assert!(
        strace.as_ref().is_ok_and(|o| o.status.success()),
        "strace does not run ({strace:?}): install it (apt-get install -y strace; scripts/test does)"
    );
    let trace = tmp.path().join("execve.trace");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-s", "4096", "-e", "trace=execve", "-o"])
        .arg(&trace)
        .arg(&script)
        .arg(&dir)
        .arg("18123")
        .env("KMSGATE_BIN", &wrapper)
        // The binary under test has the test hooks, which setup-token
        // otherwise refuses (setup_token_refuses_a_binary_with_test_hooks).
        .env("KMSGATE_ALLOW_TEST_HOOKS", "1")
        .env("SOFTHSM2_MODULE", softhsm_module())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "setup-token: {}\n{}",
        how_it_ended(out.status),
        String::from_utf8_lossy(&out.stderr)
    );

    let pin = std::fs::read_to_string(dir.join("pin")).unwrap();
    let so_pin = std::fs::read_to_string(dir.join("so-pin")).unwrap();
    assert_eq!(pin.len(), 32);
    assert_eq!(so_pin.len(), 32);
    for f in ["pin", "so-pin", "secret", "credentials"] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f} has mode {mode:o}");
    }

    let argv = std::fs::read_to_string(&argv_log).expect("setup-token ran KMSGATE_BIN");
    assert!(argv.contains("init-token"), "{argv}");
    let execs = std::fs::read_to_string(&trace).unwrap();
    assert!(
        execs.lines().filter(|l| l.contains("execve(")).count() > 3,
        "strace saw too little:\n{execs}"
    );
    assert!(execs.contains("init-token"), "{execs}");
    let checked = [("the kmsgate it ran", argv), ("the execve calls", execs)];
    for (what, text) in &checked {
        for p in [&pin, &so_pin] {
            assert!(
                !text.contains(p.as_str()),
                "a PIN appears in {what}:\n{text}"
            );
        }
    }

    // The set-up works: the gateway logs in with the PIN setup-token chose.
    let out = kmsgate()
        .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
        .arg("check-keys")
        .arg("--config")
        .arg(dir.join("kmsgate.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check-keys on the new set-up: {}\n{}",
        how_it_ended(out.status),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "0 key versions checked, 0 unsafe\n"
    );

    // A second run keeps everything.
    let out = Command::new(&script)
        .arg(&dir)
        .env("KMSGATE_BIN", &wrapper)
        .env("KMSGATE_ALLOW_TEST_HOOKS", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(dir.join("pin")).unwrap(), pin);
}

/// When `kmsgate init-token` fails, setup-token fails and leaves no PIN
/// files and no token behind.
#[test]
fn setup_token_cleans_up_when_init_token_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("setup");
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup-token"))
        .arg(&dir)
        .env("KMSGATE_BIN", "/bin/false")
        .env("SOFTHSM2_MODULE", softhsm_module())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("init-token failed"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A binary with the test hooks (what `cargo test`, `cargo test --release`
/// and `--all-features` leave in target/) says so in `--version`, and
/// setup-token refuses it, whether named in KMSGATE_BIN or found in the
/// checkout's target/release, and makes nothing.
#[test]
fn setup_token_refuses_a_binary_with_test_hooks() {
    let hooked = Path::new(env!("CARGO_BIN_EXE_kmsgate"));
    let out = Command::new(hooked).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{version}");
    assert!(
        version.starts_with("kmsgate ") && version.contains("test-hooks"),
        "the test build does not say what it is: {version:?}"
    );

    // A checkout of its own whose target/release/kmsgate is the test build.
    let tmp = tempfile::tempdir().unwrap();
    let checkout = tmp.path().join("checkout");
    std::fs::create_dir_all(checkout.join("scripts")).unwrap();
    std::fs::create_dir_all(checkout.join("target/release")).unwrap();
    let script = checkout.join("scripts/setup-token");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup-token"),
        &script,
    )
    .unwrap();
    std::os::unix::fs::symlink(hooked, checkout.join("target/release/kmsgate")).unwrap();

    for (how, bin) in [("found in target/release", None), ("named", Some(hooked))] {
        let dir = tmp.path().join(format!("setup-{}", bin.is_some()));
        let mut cmd = Command::new(&script);
        cmd.arg(&dir)
            .env_remove("KMSGATE_BIN")
            .env_remove("KMSGATE_ALLOW_TEST_HOOKS")
            .env("SOFTHSM2_MODULE", softhsm_module());
        if let Some(bin) = bin {
            cmd.env("KMSGATE_BIN", bin);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{how}: {stderr}");
        assert!(
            stderr.contains("is a test build") && stderr.contains("cargo build --release"),
            "{how}: {stderr}"
        );
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{how}: left behind: {left:?}");
    }
}
