//! The commit protocol (src/keystore/commit.rs, write.rs) when the token
//! fails part-way through a write: faulty-pkcs11 fails or holds the calls
//! of one step (tests/it/common/faulty.rs), and afterwards what the client
//! was told, what a restarted gateway serves and what is on the token
//! (`pkcs11-tool --list-objects`) must agree.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::faulty::Faults;
use crate::common::*;

const WAIT: Duration = Duration::from_secs(20);

/// The labels of the secret keys on the token that belong to key `id`
/// (one per version, `kmsgate/key/<id>/v<n>/<nonce>`), with how many
/// objects carry each.
fn version_objects(token: &Token, id: &str) -> HashMap<String, usize> {
    let listing = list_objects(token);
    let mut out = HashMap::new();
    let mut secret = false;
    for line in listing.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            secret = line.starts_with("Secret Key Object");
        } else if secret
            && let Some(label) = line.trim().strip_prefix("label:")
            && label.trim().starts_with(&format!("kmsgate/key/{id}/"))
        {
            *out.entry(label.trim().to_owned()).or_insert(0) += 1;
        }
    }
    out
}

/// The version number in a version label.
fn version_of(label: &str) -> u32 {
    label
        .split('/')
        .find_map(|p| p.strip_prefix('v').and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Every version label of `id` is carried by exactly one object, and the
/// versions 1..=`versions` each have one label.
fn assert_one_object_per_version(token: &Token, id: &str, versions: u32) {
    let objects = version_objects(token, id);
    for (label, n) in &objects {
        assert_eq!(*n, 1, "{n} objects labelled {label}: {objects:?}");
    }
    for v in 1..=versions {
        let labels: Vec<_> = objects.keys().filter(|l| version_of(l) == v).collect();
        assert!(!labels.is_empty(), "no object of version {v}: {objects:?}");
    }
}

fn assert_failed(faults: &Faults, what: &str) {
    assert_eq!(faults.count(what), 1, "{}", faults.log());
}

/// CreateKey's record write fails with a device error after the key's
/// first version was made and confirmed, and the clean-up that would
/// destroy that version fails too: the retry must not make a second
/// object under the same label (a restart could pick either).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_create_key_leaves_one_object_per_version_label() {
    let gw = Gateway::start_faulty();
    let faults = gw.faults();
    let kms = gw.client();
    faults.set("C_CreateObject fail 0x30 once\nC_DestroyObject fail 0x30 once");
    let id = create_key(&kms).await;
    assert_failed(&faults, "fail C_CreateObject 0x30");
    assert_failed(&faults, "fail C_DestroyObject 0x30");
    faults.clear();

    let mut blobs = Vec::new();
    for i in 0..5u8 {
        let text = vec![i; 20];
        blobs.push((text.clone(), encrypt(&kms, &id, &text).await));
    }
    assert_one_object_per_version(&gw.token, &id, 1);

    let token = gw.stop();
    let gw = Gateway::start_faulty_on(token);
    let kms = gw.client();
    for (text, blob) in blobs {
        assert_eq!(decrypt(&kms, blob).await, text);
    }
    let blob = encrypt(&kms, &id, b"after the restart").await;
    assert_eq!(decrypt(&kms, blob).await, b"after the restart");
}

/// As above for a rotation (RotateKeyOnDemand): its record write fails
/// after the new version was made, and so does that version's clean-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_rotation_leaves_one_object_per_version_label() {
    let gw = Gateway::start_faulty();
    let faults = gw.faults();
    let kms = gw.client();
    let id = create_key(&kms).await;
    let before = encrypt(&kms, &id, b"before the rotation").await;

    faults.set("C_CreateObject fail 0x30 once\nC_DestroyObject fail 0x30 once");
    kms.rotate_key_on_demand().key_id(&id).send().await.unwrap();
    assert_failed(&faults, "fail C_CreateObject 0x30");
    assert_failed(&faults, "fail C_DestroyObject 0x30");
    faults.clear();

    let after = encrypt(&kms, &id, b"after the rotation").await;
    assert_eq!(rotations(&kms, &id).await.len(), 1);
    assert_one_object_per_version(&gw.token, &id, 2);

    let token = gw.stop();
    let gw = Gateway::start_faulty_on(token);
    let kms = gw.client();
    assert_eq!(decrypt(&kms, before).await, b"before the rotation");
    assert_eq!(decrypt(&kms, after).await, b"after the rotation");
    assert_eq!(rotations(&kms, &id).await.len(), 1);
}

/// RotateKeyOnDemand's new record is made and confirmed durable, and the
/// listing that follows (the rival check) fails with a device error. The
/// rotation happened: it must be answered and kept as one rotation whose
/// version exists, never undone into a record that names a missing
/// version, nor done twice.
///
/// Confirmation is through the writing session here (`read_back =
/// "session"`): faulty-pkcs11's rules hold in every process, and the
/// read-back helper would meet the listing's fault first. Its calls, in
/// order: C_CreateObject (held), the confirmation's C_FindObjectsInit,
/// C_FindObjects, C_FindObjectsFinal (held), then the listing's
/// C_FindObjectsInit (failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_whose_rival_listing_fails_after_its_record_is_durable_stands() {
    let gw = Gateway::start_faulty_on(Token::with_faulty_hsm("read_back = \"session\"", ""));
    let faults = gw.faults();
    let kms = gw.client();
    let id = create_key(&kms).await;
    let before = encrypt(&kms, &id, b"before the rotation").await;

    faults.set("C_CreateObject stall once");
    let rotate = tokio::spawn({
        let (kms, id) = (kms.clone(), id.clone());
        async move { kms.rotate_key_on_demand().key_id(id).send().await }
    });
    let f = faults.clone();
    tokio::task::spawn_blocking(move || {
        assert_eq!(f.wait_for_count("stall C_CreateObject", 1, WAIT), 1);
        f.set("C_FindObjectsFinal stall once");
        assert_eq!(f.wait_for_count("stall C_FindObjectsFinal", 1, WAIT), 1);
        f.set("C_FindObjectsInit fail 0x30 once");
        assert_eq!(f.wait_for_count("fail C_FindObjectsInit", 1, WAIT), 1);
    })
    .await
    .unwrap();
    let answer = rotate.await.unwrap();
    faults.clear();
    assert_failed(&faults, "fail C_FindObjectsInit 0x30");
    answer.expect("the rotation is on the token: it is answered as done");

    let after = encrypt(&kms, &id, b"after the rotation").await;
    assert_eq!(rotations(&kms, &id).await.len(), 1);
    assert_eq!(decrypt(&kms, before.clone()).await, b"before the rotation");
    assert_eq!(decrypt(&kms, after.clone()).await, b"after the rotation");
    assert_one_object_per_version(&gw.token, &id, 2);
    let objects = version_objects(&gw.token, &id);
    assert_eq!(objects.len(), 2, "one rotation, two versions: {objects:?}");

    let token = gw.stop();
    let gw = Gateway::start_faulty_on(token);
    let kms = gw.client();
    assert_eq!(rotations(&kms, &id).await.len(), 1);
    assert_eq!(decrypt(&kms, before).await, b"before the rotation");
    assert_eq!(decrypt(&kms, after).await, b"after the rotation");
    let again = encrypt(&kms, &id, b"after the restart").await;
    assert_eq!(decrypt(&kms, again).await, b"after the restart");
}

/// Two gateways on one token race writes to the same records, while the
/// test clock makes a rotation due on both: for each alias both try to
/// create at once exactly one CreateAlias wins, the token holds one object
/// for it and both gateways resolve it to the winner's key; no GCM
/// reservation is granted twice (no key version encrypts past the bound);
/// and each due rotation happens once. A third client keeps the second
/// gateway listing the token (lookups of keys no one has) all along, so
/// its listings often meet the other gateway's objects half-written.
///
/// Issue 17 item 10. Without the SoftHSM2 token lock (src/hsm/token_lock.rs)
/// it failed 4 runs of 6 (both CreateAlias calls answered 200): one
/// gateway's SoftHSM2 took its own write's generation number as having seen
/// the other's, and its rival listing missed the other's revision. Without
/// the wait for a contested record to settle (keystore/lookup.rs) it failed
/// 2 runs of 5 with the lock (a gateway resolved the alias to the loser's
/// key, or not at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_racing_writes_to_one_record_make_one_winner_per_revision() {
    const BOUND: usize = 6;
    let token = Token::with_config(&format!(
        "[keys]\nsync_interval_ms = 50\nscheduler_interval_ms = 100\ngcm_usage_bound = {BOUND}\ngcm_reserve_block = 2\n"
    ));
    let a = Gateway::start_on(token.clone());
    let b = Gateway::start_on(token.clone());
    let (ka, kb) = (a.client(), b.client());
    let (target_a, target_b) = (create_key(&ka).await, create_key(&kb).await);
    let due = keys_rotating_every_90_days(&ka, 2).await;
    let budget = create_key(&ka).await;
    token.set_clock_days_ahead(91);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lister = tokio::spawn({
        let (kms, stop) = (b.client(), stop.clone());
        async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let id = format!("00000000-0000-4000-8000-{n:012}");
                let _ = kms.describe_key().key_id(id).send().await;
            }
        }
    });

    let mut materials = HashMap::<String, usize>::new();
    let rounds = 30;
    for i in 0..rounds {
        let name = format!("alias/race-{i}");
        let (ra, rb) = tokio::join!(
            ka.create_alias()
                .alias_name(&name)
                .target_key_id(&target_a)
                .send(),
            kb.create_alias()
                .alias_name(&name)
                .target_key_id(&target_b)
                .send(),
        );
        let winner = match (&ra, &rb) {
            (Ok(_), Err(e)) => {
                assert_eq!(error_of(e).0, "AlreadyExistsException", "{name}: {e:?}");
                &target_a
            }
            (Err(e), Ok(_)) => {
                assert_eq!(error_of(e).0, "AlreadyExistsException", "{name}: {e:?}");
                &target_b
            }
            other => panic!("{name}: exactly one CreateAlias wins: {other:?}"),
        };
        // Asked again afterwards, through either gateway, it exists.
        for kms in [&ka, &kb] {
            let again = kms
                .create_alias()
                .alias_name(&name)
                .target_key_id(&target_a)
                .send()
                .await
                .expect_err("the alias exists");
            assert_eq!(error_of(&again).0, "AlreadyExistsException", "{name}");
            assert_eq!(key_metadata(kms, &name).await.key_id, *winner, "{name}");
        }
        // Both spend the GCM budget of one key at once.
        let (ea, eb) = tokio::join!(
            ka.encrypt()
                .key_id(&budget)
                .plaintext(aws_sdk_kms::primitives::Blob::new(vec![1; 8]))
                .send(),
            kb.encrypt()
                .key_id(&budget)
                .plaintext(aws_sdk_kms::primitives::Blob::new(vec![2; 8]))
                .send(),
        );
        for e in [ea, eb] {
            // Encrypt's response names no key material; Decrypt's does.
            let blob = e.expect("encrypts").ciphertext_blob.expect("blob");
            let back = ka.decrypt().ciphertext_blob(blob).send().await.unwrap();
            let material = back.key_material_id.expect("material");
            *materials.entry(material).or_default() += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    lister.await.unwrap();

    for i in 0..rounds {
        let label = format!("kmsgate/alias/race-{i}");
        assert_eq!(objects_labelled(&token, &label), 1, "{label}");
    }
    assert!(
        materials.values().all(|&n| n <= BOUND),
        "no version encrypted past the bound: {materials:?}"
    );
    assert_eq!(
        rotations(&ka, &budget).await.len(),
        materials.len() - 1,
        "{materials:?}"
    );
    for id in &due {
        for kms in [&ka, &kb] {
            let r = rotations(kms, id).await;
            assert_eq!(r.len(), 1, "key {id}: {r:?}");
        }
    }
}

/// `check-keys` on a token behind faulty-pkcs11 (with no rules left):
/// whether it found every key version it names, and what it printed.
fn check_keys_behind_faulty(token: &Token) -> (bool, String) {
    let out = std::process::Command::new(kmsgate_bin())
        .env("SOFTHSM2_CONF", token.softhsm_conf())
        .envs(token.faulty_env())
        .args(["check-keys", "--config"])
        .arg(token.config())
        .output()
        .expect("kmsgate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// CreateKey's record is made, then its confirmation fails with a device
/// error and so does its removal: the record may stand, so the key's first
/// version, which it names, must stay, and the key the token holds must
/// work after a restart (a nemesis finding: before the fix the version was
/// destroyed, and a restarted gateway answered KeyUnavailableException for
/// that key). Here the gateway's retry fails too, so the client is told
/// CreateKey failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_whose_record_can_be_neither_confirmed_nor_removed_keeps_its_version() {
    let (answered, keys) = create_key_unconfirmed(true).await;
    assert_eq!(answered, None);
    assert_eq!(keys.len(), 1, "the record stands: {keys:?}");
}

/// As above, and the gateway's retry succeeds: it must make another key,
/// not a second record of the first one's revision naming another version
/// (readers would then pick either, and a ciphertext made under one would
/// not decrypt under the other). Both keys work after a restart, each with
/// one record, and the one answered is the one its ciphertexts need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_key_retried_after_an_unconfirmed_record_makes_a_key_of_its_own() {
    let (answered, keys) = create_key_unconfirmed(false).await;
    let answered = answered.expect("the retry succeeded");
    assert_eq!(
        keys.len(),
        2,
        "the stranded key and the answered one: {keys:?}"
    );
    assert!(
        keys.contains(&answered),
        "answered {answered}, listed {keys:?}"
    );
}

/// The scenario of the two tests above. Confirmation is through the writing
/// session (`read_back = "session"`), so every call below is the gateway's
/// own. In order: the record's C_CreateObject (held), the confirmation's
/// C_FindObjectsInit (failed), the removal's C_DestroyObject (failed); then,
/// if `retry_fails`, every C_GenerateKey of the retries. Background
/// listings are made rare so that they do not take the `once` rules.
/// Returns the key id answered, if any, and the keys a restarted gateway
/// lists besides an earlier one, after checking that each works, that the
/// answered key decrypts what it encrypted before the restart, that each key
/// has one record object, and that `check-keys` is clean.
async fn create_key_unconfirmed(retry_fails: bool) -> (Option<String>, Vec<String>) {
    let token = Token::with_faulty_hsm(
        "read_back = \"session\"",
        "[keys]\nsync_interval_ms = 600000\nscheduler_interval_ms = 600000\n",
    );
    let gw = Gateway::start_faulty_on(token);
    let faults = gw.faults();
    let kms = gw.client();
    let before = create_key(&kms).await;

    faults.set("C_CreateObject stall once");
    let create = tokio::spawn({
        let kms = kms.clone();
        async move { kms.create_key().description("kept").send().await }
    });
    let f = faults.clone();
    tokio::task::spawn_blocking(move || {
        assert_eq!(f.wait_for_count("stall C_CreateObject", 1, WAIT), 1);
        let mut rules =
            "C_FindObjectsInit fail 0x30 once\nC_DestroyObject fail 0x30 once".to_owned();
        if retry_fails {
            rules.push_str("\nC_GenerateKey fail 0x30 forever");
        }
        f.set(&rules);
        assert_eq!(f.wait_for_count("fail C_DestroyObject", 1, WAIT), 1);
    })
    .await
    .unwrap();
    let answer = create.await.unwrap();
    faults.clear();
    assert_failed(&faults, "fail C_FindObjectsInit 0x30");
    assert_failed(&faults, "fail C_DestroyObject 0x30");
    let answered = match answer {
        Ok(out) => Some(out.key_metadata.unwrap().key_id),
        Err(err) => {
            let status = err.raw_response().map(|r| r.status().as_u16());
            assert!(
                status.is_some_and(|s| s >= 500),
                "a retryable 5xx, not {status:?}: {err:?}"
            );
            None
        }
    };
    // A ciphertext made now must decrypt whatever a later gateway picks.
    let early = match &answered {
        Some(id) => Some(encrypt(&kms, id, b"made before the restart").await),
        None => None,
    };

    // Whatever the token holds now is what every gateway will serve.
    let token = gw.stop();
    let gw = Gateway::start_faulty_on(token);
    let kms = gw.client();
    let keys: Vec<String> = list_key_ids(&kms)
        .await
        .into_iter()
        .filter(|id| *id != before)
        .collect();
    if let Some(blob) = early {
        assert_eq!(decrypt(&kms, blob).await, b"made before the restart");
    }
    for id in &keys {
        let blob = encrypt(&kms, id, b"the key works").await;
        assert_eq!(decrypt(&kms, blob).await, b"the key works");
        assert_one_object_per_version(&gw.token, id, 1);
        assert_eq!(
            objects_labelled(&gw.token, &format!("kmsgate/key/{id}")),
            1,
            "one record object for key {id}"
        );
    }
    let blob = encrypt(&kms, &before, b"the other key too").await;
    assert_eq!(decrypt(&kms, blob).await, b"the other key too");
    let token = gw.stop();
    let (clean, out) = check_keys_behind_faulty(&token);
    assert!(clean, "check-keys: {out}");
    (answered, keys)
}
