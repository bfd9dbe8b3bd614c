//! Token faults give retryable 5xx answers, never NotFoundException or
//! AccessDeniedException, and the gateway recovers without a restart
//! (DESIGN.md decisions 9 and 13). Faults come from the fault-injecting
//! module (faulty-pkcs11) and from breaking the real SoftHSM2 token's
//! storage under a running gateway.

use std::time::{Duration, Instant};

use crate::common::*;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;

/// The longest a request waits for one token call in these tests.
const HSM: &str = "call_timeout_ms = 1000\nqueue_timeout_ms = 1000";

/// (HTTP status, exception name) of an SDK call; status 0 when no HTTP
/// answer came at all (connection refused or reset).
fn outcome<T, E: ProvideErrorMetadata>(
    r: &Result<T, SdkError<E, aws_sdk_kms::config::http::HttpResponse>>,
) -> (u16, String) {
    match r {
        Ok(_) => (200, String::new()),
        Err(e) => (
            e.raw_response().map_or(0, |r| r.status().as_u16()),
            e.as_service_error()
                .and_then(|s| s.code())
                .unwrap_or_default()
                .to_owned(),
        ),
    }
}

/// During a fault an answer is a success or a retryable server error.
fn assert_retryable<T, E: ProvideErrorMetadata>(
    what: &str,
    r: &Result<T, SdkError<E, aws_sdk_kms::config::http::HttpResponse>>,
) -> (u16, String) {
    let (status, code) = outcome(r);
    assert!(
        status == 200 || status == 0 || status >= 500,
        "{what} answered {status} {code} during a token fault"
    );
    if status >= 500 {
        assert!(
            matches!(
                code.as_str(),
                "KeyUnavailableException" | "DependencyTimeoutException" | "KMSInternalException"
            ),
            "{what}: {code}"
        );
    }
    (status, code)
}

async fn encrypt(kms: &aws_sdk_kms::Client, key: &str) -> Result<Blob, String> {
    kms.encrypt()
        .key_id(key)
        .plaintext(Blob::new(b"recover me".to_vec()))
        .send()
        .await
        .map(|o| o.ciphertext_blob.unwrap())
        .map_err(|e| format!("{:?}", outcome(&Err::<(), _>(e))))
}

/// One Encrypt of one byte, as the SDK answered it.
async fn encrypt_x(
    kms: &aws_sdk_kms::Client,
    key: &str,
) -> Result<
    aws_sdk_kms::operation::encrypt::EncryptOutput,
    SdkError<
        aws_sdk_kms::operation::encrypt::EncryptError,
        aws_sdk_kms::config::http::HttpResponse,
    >,
> {
    kms.encrypt()
        .key_id(key)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
}

async fn decrypts(kms: &aws_sdk_kms::Client, blob: &Blob) -> bool {
    matches!(
        kms.decrypt().ciphertext_blob(blob.clone()).send().await,
        Ok(o) if o.plaintext.as_ref().map(|p| p.as_ref()) == Some(&b"recover me"[..])
    )
}

/// Polls until the key encrypts and `blob` decrypts again; returns how long
/// that took.
async fn wait_until_served(gw: &Gateway, key: &str, blob: &Blob) -> Duration {
    let kms = &gw.client();
    let start = Instant::now();
    loop {
        let encrypted = encrypt(kms, key).await;
        if encrypted.is_ok() && decrypts(kms, blob).await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the gateway did not recover within 30 s (last Encrypt: {encrypted:?}); its log:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_errors_are_retryable_and_the_gateway_recovers() {
    let gw = Gateway::start_faulty_on(Token::with_faulty_hsm(HSM, ""));
    let faults = gw.faults();
    let kms = gw.client();
    let key = create_key(&kms).await;
    let sealed = encrypt(&kms, &key).await.unwrap();

    faults.set("C_Encrypt fail 0x30 forever");
    let r = encrypt_x(&kms, &key).await;
    assert_eq!(assert_retryable("Encrypt", &r).0, 500);
    let r = kms
        .generate_data_key()
        .key_id(&key)
        .number_of_bytes(32)
        .send()
        .await;
    assert_eq!(assert_retryable("GenerateDataKey", &r).0, 500);
    // Metadata does not need the token.
    key_metadata(&kms, &key).await;

    faults.set("C_Decrypt fail 0x30 forever");
    let r = kms.decrypt().ciphertext_blob(sealed.clone()).send().await;
    assert_eq!(assert_retryable("Decrypt", &r).0, 500);

    faults.clear();
    wait_until_served(&gw, &key, &sealed).await;
    assert!(faults.count("fail C_Encrypt 0x30") >= 2, "{}", faults.log());
    assert!(faults.count("fail C_Decrypt 0x30") >= 1, "{}", faults.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn general_error_at_decrypt_is_never_an_invalid_ciphertext() {
    let gw = Gateway::start_faulty_on(Token::with_faulty_hsm(HSM, ""));
    let faults = gw.faults();
    let kms = gw.client();
    let key = create_key(&kms).await;
    let sealed = encrypt(&kms, &key).await.unwrap();

    // One CKR_GENERAL_ERROR: the retry decrypts.
    faults.set("C_Decrypt fail 0x5 once");
    assert!(decrypts(&kms, &sealed).await, "{}", faults.log());
    assert_eq!(faults.count("fail C_Decrypt 0x5"), 1, "{}", faults.log());

    // Every call fails: a device fault, never the ciphertext's fault.
    faults.set("C_Decrypt fail 0x5 forever");
    for _ in 0..3 {
        let r = kms.decrypt().ciphertext_blob(sealed.clone()).send().await;
        let (status, code) = assert_retryable("Decrypt", &r);
        assert_ne!(code, "InvalidCiphertextException");
        assert!(status >= 500, "{status} {code}");
    }
    faults.clear();
    wait_until_served(&gw, &key, &sealed).await;

    // A ciphertext that really is bad is still InvalidCiphertextException
    // (SoftHSM2 reports its bad tag with CKR_GENERAL_ERROR too).
    let mut bad = sealed.into_inner();
    *bad.last_mut().unwrap() ^= 1;
    let r = kms.decrypt().ciphertext_blob(Blob::new(bad)).send().await;
    assert_eq!(outcome(&r), (400, "InvalidCiphertextException".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_call_times_out_and_other_work_is_still_served() {
    let gw = Gateway::start_faulty_on(Token::with_faulty_hsm(HSM, ""));
    let faults = gw.faults();
    let kms = gw.client();
    let key = create_key(&kms).await;
    let other = create_key(&kms).await;
    let sealed = encrypt(&kms, &other).await.unwrap();

    faults.set("C_Encrypt stall forever");
    let start = Instant::now();
    let r = encrypt_x(&kms, &key).await;
    let waited = start.elapsed();
    assert_eq!(
        outcome(&r),
        (500, "DependencyTimeoutException".to_owned()),
        "{}",
        faults.log()
    );
    // The deadline is 1 s; allow for a loaded machine, never a hang.
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    eprintln!("longest wait with the token stalled: {waited:?}");

    // The stuck session is not reused; the other one serves everything
    // that does not need C_Encrypt, at normal latency.
    for _ in 0..5 {
        let start = Instant::now();
        assert!(decrypts(&kms, &sealed).await);
        kms.generate_random()
            .number_of_bytes(16)
            .send()
            .await
            .unwrap();
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    faults.clear();
    wait_until_served(&gw, &key, &sealed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_error_reinitialises_the_library_and_service_resumes() {
    let gw = Gateway::start_faulty_on(Token::with_faulty_hsm(HSM, ""));
    let faults = gw.faults();
    let kms = gw.client();
    let key = create_key(&kms).await;
    let sealed = encrypt(&kms, &key).await.unwrap();
    let before = faults.count("call C_Finalize");

    // The device goes away for 1.5 s: every call fails with
    // CKR_DEVICE_REMOVED, including those of the re-initialisation.
    faults.set("* fail 0x32 for 1500ms");
    for _ in 0..3 {
        let r = encrypt_x(&kms, &key).await;
        assert_retryable("Encrypt", &r);
        let r = kms.decrypt().ciphertext_blob(sealed.clone()).send().await;
        assert_retryable("Decrypt", &r);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = wait_until_served(&gw, &key, &sealed).await;
    eprintln!("service resumed {took:?} after the fault window's last check");
    // The read-back helper is a process of its own that loads the rule
    // afresh (a new window) whenever it restarts: end the fault for good.
    faults.clear();
    assert!(
        faults.count("call C_Finalize") > before,
        "no re-initialisation:\n{}",
        faults.log()
    );
    assert!(gw.log().contains("PKCS#11 library re-initialised"));
    // Handles were renumbered by the re-initialisation: keys made before
    // and after both work, and nothing was lost.
    let fresh = create_key(&kms).await;
    encrypt(&kms, &fresh).await.unwrap();
    assert_eq!(
        key_metadata(&kms, &key).await.key_state.unwrap().as_str(),
        "Enabled"
    );
}

/// The status `/readyz` answers.
pub(crate) fn readyz(gw: &Gateway) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(&gw.addr).unwrap();
    s.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Polls `/readyz` until it answers `want`.
async fn wait_for_readyz(gw: &Gateway, want: u16) {
    let start = Instant::now();
    while readyz(gw) != want {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "/readyz never answered {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Breaks the real token's storage under a running gateway with `fault`,
/// checks that no answer is a client error meanwhile, repairs it with
/// `repair` and checks that service resumes with nothing lost.
async fn survives_storage_fault(fault: impl FnOnce(&Gateway), repair: impl FnOnce(&Gateway)) {
    let token = Token::with_config("[keys]\nsync_interval_ms = 200\n");
    let gw = Gateway::start_on(token.clone());
    // Each attempt gives up after 2 s: a fault that leaves the gateway no
    // descriptor to accept a new connection with (the fd limit) must not
    // hang a client whose kept-alive connection was dropped meanwhile; no
    // answer at all counts as a fault (status 0).
    let kms = {
        let timeouts = aws_sdk_kms::config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(Duration::from_secs(2))
            .build();
        aws_sdk_kms::Client::from_conf(
            gw.client()
                .config()
                .to_builder()
                .timeout_config(timeouts)
                .build(),
        )
    };
    let key = create_key(&kms).await;
    kms.create_alias()
        .alias_name("alias/kept")
        .target_key_id(&key)
        .send()
        .await
        .unwrap();
    let sealed = encrypt(&kms, &key).await.unwrap();

    fault(&gw);
    let mut faults_seen = 0;
    let mut acked = Vec::new();
    for round in 0..4 {
        let r = encrypt_x(&kms, &key).await;
        faults_seen += usize::from(assert_retryable("Encrypt", &r).0 != 200);
        let r = kms
            .generate_data_key()
            .key_id("alias/kept")
            .number_of_bytes(32)
            .send()
            .await;
        faults_seen += usize::from(assert_retryable("GenerateDataKey", &r).0 != 200);
        let r = kms.decrypt().ciphertext_blob(sealed.clone()).send().await;
        faults_seen += usize::from(assert_retryable("Decrypt", &r).0 != 200);
        let r = kms.describe_key().key_id(&key).send().await;
        faults_seen += usize::from(assert_retryable("DescribeKey", &r).0 != 200);
        // A name this gateway never saw is looked up on the token. It does
        // not exist, so NotFoundException is right if the token can still
        // list (SoftHSM2 out of fds answers from memory); a listing it
        // cannot prove healthy (storage gone) is a retryable error.
        let r = kms
            .describe_key()
            .key_id(format!("alias/unknown-{round}"))
            .send()
            .await;
        if outcome(&r).1 != "NotFoundException" {
            faults_seen += usize::from(assert_retryable("DescribeKey(unknown)", &r).0 != 200);
        }
        // A write needs the storage: refused, or done for good.
        let name = format!("alias/during-{round}");
        let r = kms
            .create_alias()
            .alias_name(&name)
            .target_key_id(&key)
            .send()
            .await;
        match assert_retryable("CreateAlias", &r).0 {
            200 => acked.push(name),
            _ => faults_seen += 1,
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(faults_seen > 0, "the fault had no effect at all");
    repair(&gw);
    wait_until_served(&gw, &key, &sealed).await;
    assert_eq!(key_metadata(&kms, "alias/kept").await.key_id, key);
    for name in &acked {
        assert_eq!(key_metadata(&kms, name).await.key_id, key);
    }
    let r = kms.describe_key().key_id("alias/unknown-0").send().await;
    assert_eq!(outcome(&r).1, "NotFoundException");
    drop(gw);
    let (ok, out, err) =
        token.run_cli(&["check-keys", "--config", &token.config().to_string_lossy()]);
    assert!(ok, "{out}\n{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_directory_moved_away_and_back() {
    let moved = |gw: &Gateway| {
        assert_eq!(readyz(gw), 200);
        let dir = gw.token.path().join("tokens");
        std::fs::rename(&dir, gw.token.path().join("tokens.away")).unwrap();
    };
    let back = |gw: &Gateway| {
        std::fs::rename(
            gw.token.path().join("tokens.away"),
            gw.token.path().join("tokens"),
        )
        .unwrap();
    };
    survives_storage_fault(moved, back).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_token() {
    let token = Token::with_config("[keys]\nsync_interval_ms = 100\n");
    let gw = Gateway::start_on(token.clone());
    assert_eq!(readyz(&gw), 200);
    std::fs::rename(
        token.path().join("tokens"),
        token.path().join("tokens.away"),
    )
    .unwrap();
    wait_for_readyz(&gw, 503).await;
    std::fs::rename(
        token.path().join("tokens.away"),
        token.path().join("tokens"),
    )
    .unwrap();
    wait_for_readyz(&gw, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_descriptor_limit_reached() {
    fn limit(gw: &Gateway, n: usize) {
        let ok = std::process::Command::new("prlimit")
            .args(["--pid", &gw.pid().to_string(), &format!("--nofile={n}:")])
            .status()
            .unwrap()
            .success();
        assert!(ok, "prlimit failed");
    }
    // No fd left to open: what the gateway has open stays open.
    let fds = |gw: &Gateway| {
        std::fs::read_dir(format!("/proc/{}/fd", gw.pid()))
            .unwrap()
            .count()
    };
    survives_storage_fault(|gw| limit(gw, fds(gw)), |gw| limit(gw, 4096)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_failing_its_scheduled_rotation_never_blocks_the_others() {
    let token = Token::with_faulty_hsm(
        HSM,
        "[keys]\nscheduler_interval_ms = 100\nsync_interval_ms = 100\n",
    );
    let gw = Gateway::start_faulty_on(token.clone());
    let faults = gw.faults();
    let kms = gw.client();
    let mut keys = Vec::new();
    for _ in 0..3 {
        let key = create_key(&kms).await;
        kms.enable_key_rotation().key_id(&key).send().await.unwrap();
        keys.push(key);
    }
    // Every key version the scheduler tries to make fails for 2 s, and the
    // rotations are all due at once.
    faults.set("C_GenerateKey fail 0x30 for 2s");
    token.set_clock_days_ahead(400);

    // Each key's failure is logged in the same round: none waits behind
    // the first one that failed.
    let start = Instant::now();
    loop {
        let log = gw.log();
        let failed: Vec<bool> = keys
            .iter()
            .map(|k| {
                log.lines().any(|l| {
                    l.contains("scheduled work failed for this key") && l.contains(k.as_str())
                })
            })
            .collect();
        if failed.iter().all(|f| *f) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "not every key was tried while the token refused: {failed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // After the fault, each key is retried (with backoff) and rotates once.
    let start = Instant::now();
    for key in &keys {
        loop {
            let rotations = kms
                .list_key_rotations()
                .key_id(key)
                .send()
                .await
                .unwrap()
                .rotations
                .unwrap_or_default();
            if !rotations.is_empty() {
                assert_eq!(rotations.len(), 1, "{key} rotated more than once");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{key} was never rotated after the fault"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
