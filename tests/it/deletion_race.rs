//! Black-box specification of the end of a key's waiting period when
//! several gateways share the token: CancelKeyDeletion through one gateway
//! against the scheduler of another, a destruction cut short by a crash,
//! and CancelKeyDeletion once the deletion date has passed.
//!
//! Gateway A (where the clients cancel) reads a clock of its own that lags
//! the token's test clock, as a second machine's clock may: for A no
//! deletion is due, so A refuses no cancel by the date and its scheduler
//! destroys nothing by the date. Gateway B reads the token's clock, moved
//! past the deletion date, and its scheduler destroys due keys. Only the
//! commit protocol can then decide between them. faulty-pkcs11 stalls B's
//! C_DestroyObject calls, which widens the window between B deciding to
//! destroy and B destroying.

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::KeyState;

use crate::common::*;
use crate::lifecycle::eventually;

/// Fast background work on both gateways.
const FAST: &str = "[keys]\nsync_interval_ms = 100\nscheduler_interval_ms = 100\n";

/// Gateway A: faulty-pkcs11 with a control file of its own (no rules unless
/// a test writes one) and a clock of its own (the system time unless a
/// test writes an offset).
fn start_lagging(token: &std::sync::Arc<Token>) -> Gateway {
    let clock = lagging_clock(token).display().to_string();
    let control = token.path().join("faults-a").display().to_string();
    Gateway::start_faulty_on_with_env(
        token.clone(),
        &[
            ("KMSGATE_TEST_CLOCK_OFFSET_FILE", clock.as_str()),
            ("FAULTY_PKCS11_CONTROL", control.as_str()),
        ],
    )
}

fn lagging_clock(token: &Token) -> PathBuf {
    token.path().join("clock-a")
}

/// Replaces the scheduler interval in the token's config, for gateways
/// started after this.
fn set_scheduler_interval(token: &Token, ms: u64) {
    let config = std::fs::read_to_string(token.config()).unwrap();
    let line = config
        .lines()
        .find(|l| l.starts_with("scheduler_interval_ms"))
        .expect("the config sets scheduler_interval_ms")
        .to_owned();
    std::fs::write(
        token.config(),
        config.replacen(&line, &format!("scheduler_interval_ms = {ms}"), 1),
    )
    .unwrap();
}

async fn schedule_deletion(kms: &aws_sdk_kms::Client, id: &str) {
    kms.schedule_key_deletion()
        .key_id(id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
}

/// Whether DescribeKey answers NotFoundException for `id`.
async fn not_found(kms: &aws_sdk_kms::Client, id: &str) -> bool {
    kms.describe_key()
        .key_id(id)
        .send()
        .await
        .is_err_and(|e| error_of(&e).0 == "NotFoundException")
}

/// The key was cancelled: after B's scheduler has had every chance to act,
/// it is Disabled on both gateways, and once enabled it encrypts and
/// decrypts its old ciphertext through both.
async fn assert_usable_everywhere(
    round: usize,
    gateways: [&aws_sdk_kms::Client; 2],
    id: &str,
    blob: &Blob,
) {
    // Several rounds of B's scheduler, and a destruction stalled at
    // 300 ms a call has finished.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for kms in gateways {
        let state = kms
            .describe_key()
            .key_id(id)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "round {round}: cancel acknowledged, but DescribeKey says {:?}",
                    error_of(&e)
                )
            })
            .key_metadata
            .unwrap()
            .key_state;
        assert_eq!(state, Some(KeyState::Disabled), "round {round}");
    }
    gateways[0].enable_key().key_id(id).send().await.unwrap();
    for kms in gateways {
        eventually(Duration::from_secs(5), || {
            let kms = kms.clone();
            async move {
                kms.encrypt()
                    .key_id(id)
                    .plaintext(Blob::new("again"))
                    .send()
                    .await
                    .is_ok()
            }
        })
        .await;
        let plain = kms
            .decrypt()
            .ciphertext_blob(blob.clone())
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "round {round}: cancel acknowledged, but the old ciphertext: {:?}",
                    error_of(&e)
                )
            })
            .plaintext
            .unwrap();
        assert_eq!(plain.as_ref(), b"before the deadline", "round {round}");
    }
}

/// The cancel was refused: the key is destroyed, and gone through both
/// gateways with its ciphertexts.
async fn assert_gone_everywhere(
    round: usize,
    gateways: [&aws_sdk_kms::Client; 2],
    id: &str,
    blob: &Blob,
) {
    for kms in gateways {
        eventually(Duration::from_secs(15), || not_found(kms, id)).await;
        let e = kms
            .decrypt()
            .ciphertext_blob(blob.clone())
            .send()
            .await
            .unwrap_err();
        assert_eq!(error_of(&e).0, "AccessDeniedException", "round {round}");
    }
}

#[tokio::test]
async fn cancel_through_one_gateway_against_anothers_scheduler_either_keeps_the_key_or_is_refused()
{
    let token = Token::with_faulty_config(FAST);
    let a = start_lagging(&token);
    let b = Gateway::start_faulty_on(token.clone());
    let (ka, kb) = (a.client(), b.client());
    token.set_clock_days_ahead(8);
    let faults = token.faults();
    faults.set("C_DestroyObject stall 300ms forever");

    let (mut kept, mut refused) = (0, 0);
    for round in 0..12 {
        let id = create_key(&ka).await;
        let blob = encrypt(&ka, &id, b"before the deadline").await;
        let stalls = faults.count("stall C_DestroyObject");
        schedule_deletion(&ka, &id).await;
        match round % 3 {
            // Before B can have noticed the schedule.
            0 => {}
            // Somewhere around B's next sync and scheduler rounds.
            1 => tokio::time::sleep(Duration::from_millis(60 + 40 * round as u64)).await,
            // While B is destroying: stalled in its first C_DestroyObject.
            _ => {
                let seen = faults.wait_for_count(
                    "stall C_DestroyObject",
                    stalls + 1,
                    Duration::from_secs(15),
                );
                assert!(seen > stalls, "round {round}: B never began to destroy");
            }
        }
        match ka.cancel_key_deletion().key_id(&id).send().await {
            Ok(_) => {
                kept += 1;
                assert_usable_everywhere(round, [&ka, &kb], &id, &blob).await;
            }
            Err(e) => {
                let (kind, message) = error_of(&e);
                assert!(
                    kind == "KMSInvalidStateException" || kind == "NotFoundException",
                    "round {round}: {kind}: {message}"
                );
                refused += 1;
                assert_gone_everywhere(round, [&ka, &kb], &id, &blob).await;
            }
        }
    }
    faults.clear();
    eprintln!("cancels: {kept} kept the key, {refused} refused");
    assert!(kept > 0 && refused > 0, "kept {kept}, refused {refused}");
}

#[tokio::test]
async fn a_destruction_cut_short_by_a_crash_is_never_served_and_is_finished_by_another_gateway() {
    let token = Token::with_faulty_config(FAST);
    let b = Gateway::start_faulty_on(token.clone());
    // A only serves: its scheduler runs once, at its start.
    set_scheduler_interval(&token, 600_000);
    let a = start_lagging(&token);
    let ka = a.client();
    let id = create_key(&ka).await;
    let kept = create_key(&ka).await;
    let blob = encrypt(&ka, &id, b"doomed").await;
    ka.create_alias()
        .alias_name("alias/doomed")
        .target_key_id(&id)
        .send()
        .await
        .unwrap();
    schedule_deletion(&ka, &id).await;

    // B decides to destroy the key and is killed at its first removal.
    let faults = token.faults();
    faults.set("C_DestroyObject stall forever");
    token.set_clock_days_ahead(8);
    let seen = faults.wait_for_count("stall C_DestroyObject", 1, Duration::from_secs(15));
    assert_eq!(seen, 1, "B never began to destroy");
    b.crash();
    faults.clear();

    // Through A, whose clock says the date has not come: pending deletion,
    // never usable, and no longer recoverable.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = key_metadata(&ka, &id).await;
    assert_eq!(m.key_state, Some(KeyState::PendingDeletion));
    let pending = (
        "KMSInvalidStateException".to_owned(),
        format!("{} is pending deletion.", key_arn(&id)),
    );
    let e = ka
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), pending);
    let e = ka
        .decrypt()
        .ciphertext_blob(blob.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), pending);
    let e = ka
        .cancel_key_deletion()
        .key_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "KMSInvalidStateException".to_owned(),
            format!(
                "{} is being deleted: its waiting period has ended.",
                key_arn(&id)
            )
        )
    );

    // Nor does it take any other change (PutKeyPolicy is allowed on a key
    // pending deletion whose destruction has not begun).
    let policy = ka
        .get_key_policy()
        .key_id(&id)
        .send()
        .await
        .unwrap()
        .policy
        .unwrap();
    let e = ka
        .put_key_policy()
        .key_id(&id)
        .policy(policy)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), pending);

    // The next gateway's scheduler finishes the destruction, though its
    // clock lags too.
    set_scheduler_interval(&token, 100);
    let c = start_lagging(&token);
    let kc = c.client();
    for kms in [&ka, &kc] {
        eventually(Duration::from_secs(15), || not_found(kms, &id)).await;
        let e = kms
            .decrypt()
            .ciphertext_blob(blob.clone())
            .send()
            .await
            .unwrap_err();
        assert_eq!(error_of(&e).0, "AccessDeniedException");
        let e = kms
            .describe_key()
            .key_id("alias/doomed")
            .send()
            .await
            .unwrap_err();
        assert_eq!(error_of(&e).0, "NotFoundException");
    }
    // On the token: no object of the key is left, and the other key's are.
    let objects = list_objects(&token);
    assert!(objects.contains(&kept), "{objects}");
    assert!(
        !objects.contains(&id),
        "objects of the key remain:\n{objects}"
    );
}

#[tokio::test]
async fn cancel_after_the_deletion_date_is_refused_even_before_the_scheduler_ran() {
    let token = Token::with_config("[keys]\nscheduler_interval_ms = 600000\n");
    let gw = Gateway::start_on(token.clone());
    let kms = gw.client();
    let id = create_key(&kms).await;
    schedule_deletion(&kms, &id).await;
    let date = key_metadata(&kms, &id).await.deletion_date;
    token.set_clock_days_ahead(8);

    let e = kms
        .cancel_key_deletion()
        .key_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "KMSInvalidStateException".to_owned(),
            format!(
                "{} is being deleted: its waiting period has ended.",
                key_arn(&id)
            )
        )
    );
    // Nothing changed: still pending deletion, on the same date, unusable.
    let m = key_metadata(&kms, &id).await;
    assert_eq!(m.key_state, Some(KeyState::PendingDeletion));
    assert_eq!(m.deletion_date, date);
    let e = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "KMSInvalidStateException");

    // Before its date the same cancel is accepted.
    let other = create_key(&kms).await;
    schedule_deletion(&kms, &other).await;
    kms.cancel_key_deletion()
        .key_id(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(
        key_metadata(&kms, &other).await.key_state,
        Some(KeyState::Disabled)
    );
}
