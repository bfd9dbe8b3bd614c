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
