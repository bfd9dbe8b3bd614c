//! Black-box specification of the key lifecycle: versions and rotation, the
//! GCM usage bound, deletion at the end of the waiting period, and several
//! gateways sharing one token. Dates are moved with the gateways' test
//! clock, never waited for.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::common::*;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{IncludeKeyMaterial, KeyState, RotationType};

/// Fast background work, so that tests see due work within a second.
const FAST: &str = "[keys]\nsync_interval_ms = 100\nscheduler_interval_ms = 100\n";

async fn encrypt(kms: &aws_sdk_kms::Client, key: &str, text: &str) -> (Blob, String) {
    let out = kms
        .encrypt()
        .key_id(key)
        .plaintext(Blob::new(text))
        .encryption_context("case", text)
        .send()
        .await
        .unwrap();
    let blob = out.ciphertext_blob.unwrap();
    // Encrypt's response has no KeyMaterialId in the service model; Decrypt's does.
    let back = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .encryption_context("case", text)
        .send()
        .await
        .unwrap();
    (
        blob,
        back.key_material_id
            .expect("Decrypt names the key material"),
    )
}

async fn decrypts(kms: &aws_sdk_kms::Client, blob: &Blob, text: &str) {
    let out = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .encryption_context("case", text)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{text}: {:?}", error_of(&e)));
    assert_eq!(out.plaintext.unwrap().as_ref(), text.as_bytes());
}

async fn current_material(kms: &aws_sdk_kms::Client, key: &str) -> String {
    key_metadata(kms, key)
        .await
        .current_key_material_id
        .unwrap()
}

/// Polls `check` until it answers true or `limit` passes; returns how long
/// it took.
pub(crate) async fn eventually<F, Fut>(limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sets the gateways' test clock `days` ahead of the system time
/// (fractions of a day too).
fn set_clock(token: &Token, days: f64) {
    std::fs::write(token.clock_file(), (days * 86_400.0).to_string()).unwrap();
}

/// Whether `log` reports a scheduler round that destroyed or rotated `key`.
fn round_did(log: &str, key: &str) -> bool {
    log.lines()
        .any(|l| l.contains("scheduled work done") && l.contains(key))
}

/// The control that makes the absence of due work meaningful: returns
/// once a scheduler round of `gw` that began with the test clock at least
/// `days` ahead has ended, and leaves the clock `days` + 0.5 ahead.
///
/// Two control keys are scheduled for deletion, due at `days` and at
/// `days` + 0.3 (the clock is set to `days` - 7 for that, so it must not
/// be past it). The clock moves to `days` + 0.1, where the first falls
/// due, and once the round that destroyed it has ended (its "scheduled
/// work done" line), to `days` + 0.5, where the second does. The round
/// that destroys the second began after the first one's ended, so with
/// the clock at `days` + 0.1 at least, and it looked at every key. If the
/// scheduler does not run, this fails.
async fn a_whole_round_at(gw: &Gateway, days: f64) {
    let kms = gw.client();
    let mut controls = Vec::new();
    for offset in [0.0, 0.3] {
        set_clock(&gw.token, days - 7.0 + offset);
        let id = create_key(&kms).await;
        kms.schedule_key_deletion()
            .key_id(&id)
            .pending_window_in_days(7)
            .send()
            .await
            .unwrap();
        controls.push(id);
    }
    for (id, at) in controls.iter().zip([days + 0.1, days + 0.5]) {
        set_clock(&gw.token, at);
        eventually(Duration::from_secs(10), || {
            let done = round_did(&gw.log(), id);
            async move { done }
        })
        .await;
    }
}

/// The gateway log's "scheduler round ended" lines (debug, from
/// `kmsgate::server`), per process: `n` is the worker's number, 0 for a
/// gateway of its own.
pub(crate) fn rounds_ended(log: &str) -> std::collections::BTreeMap<usize, usize> {
    let mut ended = std::collections::BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("scheduler round ended")) {
        let worker = line
            .split("worker{n=")
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        *ended.entry(worker).or_default() += 1;
    }
    ended
}

/// The log filter under which gateways write [`rounds_ended`]'s lines.
pub(crate) const ROUND_LOG: (&str, &str) = ("KMSGATE_LOG", "info,kmsgate::server=debug");

/// Returns once each of `processes` has ended two scheduler rounds more
/// than `before` counted (a [`rounds_ended`] of the same log): the second
/// began after the first ended, so after `before` was taken, and it
/// looked at every key. Fails after `limit`, so if a process's scheduler
/// does not run.
pub(crate) async fn whole_rounds_since(
    log: impl Fn() -> String,
    before: &std::collections::BTreeMap<usize, usize>,
    processes: &[usize],
    limit: Duration,
) {
    let start = Instant::now();
    loop {
        let now = rounds_ended(&log());
        let behind: Vec<_> = processes
            .iter()
            .filter(|p| now.get(p).copied().unwrap_or(0) < before.get(p).copied().unwrap_or(0) + 2)
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "processes {behind:?} ended fewer than two scheduler rounds within {limit:?}: before {before:?}, now {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- rotation API

#[tokio::test]
async fn on_demand_rotation_makes_a_new_primary_and_old_ciphertexts_still_decrypt() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key(&kms).await;
    let (old_blob, old_material) = encrypt(&kms, &id, "before").await;
    assert_eq!(current_material(&kms, &id).await, old_material);
    assert!(rotations(&kms, &id).await.is_empty());

    let out = kms.rotate_key_on_demand().key_id(&id).send().await.unwrap();
    assert_eq!(out.key_id.as_deref(), Some(key_arn(&id).as_str()));

    let new_material = current_material(&kms, &id).await;
    assert_ne!(new_material, old_material);
    let (new_blob, used) = encrypt(&kms, &id, "after").await;
    assert_eq!(used, new_material);
    decrypts(&kms, &old_blob, "before").await;
    decrypts(&kms, &new_blob, "after").await;

    let list = rotations(&kms, &id).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].rotation_type, Some(RotationType::OnDemand));
    assert_eq!(
        list[0].key_material_id.as_deref(),
        Some(new_material.as_str())
    );
    assert!(list[0].rotation_date.is_some());
    let all = kms
        .list_key_rotations()
        .key_id(&id)
        .include_key_material(IncludeKeyMaterial::AllKeyMaterial)
        .send()
        .await
        .unwrap();
    assert_eq!(all.rotations.unwrap().len(), 2);

    // On-demand rotation does not turn automatic rotation on.
    let status = kms
        .get_key_rotation_status()
        .key_id(&id)
        .send()
        .await
        .unwrap();
    assert!(!status.key_rotation_enabled);
    assert!(status.next_rotation_date.is_none());
}

#[tokio::test]
async fn on_demand_rotations_are_limited_per_key() {
    let token = Token::with_config("[keys]\nmax_on_demand_rotations = 2\n");
    let gw = Gateway::start_on(token);
    let kms = gw.client();
    let id = create_key(&kms).await;
    for _ in 0..2 {
        kms.rotate_key_on_demand().key_id(&id).send().await.unwrap();
    }
    let e = kms
        .rotate_key_on_demand()
        .key_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "LimitExceededException".into(),
            format!(
                "The on-demand rotations limit has been reached for the given keyId. No more on-demand rotations can be performed for this key: {}",
                key_arn(&id)
            )
        )
    );
    assert_eq!(rotations(&kms, &id).await.len(), 2);
}

#[tokio::test]
async fn rotation_settings_follow_aws_limits_and_key_states() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key(&kms).await;
    for bad in [89, 2561] {
        let e = kms
            .enable_key_rotation()
            .key_id(&id)
            .rotation_period_in_days(bad)
            .send()
            .await
            .unwrap_err();
        assert_eq!(error_of(&e).0, "ValidationException", "period {bad}");
    }
    kms.enable_key_rotation().key_id(&id).send().await.unwrap();
    let status = kms
        .get_key_rotation_status()
        .key_id(&id)
        .send()
        .await
        .unwrap();
    assert!(status.key_rotation_enabled);
    assert_eq!(status.rotation_period_in_days, Some(365));
    assert_eq!(status.key_id.as_deref(), Some(key_arn(&id).as_str()));
    let next = status.next_rotation_date.unwrap().secs();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (next - now - 365 * 86_400).abs() < 120,
        "next {next}, now {now}"
    );

    kms.enable_key_rotation()
        .key_id(&id)
        .rotation_period_in_days(90)
        .send()
        .await
        .unwrap();
    let status = kms
        .get_key_rotation_status()
        .key_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(status.rotation_period_in_days, Some(90));

    kms.disable_key_rotation().key_id(&id).send().await.unwrap();
    let status = kms
        .get_key_rotation_status()
        .key_id(&id)
        .send()
        .await
        .unwrap();
    assert!(!status.key_rotation_enabled);
    assert!(status.rotation_period_in_days.is_none());

    kms.disable_key().key_id(&id).send().await.unwrap();
    let disabled = format!("{} is disabled.", key_arn(&id));
    let e = kms
        .enable_key_rotation()
        .key_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), ("DisabledException".into(), disabled.clone()));
    let e = kms
        .rotate_key_on_demand()
        .key_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), ("DisabledException".into(), disabled));
    assert!(rotations(&kms, &id).await.is_empty());
}

#[tokio::test]
async fn automatic_rotation_happens_when_due_also_after_a_restart() {
    let token = Token::with_config(FAST);
    let gw = Gateway::start_on(token);
    let kms = gw.client();
    let id = create_key(&kms).await;
    let (blob, first) = encrypt(&kms, &id, "v1").await;
    kms.enable_key_rotation()
        .key_id(&id)
        .rotation_period_in_days(90)
        .send()
        .await
        .unwrap();

    // Not due yet: nothing happens in a whole scheduler round at 89 days
    // (the control: keys due then are destroyed in it).
    a_whole_round_at(&gw, 89.0).await;
    assert!(rotations(&kms, &id).await.is_empty());

    // Due while the gateway is down: it rotates once it is back.
    let token = gw.stop();
    token.set_clock_days_ahead(91);
    let gw = Gateway::start_on(token);
    let kms = gw.client();
    eventually(Duration::from_secs(10), || {
        let kms = kms.clone();
        let id = id.clone();
        async move { !rotations(&kms, &id).await.is_empty() }
    })
    .await;
    let list = rotations(&kms, &id).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].rotation_type, Some(RotationType::Automatic));
    assert_ne!(current_material(&kms, &id).await, first);
    decrypts(&kms, &blob, "v1").await;

    // The next date moved one period on, so it does not rotate again.
    let status = kms
        .get_key_rotation_status()
        .key_id(&id)
        .send()
        .await
        .unwrap();
    let next = status.next_rotation_date.unwrap().secs();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 91 * 86_400;
    assert!(
        (next - now - 90 * 86_400).abs() < 120,
        "next {next}, now {now}"
    );
    // A whole scheduler round a week later (next rotation: day 181)
    // rotates nothing more.
    a_whole_round_at(&gw, 98.0).await;
    assert_eq!(rotations(&kms, &id).await.len(), 1);
}

// ---------------------------------------------------------------- GCM usage bound

#[tokio::test]
async fn a_version_that_reaches_the_gcm_bound_rotates_and_every_ciphertext_still_decrypts() {
    let token = Token::with_config("[keys]\ngcm_usage_bound = 5\ngcm_reserve_block = 2\n");
    let gw = Gateway::start_on(token);
    let kms = gw.client();
    let id = create_key(&kms).await;
    let mut made = Vec::new();
    for n in 0..12 {
        let text = format!("message {n}");
        let (blob, material) = encrypt(&kms, &id, &text).await;
        made.push((text, blob, material));
    }
    // Data keys count too.
    let dk = kms
        .generate_data_key()
        .key_id(&id)
        .number_of_bytes(32)
        .send()
        .await
        .unwrap();
    let dk_material = dk.key_material_id.unwrap();

    let mut per_version = std::collections::HashMap::<String, usize>::new();
    for (_, _, m) in &made {
        *per_version.entry(m.clone()).or_default() += 1;
    }
    *per_version.entry(dk_material).or_default() += 1;
    assert!(
        per_version.len() >= 3,
        "13 encryptions at 5 per version: {per_version:?}"
    );
    assert!(
        per_version.values().all(|&n| n <= 5),
        "no version encrypted more than the bound: {per_version:?}"
    );
    let list = rotations(&kms, &id).await;
    assert_eq!(list.len(), per_version.len() - 1);
    assert!(
        list.iter()
            .all(|r| r.rotation_type == Some(RotationType::Automatic))
    );
    for (text, blob, _) in &made {
        decrypts(&kms, blob, text).await;
    }
}

#[tokio::test]
async fn a_crash_never_under_counts_gcm_use() {
    // Each gateway reserves 2 at a time and is killed after using 1: the
    // unused reservation still counts, so the bound of 4 is reached at the
    // third encryption.
    let token = Token::with_config("[keys]\ngcm_usage_bound = 4\ngcm_reserve_block = 2\n");
    let mut materials = Vec::new();
    let mut id = String::new();
    let mut token = Some(token);
    for round in 0..3 {
        let gw = Gateway::start_on(token.take().unwrap());
        let kms = gw.client();
        if round == 0 {
            id = create_key(&kms).await;
        }
        let (_, material) = encrypt(&kms, &id, &format!("round {round}")).await;
        materials.push(material);
        token = Some(gw.crash());
    }
    assert_eq!(
        materials[0], materials[1],
        "2 + 2 reserved: still within the bound"
    );
    assert_ne!(
        materials[1], materials[2],
        "the bound of 4 was reached by reservations"
    );
}

// ---------------------------------------------------------------- deletion

#[tokio::test]
async fn deletion_at_the_end_of_the_waiting_period_destroys_the_key_for_good() {
    let token = Token::with_config(FAST);
    let gw = Gateway::start_on(token);
    let kms = gw.client();
    let doomed = create_key(&kms).await;
    let kept = create_key(&kms).await;
    kms.create_alias()
        .alias_name("alias/doomed")
        .target_key_id(&doomed)
        .send()
        .await
        .unwrap();
    kms.rotate_key_on_demand()
        .key_id(&doomed)
        .send()
        .await
        .unwrap();
    let (blob, _) = encrypt(&kms, &doomed, "gone").await;
    kms.schedule_key_deletion()
        .key_id(&doomed)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    kms.schedule_key_deletion()
        .key_id(&kept)
        .pending_window_in_days(30)
        .send()
        .await
        .unwrap();

    gw.token.set_clock_days_ahead(8);
    eventually(Duration::from_secs(10), || {
        let kms = kms.clone();
        let doomed = doomed.clone();
        async move { kms.describe_key().key_id(&doomed).send().await.is_err() }
    })
    .await;
    let e = kms.describe_key().key_id(&doomed).send().await.unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "NotFoundException".into(),
            format!("Key '{}' does not exist", key_arn(&doomed))
        )
    );
    let e = kms
        .decrypt()
        .ciphertext_blob(blob)
        .encryption_context("case", "gone")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "AccessDeniedException");
    let aliases = kms
        .list_aliases()
        .send()
        .await
        .unwrap()
        .aliases
        .unwrap_or_default();
    assert!(aliases.is_empty(), "the key's alias went with it");
    // The key with 30 days left is untouched.
    let m = kms.describe_key().key_id(&kept).send().await.unwrap();
    assert_eq!(
        m.key_metadata.unwrap().key_state,
        Some(KeyState::PendingDeletion)
    );

    // On the token: no object of the deleted key is left.
    let token = gw.stop();
    let config = token.config();
    let (ok, stdout, stderr) = token.run_cli(&["check-keys", "--config", config.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        !stdout.contains(&doomed),
        "versions of the deleted key remain:\n{stdout}"
    );
    assert!(stdout.contains(&kept));
}

#[tokio::test]
async fn cancelled_deletion_is_not_carried_out() {
    let token = Token::with_config(FAST);
    let gw = Gateway::start_on(token);
    let kms = gw.client();
    let id = create_key(&kms).await;
    kms.schedule_key_deletion()
        .key_id(&id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    kms.cancel_key_deletion().key_id(&id).send().await.unwrap();
    // A whole scheduler round a day after the cancelled date, in which
    // keys scheduled with the same window are destroyed, keeps it.
    a_whole_round_at(&gw, 8.0).await;
    let m = kms.describe_key().key_id(&id).send().await.unwrap();
    assert_eq!(m.key_metadata.unwrap().key_state, Some(KeyState::Disabled));
}

// ---------------------------------------------------------------- gateways sharing a token

#[tokio::test]
async fn gateways_sharing_a_token_see_each_others_rotations_and_state_changes() {
    let token = Token::with_config(FAST);
    let a = Gateway::start_on(token.clone());
    let b = Gateway::start_on(token);
    let (ka, kb) = (a.client(), b.client());
    let id = create_key(&ka).await;
    let (old_blob, old) = encrypt(&kb, &id, "through b").await;

    ka.rotate_key_on_demand().key_id(&id).send().await.unwrap();
    let (new_blob, new) = encrypt(&ka, &id, "through a").await;
    assert_ne!(new, old);
    // B decrypts A's new-version ciphertext at once ...
    decrypts(&kb, &new_blob, "through a").await;
    decrypts(&ka, &old_blob, "through b").await;
    // ... and encrypts under the new version within the sync bound.
    eventually(Duration::from_secs(2), || {
        let kb = kb.clone();
        let (id, new) = (id.clone(), new.clone());
        async move { encrypt(&kb, &id, "x").await.1 == new }
    })
    .await;

    // Disabled through A: refused through B within the sync bound.
    ka.disable_key().key_id(&id).send().await.unwrap();
    let took = eventually(Duration::from_secs(2), || {
        let kb = kb.clone();
        let id = id.clone();
        async move {
            kb.encrypt()
                .key_id(&id)
                .plaintext(Blob::new("x"))
                .send()
                .await
                .is_err_and(|e| error_of(&e).0 == "DisabledException")
        }
    })
    .await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // An alias made through B is usable through A, within the sync bound
    // even if A had just been told it does not exist.
    let e = ka
        .describe_key()
        .key_id("alias/from-b")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "NotFoundException");
    kb.create_alias()
        .alias_name("alias/from-b")
        .target_key_id(&id)
        .send()
        .await
        .unwrap();
    let took = eventually(Duration::from_secs(2), || {
        let ka = ka.clone();
        let id = id.clone();
        async move {
            ka.describe_key()
                .key_id("alias/from-b")
                .send()
                .await
                .is_ok_and(|m| m.key_metadata.unwrap().key_id == id)
        }
    })
    .await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[tokio::test]
async fn a_due_rotation_happens_exactly_once_with_two_gateways() {
    let token = Token::with_config(FAST);
    let a = Gateway::start_on_with_env(token.clone(), &[ROUND_LOG]);
    let b = Gateway::start_on_with_env(token.clone(), &[ROUND_LOG]);
    let kms = a.client();
    let ids = keys_rotating_every_90_days(&kms, 3).await;
    token.set_clock_days_ahead(91);
    for id in &ids {
        eventually(Duration::from_secs(10), || {
            let kms = kms.clone();
            let id = id.clone();
            async move { !rotations(&kms, &id).await.is_empty() }
        })
        .await;
    }
    // Whole scheduler rounds on both gateways, begun after every rotation
    // was seen, change nothing.
    let before = [rounds_ended(&a.log()), rounds_ended(&b.log())];
    for (gw, before) in [&a, &b].into_iter().zip(&before) {
        whole_rounds_since(|| gw.log(), before, &[0], Duration::from_secs(10)).await;
    }
    for id in &ids {
        assert_eq!(rotations(&kms, id).await.len(), 1, "key {id} via A");
        assert_eq!(rotations(&b.client(), id).await.len(), 1, "key {id} via B");
    }
}
