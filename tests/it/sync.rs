//! How fast a gateway sees what another gateway on the same token changed
//! (src/keystore/sync.rs): within a sync interval or two, even when one
//! sync round fails half-way or moving the change marker after a change
//! fails.

use std::time::{Duration, Instant};

use crate::common::*;

/// The description `gateway` answers for `key_id`.
async fn description(gateway: &Gateway, key_id: &str) -> String {
    key_metadata(&gateway.client(), key_id)
        .await
        .description
        .unwrap_or_default()
}

/// Whether `gateway` answers `want` as the key's description within
/// `limit`.
async fn seen_within(gateway: &Gateway, key_id: &str, want: &str, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if description(gateway, key_id).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn a_sync_round_whose_record_read_fails_does_not_hide_the_change_until_the_full_relist() {
    // Both gateways load faulty-pkcs11, but only the second obeys the
    // token's control file: the first is pointed at one that never exists.
    let token = Token::faulty();
    let first = Gateway::start_faulty_on_with_env(
        token.clone(),
        &[
            (
                "FAULTY_PKCS11_CONTROL",
                &token.path().join("no-faults").display().to_string(),
            ),
            (
                "FAULTY_PKCS11_LOG",
                &token.path().join("first-faults.log").display().to_string(),
            ),
        ],
    );
    let second = Gateway::start_faulty_on(token.clone());
    let faults = second.faults();

    let key_id = create_key(&first.client()).await;
    // The second gateway caches the key, and its sync rounds (one a second
    // by default) settle after the creation.
    assert_eq!(description(&second, &key_id).await, "");
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // Hold the second gateway's next full sync where it has listed the
    // change markers (the first C_FindObjectsFinal of the round; quiet
    // rounds read one label and list nothing).
    faults.set("C_FindObjectsFinal stall once");
    first
        .client()
        .update_key_description()
        .key_id(&key_id)
        .description("changed through the first gateway")
        .send()
        .await
        .unwrap();
    assert_eq!(
        faults.wait_for_count("stall C_FindObjectsFinal", 1, Duration::from_secs(10)),
        1,
        "{}",
        faults.log()
    );
    // Released: the round reads the marker's label (cryptoki asks
    // C_GetAttributeValue twice, for the lengths and then the values: both
    // let through), lists the records, and then its first read of a
    // record's label and value fails.
    faults.set(
        "C_GetAttributeValue stall 1ms once\n\
         C_GetAttributeValue stall 1ms once\n\
         C_GetAttributeValue fail 0x30 once",
    );
    assert_eq!(
        faults.wait_for_count("fail C_GetAttributeValue", 1, Duration::from_secs(10)),
        1,
        "{}",
        faults.log()
    );
    faults.clear();
    assert!(
        second.log_has(|l| l.contains("sync with the token failed")),
        "the round failed"
    );

    // The next rounds pick the change up: a failed round must not count as
    // having seen it (before: it showed only at the next full sync, ~60 s
    // on).
    assert!(
        seen_within(
            &second,
            &key_id,
            "changed through the first gateway",
            Duration::from_secs(5),
        )
        .await,
        "the second gateway still answers the old description 5 s after a failed sync round"
    );
}

/// Config for the principal `other` (signing with [`OTHER_KEY`]), whose
/// identity policy allows nothing it asks for here: only a grant lets it
/// encrypt.
fn other_config() -> String {
    format!(
        r#"
[[auth.credentials]]
access_key_id = "{OTHER_KEY}"
secret_env = "KMSGATE_TEST_OTHER_SECRET"
principal = "other"

[[auth.principals]]
name = "other"
policies = ['{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"kms:ListKeys","Resource":"*"}}]}}']
"#
    )
}

/// Encrypts a byte under `key_id` as `client`; the error code if refused.
async fn encrypt_code(client: &aws_sdk_kms::Client, key_id: &str) -> Result<(), String> {
    client
        .encrypt()
        .key_id(key_id)
        .plaintext(aws_sdk_kms::primitives::Blob::new(b"x".to_vec()))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| error_of(&e).0)
}

/// Two gateways on one faulty-pkcs11 token, of which only the first obeys
/// the token's control file, a key made through the first with a grant
/// that lets `other` encrypt, and `other` as a client of the second, which
/// has served it; both gateways' sync rounds (one a second) have settled.
struct Granted {
    first: Gateway,
    second: Gateway,
    grantee: aws_sdk_kms::Client,
    key_id: String,
    grant_id: String,
}

async fn two_gateways_and_a_grant() -> Granted {
    let token = Token::with_faulty_config(&other_config());
    let secret = ("KMSGATE_TEST_OTHER_SECRET", OTHER_SECRET);
    let first = Gateway::start_faulty_on_with_env(token.clone(), &[secret]);
    let second = Gateway::start_faulty_on_with_env(
        token.clone(),
        &[
            (
                "FAULTY_PKCS11_CONTROL",
                &token.path().join("no-faults").display().to_string(),
            ),
            (
                "FAULTY_PKCS11_LOG",
                &token.path().join("second-faults.log").display().to_string(),
            ),
            secret,
        ],
    );
    let grantee = second.client_as(OTHER_KEY, OTHER_SECRET, REGION);
    let key_id = create_key(&first.client()).await;
    let grant_id = first
        .client()
        .create_grant()
        .key_id(&key_id)
        .grantee_principal(format!("arn:aws:iam::{ACCOUNT}:user/other"))
        .operations(aws_sdk_kms::types::GrantOperation::Encrypt)
        .send()
        .await
        .unwrap()
        .grant_id
        .unwrap();
    assert_eq!(encrypt_code(&grantee, &key_id).await, Ok(()));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(encrypt_code(&grantee, &key_id).await, Ok(()));
    Granted {
        first,
        second,
        grantee,
        key_id,
        grant_id,
    }
}

impl Granted {
    /// Revokes the grant through the first gateway.
    async fn revoke(&self) {
        self.first
            .client()
            .revoke_grant()
            .key_id(&self.key_id)
            .grant_id(&self.grant_id)
            .send()
            .await
            .unwrap();
    }
}

/// Asserts that `grantee` is refused Encrypt under `key_id` within 5 s.
async fn assert_refused_within_seconds(grantee: &aws_sdk_kms::Client, key_id: &str) {
    let started = Instant::now();
    let mut last = encrypt_code(grantee, key_id).await;
    while last.is_ok() && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = encrypt_code(grantee, key_id).await;
    }
    assert_eq!(
        last,
        Err("AccessDeniedException".to_owned()),
        "the revoked grant still served through the second gateway after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_change_whose_marker_move_failed_is_still_seen_by_the_other_gateway_within_seconds() {
    let g = two_gateways_and_a_grant().await;
    let faults = g.first.faults();
    // Moving the change marker after the revoke (its label set by
    // C_SetAttributeValue, the only call that sets an attribute) fails
    // once.
    faults.set("C_SetAttributeValue fail 0x30 once");
    g.revoke().await;
    assert_eq!(
        faults.wait_for_count("fail C_SetAttributeValue", 1, Duration::from_secs(5)),
        1,
        "{}",
        faults.log()
    );
    assert!(
        g.first
            .log_has(|l| l.contains("could not move the change marker")),
        "the marker move failed"
    );
    // Before: honoured through the second gateway until its full sync, up
    // to 60 s on.
    assert_refused_within_seconds(&g.grantee, &g.key_id).await;
    assert!(
        g.first
            .log_has(|l| l.contains("change marker moved after an earlier failure")),
        "the first gateway's sync round moved the marker it owed"
    );
}

#[tokio::test]
async fn a_gateway_that_stops_moves_the_change_marker_it_owes() {
    let g = two_gateways_and_a_grant().await;
    let faults = g.first.faults();
    // The revoke's marker move fails, and the first gateway is stopped at
    // once, before a timed sync round can move the marker.
    faults.set("C_SetAttributeValue fail 0x30 once");
    g.revoke().await;
    let Granted {
        first,
        second,
        grantee,
        key_id,
        ..
    } = g;
    first.stop();
    assert_eq!(
        faults.count("fail C_SetAttributeValue"),
        1,
        "{}",
        faults.log()
    );
    // Before: honoured through the second gateway until its full sync, up
    // to 60 s on.
    assert_refused_within_seconds(&grantee, &key_id).await;
    drop(second);
}

/// `kmsgate serve --workers 2` on a token made by
/// [`Token::with_faulty_config`]: both workers obey its control file. The
/// supervisor is killed when dropped, and its workers stop when their
/// control channel closes.
struct Supervisor(std::process::Child);

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The audit records of `operation` in the audit file at `path`.
fn audited(path: &std::path::Path, operation: &str) -> usize {
    let quoted = format!("\"{operation}\"");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&quoted))
        .count()
}

#[tokio::test]
async fn a_worker_relists_when_another_worker_could_not_move_the_change_marker() {
    let token = Token::with_faulty_config(&other_config());
    let audit = token.path().join("audit.jsonl");
    let mut config = std::fs::read_to_string(token.config()).unwrap();
    config.push_str(&format!("\n[audit]\npath = \"{}\"\n", audit.display()));
    std::fs::write(token.config(), config).unwrap();
    let mut env = token.faulty_env();
    env.push(("KMSGATE_TEST_OTHER_SECRET".into(), OTHER_SECRET.into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let log = token.path().join("supervisor.log");
    let (child, endpoint) = spawn_serve(
        &token,
        &["--workers", "2"],
        &env,
        &log,
        Duration::from_secs(60),
    );
    let _supervisor = Supervisor(child);
    // Each request on a client of its own, so on a connection of its own,
    // which either worker may accept.
    let admin = || client_at(&endpoint, ACCESS_KEY, SECRET, REGION);
    let grantee = || client_at(&endpoint, OTHER_KEY, OTHER_SECRET, REGION);
    let workers = [
        audit.with_extension("jsonl.w1"),
        audit.with_extension("jsonl.w2"),
    ];
    let faults = token.faults();

    let key_id = create_key(&admin()).await;
    let grant_id = admin()
        .create_grant()
        .key_id(&key_id)
        .grantee_principal(format!("arn:aws:iam::{ACCOUNT}:user/other"))
        .operations(aws_sdk_kms::types::GrantOperation::Encrypt)
        .send()
        .await
        .unwrap()
        .grant_id
        .unwrap();
    // Both workers serve the grantee, so both have the grant cached.
    let mut requests = 0;
    while requests < 200 && workers.iter().any(|w| audited(w, "Encrypt") == 0) {
        assert_eq!(encrypt_code(&grantee(), &key_id).await, Ok(()));
        requests += 1;
    }
    let before: Vec<usize> = workers.iter().map(|w| audited(w, "Encrypt")).collect();
    assert!(
        before.iter().all(|n| *n > 0),
        "after {requests} connections both workers served the grantee: {before:?}"
    );
    // Both workers' timed sync rounds (one a second) read the marker as
    // the last change left it: it is no news to either of them any more.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // The grant is revoked through one worker, whose moves of the change
    // marker (C_SetAttributeValue) fail for a while: its first, and those
    // its sync rounds retry.
    faults.set("C_SetAttributeValue fail 0x30 for 8s");
    let revoked = Instant::now();
    admin()
        .revoke_grant()
        .key_id(&key_id)
        .grant_id(&grant_id)
        .send()
        .await
        .unwrap();
    assert!(
        faults.wait_for_count("fail C_SetAttributeValue", 1, Duration::from_secs(5)) >= 1,
        "{}",
        faults.log()
    );

    // Refused at once by both workers (before: the other worker caught up
    // on the unmoved marker, read nothing and served the revoked grant).
    let mut requests = 0;
    while requests < 200
        && workers
            .iter()
            .zip(&before)
            .any(|(w, n)| audited(w, "Encrypt") == *n)
    {
        assert_eq!(
            encrypt_code(&grantee(), &key_id).await,
            Err("AccessDeniedException".to_owned()),
            "request {requests} after the RevokeGrant"
        );
        requests += 1;
    }
    let after: Vec<usize> = workers.iter().map(|w| audited(w, "Encrypt")).collect();
    assert!(
        after.iter().zip(&before).all(|(a, b)| a > b),
        "after {requests} connections both workers answered the grantee again: {before:?} -> {after:?}"
    );
    // All of it while the marker could not be moved.
    assert!(
        revoked.elapsed() < Duration::from_secs(6),
        "the checks took {:?}: past the fault's window",
        revoked.elapsed()
    );
    // Once the fault is over, the revoking worker moves the marker it owes.
    faults.clear();
    let moved = |l: &str| l.contains("change marker moved after an earlier failure");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10)
        && !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(moved)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(moved),
        "the owed marker move was made"
    );
}
