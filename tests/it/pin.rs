//! A PIN the token refuses (issue 20, item 4): an HSM with a failure
//! counter locks the user out after a few wrong logins, so a refused PIN
//! is tried once per operator action (the start, each SIGHUP), never again
//! by a re-initialisation, a restarted worker or a read-back helper. The
//! gateway stays up, unready, answering the retryable 5xx of a token that
//! is down, until the operator fixes the PIN and sends SIGHUP.
//!
//! faulty-pkcs11 counts the logins: under `C_Login fail ...` every C_Login
//! is a `fail C_Login` line of its log, and under `C_Login stall 1ms
//! forever` every C_Login (passed on to SoftHSM2) is a `stall C_Login`
//! line.

use std::process::Command;
use std::time::Duration;

use rustix::process::Signal;

use crate::common::*;
use crate::signals::{Started, eventually, send, spawn};
use crate::workers::{kill, workers_of};

/// The status `/readyz` answers at `endpoint` (0: no answer).
fn readyz(endpoint: &str) -> u16 {
    readyz_answer(endpoint).0
}

/// The status and body `/readyz` answers at `endpoint`.
fn readyz_answer(endpoint: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    )
}

/// GenerateDataKey on a connection of its own: Ok, or the error's name.
async fn data_key(endpoint: &str, key: &str) -> Result<(), String> {
    client_at(endpoint, ACCESS_KEY, SECRET, REGION)
        .generate_data_key()
        .key_id(key)
        .number_of_bytes(32)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| error_of(&e).0)
}

/// Waits `settle` and checks that the logins stayed at `n`.
fn logins_stay(faults: &crate::common::faulty::Faults, what: &str, n: usize, settle: Duration) {
    std::thread::sleep(settle);
    assert_eq!(faults.count(what), n, "logins: {}", faults.log());
}

/// Two workers; the token starts refusing the PIN (CKR_PIN_INCORRECT) and
/// a device fault makes each worker re-initialise and log in again. One
/// login is tried in all; then a worker killed and restarted, writes
/// (read-back helpers) and time add none, the gateway answers 503 on
/// /readyz and KeyUnavailableException to KMS requests. A SIGHUP with the
/// PIN still refused tries exactly once more; with the PIN taken again a
/// SIGHUP makes the gateway ready, with both workers serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_pin_is_tried_once_per_operator_action_across_workers() {
    const LOGIN: &str = "fail C_Login 0xa0";
    let token = Token::with_faulty_config("[keys]\nsync_interval_ms = 200\n");
    let faults = token.faults();
    let log = token.path().join("pin-workers.log");
    let mut gw: Started = spawn(
        &token,
        &["--workers", "2"],
        &token.faulty_env(),
        &log,
        false,
    );
    let endpoint = gw.endpoint(Duration::from_secs(60)).unwrap();
    let key = create_key(&client_at(&endpoint, ACCESS_KEY, SECRET, REGION)).await;

    faults.set("C_Login fail 0xa0 forever\nC_GetSessionInfo fail 0x32 once");
    assert_eq!(faults.wait_for_count(LOGIN, 1, Duration::from_secs(40)), 1);
    logins_stay(&faults, LOGIN, 1, Duration::from_secs(6));
    assert!(
        eventually(Duration::from_secs(40), || {
            let l = gw.log();
            l.contains("the token refused the user PIN")
                && l.contains("another worker's login was refused")
        }),
        "both workers met the refusal:\n{}",
        gw.log()
    );
    assert_eq!(faults.count(LOGIN), 1, "one login in all: {}", faults.log());
    let (status, body) = readyz_answer(&endpoint);
    assert_eq!(status, 503);
    assert!(
        body.contains("the token refused the PIN (CKR_PIN_INCORRECT)"),
        "/readyz says why: {body}"
    );
    assert_eq!(
        data_key(&endpoint, &key).await,
        Err("KeyUnavailableException".to_owned())
    );
    // Writes would start read-back helpers; a killed worker is restarted.
    for _ in 0..3 {
        let _ = client_at(&endpoint, ACCESS_KEY, SECRET, REGION)
            .create_key()
            .send()
            .await;
    }
    let victim = workers_of(gw.pid())[0];
    kill("KILL", victim);
    assert!(
        eventually(Duration::from_secs(30), || gw
            .log()
            .contains("the worker is not started again until SIGHUP")),
        "the restarted worker stopped at the refusal:\n{}",
        gw.log()
    );
    logins_stay(&faults, LOGIN, 1, Duration::from_secs(6));
    assert!(
        matches!(gw.child.try_wait(), Ok(None)),
        "the supervisor is up"
    );

    // An operator action with the PIN still refused: one attempt.
    send(gw.pid(), Signal::HUP);
    assert_eq!(faults.wait_for_count(LOGIN, 2, Duration::from_secs(20)), 2);
    logins_stay(&faults, LOGIN, 2, Duration::from_secs(6));
    assert_eq!(readyz(&endpoint), 503);

    // The PIN fixed, and SIGHUP: ready, both workers serve.
    faults.clear();
    send(gw.pid(), Signal::HUP);
    assert!(
        eventually(Duration::from_secs(40), || {
            workers_of(gw.pid()).len() == 2 && (0..6).all(|_| readyz(&endpoint) == 200)
        }),
        "ready again with two workers:\n{}",
        gw.log()
    );
    for _ in 0..6 {
        data_key(&endpoint, &key).await.unwrap();
    }
    assert_eq!(faults.count(LOGIN), 2, "{}", faults.log());
    gw.stop();
}

/// A first start on a token that refuses the PIN (CKR_PIN_LOCKED) logs in
/// once and exits with status 78 (EX_CONFIG), the line naming the code;
/// the same with workers (the first worker's one login).
#[test]
fn a_first_start_with_a_refused_pin_tries_once_and_exits_78() {
    let token = Token::faulty();
    let faults = token.faults();
    faults.set("C_Login fail 0xa4 forever");
    for (n, workers) in ["1", "2"].into_iter().enumerate() {
        let out = Command::new("timeout")
            .arg("120")
            .arg(kmsgate_bin())
            .env("SOFTHSM2_CONF", token.softhsm_conf())
            .envs(token.faulty_env())
            .args(["serve", "--config"])
            .arg(token.config())
            .args(["--listen", "127.0.0.1:0", "--workers", workers])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(faults.count("fail C_Login"), n + 1, "{}", faults.log());
        assert_eq!(
            out.status.code(),
            Some(78),
            "--workers {workers}:\n{stderr}"
        );
        assert!(
            stderr.contains("the token refused the user PIN") && stderr.contains("CKR_PIN_LOCKED"),
            "{stderr}"
        );
        assert!(!stderr.contains(PIN), "the PIN is never logged");
    }
}

/// A single gateway whose PIN file is changed to a wrong PIN: SIGHUP
/// takes it without logging in; a device fault then makes the one login
/// SoftHSM2 refuses, and time adds none; the right PIN back and SIGHUP:
/// exactly one more login, and the gateway serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_file_is_tried_once_and_fixed_by_sighup() {
    const LOGIN: &str = "stall C_Login";
    let token = Token::with_faulty_config("[keys]\nsync_interval_ms = 200\n");
    let faults = token.faults();
    faults.set("C_Login stall 1ms forever");
    let log = token.path().join("pin-file.log");
    let mut gw = spawn(
        &token,
        &["--workers", "1"],
        &token.faulty_env(),
        &log,
        false,
    );
    let endpoint = gw.endpoint(Duration::from_secs(60)).unwrap();
    let key = create_key(&client_at(&endpoint, ACCESS_KEY, SECRET, REGION)).await;
    let pin_file = token.path().join("pin");
    std::fs::write(&pin_file, "not-the-pin").unwrap();
    send(gw.pid(), Signal::HUP);
    std::thread::sleep(Duration::from_secs(1));
    let before = faults.count(LOGIN);

    faults.set("C_Login stall 1ms forever\nC_GetSessionInfo fail 0x32 once");
    faults.wait_for_count(LOGIN, before + 1, Duration::from_secs(30));
    logins_stay(&faults, LOGIN, before + 1, Duration::from_secs(6));
    assert!(
        gw.log().contains("the token refused the user PIN"),
        "{}",
        gw.log()
    );
    assert_eq!(
        data_key(&endpoint, &key).await,
        Err("KeyUnavailableException".to_owned())
    );
    assert_eq!(readyz(&endpoint), 503);
    assert!(!gw.log().contains("not-the-pin"), "the PIN is never logged");

    std::fs::write(&pin_file, PIN).unwrap();
    send(gw.pid(), Signal::HUP);
    assert!(
        eventually(Duration::from_secs(30), || readyz(&endpoint) == 200),
        "{}",
        gw.log()
    );
    data_key(&endpoint, &key).await.unwrap();
    assert!(faults.count(LOGIN) >= before + 2);
    gw.stop();
}
