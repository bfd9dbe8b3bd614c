//! `deploy/container/entrypoint.sh`, run outside a container (every path it
//! uses is an environment variable): on the first start it makes a SoftHSM2
//! token and a development credential and serves; the next start reuses
//! them; with `KMSGATE_CONFIG` it serves that config and makes no token.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

const ENTRYPOINT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/container/entrypoint.sh"
);
const SETUP_TOKEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/setup-token");

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the entrypoint with `env`; returns it and its endpoint once it
/// listens (its stderr in `log`).
fn start(env: &[(&str, &Path)], port: u16, log: &Path) -> (Child, String) {
    let mut child = Command::new("bash")
        .arg(ENTRYPOINT)
        .args(["--workers", "1"])
        .env("KMSGATE_BIN", env!("CARGO_BIN_EXE_kmsgate"))
        // That binary has the test hooks, which setup-token otherwise refuses.
        .env("KMSGATE_ALLOW_TEST_HOOKS", "1")
        .env("KMSGATE_SETUP_TOKEN", SETUP_TOKEN)
        .env("KMSGATE_LISTEN", format!("127.0.0.1:{port}"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    let Some(endpoint) = line.trim().strip_prefix("kmsgate listening on ") else {
        let _ = child.kill();
        panic!(
            "the entrypoint did not serve: {line}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    };
    (child, endpoint.to_owned())
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// A client with the development credential the entrypoint made.
fn dev_client(state: &Path, endpoint: &str) -> aws_sdk_kms::Client {
    let creds = std::fs::read_to_string(state.join("softhsm/credentials")).unwrap();
    let value = |key: &str| {
        creds
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim_start_matches([' ', '=']).trim().to_owned())
            .unwrap_or_else(|| panic!("no {key} in the credentials file"))
    };
    client_at(
        endpoint,
        &value("aws_access_key_id"),
        &value("aws_secret_access_key"),
        "us-east-1",
    )
}

#[tokio::test]
async fn the_entrypoint_makes_a_token_once_and_serves_it_across_restarts() {
    if implementation() != Implementation::SoftHsm2 {
        eprintln!("the container's default token is SoftHSM2");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = free_port();
    let log = dir.path().join("first.log");
    let (child, endpoint) = start(&[("KMSGATE_STATE_DIR", &state)], port, &log);
    let first = std::fs::read_to_string(&log).unwrap();
    assert!(
        first.contains("first start: making a SoftHSM2 token"),
        "{first}"
    );
    assert!(
        first.contains("kmsgate doctor: all checks passed"),
        "{first}"
    );
    let key = create_key(&dev_client(&state, &endpoint)).await;
    for secret in ["pin", "so-pin", "secret", "credentials"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(state.join("softhsm").join(secret))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{secret} is readable by others");
    }
    stop(child);

    let log = dir.path().join("second.log");
    let (child, endpoint) = start(&[("KMSGATE_STATE_DIR", &state)], port, &log);
    let second = std::fs::read_to_string(&log).unwrap();
    assert!(!second.contains("first start"), "{second}");
    let described = dev_client(&state, &endpoint)
        .describe_key()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(described.key_metadata.unwrap().key_id, key);
    stop(child);
}

#[tokio::test]
async fn with_a_mounted_config_the_entrypoint_makes_no_token() {
    let token = Token::new();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = token.config();
    let conf = token.softhsm_conf();
    let kryoptic = token.kryoptic_conf();
    let (child, endpoint) = start(
        &[
            ("KMSGATE_STATE_DIR", &state),
            ("KMSGATE_CONFIG", &config),
            ("SOFTHSM2_CONF", &conf),
            ("KRYOPTIC_CONF", &kryoptic),
        ],
        free_port(),
        &dir.path().join("mounted.log"),
    );
    assert!(!state.exists(), "a token was made in the state directory");
    let kms = client_at(&endpoint, ACCESS_KEY, SECRET, REGION);
    assert!(!create_key(&kms).await.is_empty());
    stop(child);

    // A config that is not there: the entrypoint says so and does not start.
    let out = Command::new("bash")
        .arg(ENTRYPOINT)
        .env("KMSGATE_BIN", env!("CARGO_BIN_EXE_kmsgate"))
        .env("KMSGATE_CONFIG", dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not readable"));
}
