//! The read-back helper (src/hsm/readback.rs) gets the PIN on its standard
//! input and needs no other secret: it does not inherit `hsm.pin_env` nor
//! any credential's `secret_env` from the gateway that starts it, single
//! or a supervisor's worker.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

const PIN_ENV: &str = "KMSGATE_TEST_PIN";
const OTHER_ENV: &str = "KMSGATE_TEST_OTHER_SECRET";

/// A token whose config reads the PIN from [`PIN_ENV`] and has a second
/// credential whose secret is in [`OTHER_ENV`].
fn token_with_secrets_in_env() -> Arc<Token> {
    let token = Token::with_config(&format!(
        r#"
[[auth.credentials]]
access_key_id = "{OTHER_KEY}"
secret_env = "{OTHER_ENV}"
principal = "other"
allow = ["kms:ListKeys"]
"#
    ));
    let config = std::fs::read_to_string(token.config()).unwrap();
    let pin_file = format!("pin_file = \"{}/pin\"", token.path().display());
    assert!(config.contains(&pin_file));
    std::fs::write(
        token.config(),
        config.replace(&pin_file, &format!("pin_env = \"{PIN_ENV}\"")),
    )
    .unwrap();
    token
}

const ENV: [(&str, &str); 2] = [(PIN_ENV, PIN), (OTHER_ENV, OTHER_SECRET)];

/// The live processes whose parent is `parent` and whose command line
/// holds `arg`.
fn children(parent: u32, arg: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if fields.get(1) == Some(&parent.to_string().as_str())
            && fields.first() != Some(&"Z")
            && String::from_utf8_lossy(&cmdline).contains(arg)
        {
            pids.push(pid);
        }
    }
    pids
}

fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// Asserts that `pid` holds no secret in its environment, though it has
/// the environment it needs (the module's configuration).
fn assert_no_secret_in_environment(pid: u32, what: &str) {
    let env = environ(pid);
    assert!(
        env.iter().any(|v| v.starts_with("SOFTHSM2_CONF=")),
        "{what} {pid} inherits the rest of the environment: {env:?}"
    );
    for var in [PIN_ENV, OTHER_ENV] {
        assert!(
            !env.iter().any(|v| v.starts_with(&format!("{var}="))),
            "{what} {pid} inherited {var}"
        );
    }
    for secret in [PIN, OTHER_SECRET] {
        assert!(
            !env.iter().any(|v| v.contains(secret)),
            "a secret is in {what} {pid}'s environment"
        );
    }
}

#[tokio::test]
async fn the_read_back_helper_inherits_no_pin_or_secret_env_var() {
    let gw = Gateway::start_on_with_env(token_with_secrets_in_env(), &ENV);
    // A write is confirmed by the helper, which starts with the first one.
    create_key(&gw.client()).await;
    let helpers = children(gw.pid(), "__read-back-helper");
    assert_eq!(helpers.len(), 1, "one read-back helper: {helpers:?}");
    // The gateway itself was given both (it reads them).
    let own = environ(gw.pid());
    assert!(own.contains(&format!("{PIN_ENV}={PIN}")));
    assert!(own.contains(&format!("{OTHER_ENV}={OTHER_SECRET}")));
    assert_no_secret_in_environment(helpers[0], "read-back helper");
}

#[tokio::test]
async fn a_workers_read_back_helper_inherits_no_pin_or_secret_env_var() {
    let token = token_with_secrets_in_env();
    let log = token.path().join("supervisor.log");
    let (mut supervisor, endpoint) = spawn_serve(
        &token,
        &["--workers", "2"],
        &ENV,
        &log,
        Duration::from_secs(60),
    );
    let client = client_at(&endpoint, ACCESS_KEY, SECRET, REGION);
    // Each request on a connection of its own, which either worker may
    // take; every worker that wrote has its helper.
    for _ in 0..4 {
        create_key(&client_at(&endpoint, ACCESS_KEY, SECRET, REGION)).await;
    }
    create_key(&client).await;
    let workers = children(supervisor.id(), "__worker");
    let helpers: Vec<u32> = workers
        .iter()
        .flat_map(|w| children(*w, "__read-back-helper"))
        .collect();
    let checked = std::panic::catch_unwind(|| {
        assert_eq!(workers.len(), 2, "two workers: {workers:?}");
        assert!(!helpers.is_empty(), "a worker's read-back helper");
        for pid in &helpers {
            assert_no_secret_in_environment(*pid, "a worker's read-back helper");
        }
    });
    // SIGTERM stops the supervisor and its workers (and so their helpers).
    let _ = Command::new("kill")
        .args(["-TERM", &supervisor.id().to_string()])
        .status();
    for _ in 0..200 {
        if let Ok(Some(_)) = supervisor.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = supervisor.kill();
    let _ = supervisor.wait();
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}
