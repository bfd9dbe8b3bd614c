//! Rotation underneath AWS KMS: `ciphertextMetadata` names the key
//! version, so new encryptions use the new primary version and earlier
//! ciphertexts still decrypt, whether the key rotated on demand, at the
//! GCM usage bound (which XKS encryptions count towards), or through
//! another gateway on the same token.

use super::client::Sealed;
use super::*;
use crate::import::{create_external, import_material};

fn version_of(s: &Sealed) -> u32 {
    u32::from_be_bytes([0, s.metadata[17], s.metadata[18], s.metadata[19]])
}

#[tokio::test]
async fn after_rotate_key_on_demand_new_ciphertexts_name_the_new_version_and_old_ones_decrypt() {
    let (gw, c, ids) = usual().await;
    let kms = gw.client();
    let before = Sealed::of(&c.encrypt("ek-both", b"before", Some(b"a"), false));
    assert_eq!(version_of(&before), 1);
    kms.rotate_key_on_demand()
        .key_id(&ids[0])
        .send()
        .await
        .unwrap();
    let after = Sealed::of(&c.encrypt("ek-both", b"after", Some(b"a"), false));
    assert_eq!(version_of(&after), 2);
    assert_eq!(&after.metadata[1..17], &before.metadata[1..17]);
    assert_eq!(
        c.decrypt("ek-both", &before, Some(b"a")).bytes("plaintext"),
        b"before"
    );
    assert_eq!(
        c.decrypt("ek-both", &after, Some(b"a")).bytes("plaintext"),
        b"after"
    );
    // The version byte of one pasted onto the other fails: the metadata
    // is authenticated.
    let mut forged = before.clone();
    forged.metadata = after.metadata.clone();
    c.decrypt("ek-both", &forged, Some(b"a"))
        .assert_error(400, "InvalidCiphertextException");
}

#[tokio::test]
async fn a_version_another_gateway_made_decrypts_here() {
    let token = Token::with_config(&usual_store());
    let one = start_on(token.clone());
    let two = start_on(token);
    let kms = one.client();
    let id = key_with_alias(&kms, "alias/xks-both").await;
    let c1 = client(&one, "/xks");
    let c2 = client(&two, "/xks");
    let old = Sealed::of(&c1.encrypt("ek-both", b"v1", None, false));
    // Gateway two rotates and encrypts under version 2 at once; gateway
    // one has not seen version 2 when asked to decrypt with it.
    two.client()
        .rotate_key_on_demand()
        .key_id(&id)
        .send()
        .await
        .unwrap();
    let new = Sealed::of(&c2.encrypt("ek-both", b"v2", None, false));
    assert_eq!(version_of(&new), 2);
    assert_eq!(c1.decrypt("ek-both", &new, None).bytes("plaintext"), b"v2");
    assert_eq!(c2.decrypt("ek-both", &old, None).bytes("plaintext"), b"v1");
}

#[tokio::test]
async fn xks_encryptions_count_towards_the_gcm_bound() {
    // A bound of 3 encryptions per version, reserved one at a time.
    let gw = start(&format!(
        "[keys]\ngcm_usage_bound = 3\ngcm_reserve_block = 1\n{}",
        usual_store()
    ));
    let kms = gw.client();
    let id = key_with_alias(&kms, "alias/xks-both").await;
    let c = client(&gw, "/xks");
    let sealed: Vec<Sealed> = (0..7u8)
        .map(|i| Sealed::of(&c.encrypt("ek-both", &[i], None, false)))
        .collect();
    let versions: Vec<u32> = sealed.iter().map(version_of).collect();
    assert_eq!(versions, [1, 1, 1, 2, 2, 2, 3]);
    // A TrentService Encrypt counts against the same budget.
    kms.encrypt()
        .key_id(&id)
        .plaintext(aws_sdk_kms::primitives::Blob::new(b"kms".to_vec()))
        .send()
        .await
        .unwrap();
    let next = Sealed::of(&c.encrypt("ek-both", b"x", None, false));
    assert_eq!(version_of(&next), 3, "two of version 3's three are spent");
    let last = Sealed::of(&c.encrypt("ek-both", b"y", None, false));
    assert_eq!(version_of(&last), 4);
    for (i, s) in sealed.iter().enumerate() {
        assert_eq!(
            c.decrypt("ek-both", s, None).bytes("plaintext"),
            vec![i as u8]
        );
    }
}

#[tokio::test]
async fn an_imported_key_at_the_bound_refuses_xks_encryption_and_still_decrypts() {
    let mut config = "[keys]\ngcm_usage_bound = 2\ngcm_reserve_block = 1\n".to_owned();
    config.push_str(&store_toml(
        "byok",
        "/byok",
        &[("imported", "alias/imported", "encrypt_decrypt")],
    ));
    let gw = start(&config);
    let kms = gw.client();
    let key = create_external(&kms).await;
    let material: [u8; 32] = rand::random();
    import_material(&kms, &key, &material).await;
    kms.create_alias()
        .alias_name("alias/imported")
        .target_key_id(&key)
        .send()
        .await
        .unwrap();
    let c = client(&gw, "/byok");
    let made: Vec<Sealed> = (0..2u8)
        .map(|i| Sealed::of(&c.encrypt("imported", &[i], None, false)))
        .collect();
    assert!(made.iter().all(|s| version_of(s) == 1));
    c.encrypt("imported", b"over", None, false)
        .assert_error(400, "InvalidStateException");
    for (i, s) in made.iter().enumerate() {
        assert_eq!(
            c.decrypt("imported", s, None).bytes("plaintext"),
            vec![i as u8]
        );
    }
}
