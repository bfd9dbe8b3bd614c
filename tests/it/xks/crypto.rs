//! The cryptography as the spec defines it, checked from outside: the
//! ciphertext integrity value recomputed with an independent SHA-256 from
//! Appendix C (the function is first checked against the spec's own
//! example), a change to any one of ciphertext, IV, tag, AAD or metadata
//! refused as InvalidCiphertextException, and, with a key whose material
//! the test imported, kmsgate's ciphertexts opened (and ciphertexts made
//! for it) with an independent AES-GCM (the aes-gcm crate) and the AAD
//! construction written here from the spec.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use super::client::{Sealed, XksClient, b64};
use super::*;

/// Appendix C: SHA-256(AAD || metadata || IV || ciphertext || tag), no
/// length fields.
fn integrity_value(aad: &[u8], s: &Sealed) -> Vec<u8> {
    let mut h = Sha256::new();
    for part in [aad, &s.metadata, &s.iv, &s.ciphertext, &s.tag] {
        h.update(part);
    }
    h.finalize().to_vec()
}

#[test]
fn the_independent_integrity_value_gives_the_specs_example() {
    // Appendix C's example: 33 bytes of AAD, 13 of metadata, 12 of IV, 12
    // of ciphertext, 16 of tag.
    let s = Sealed {
        ciphertext: STANDARD.decode("ghxkK1txeDNn3q8Y").unwrap(),
        metadata: STANDARD.decode("a2V5X3ZlcnNpb249MQ==").unwrap(),
        iv: STANDARD.decode("HMrlRw85cAJUd5Ax").unwrap(),
        tag: STANDARD.decode("vBxN2ncH1oEkR8WVXpmyYQ==").unwrap(),
        integrity: None,
    };
    assert_eq!(
        b64(&integrity_value(b"project=nile,department=marketing", &s)),
        "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc="
    );
}

#[tokio::test]
async fn the_integrity_value_is_appendix_cs_and_comes_only_when_asked() {
    let (_gw, c, _) = usual().await;
    for aad in [Some(&b"project=nile,department=marketing"[..]), None] {
        let sealed = Sealed::of(&c.encrypt("ek-both", b"Hello World!", aad, true));
        let value = sealed.integrity.clone().expect("asked for");
        assert_eq!(value, integrity_value(aad.unwrap_or_default(), &sealed));
        assert_eq!(
            c.decrypt("ek-both", &sealed, aad).bytes("plaintext"),
            b"Hello World!"
        );
    }
}

#[tokio::test]
async fn changing_any_one_part_is_an_invalid_ciphertext() {
    let (_gw, c, _) = usual().await;
    let aad = b"tenant=acme".to_vec();
    let sealed = Sealed::of(&c.encrypt("ek-both", b"sixteen bytes!!!", Some(&aad), false));
    let flip = |v: &[u8], i: usize| {
        let mut v = v.to_vec();
        v[i] ^= 1;
        v
    };
    let mut cases: Vec<(String, Sealed, Vec<u8>)> = Vec::new();
    for i in [0, 15] {
        let mut s = sealed.clone();
        s.ciphertext = flip(&s.ciphertext, i);
        cases.push((format!("ciphertext byte {i}"), s, aad.clone()));
    }
    for i in [0, 11] {
        let mut s = sealed.clone();
        s.iv = flip(&s.iv, i);
        cases.push((format!("IV byte {i}"), s, aad.clone()));
    }
    for i in [0, 15] {
        let mut s = sealed.clone();
        s.tag = flip(&s.tag, i);
        cases.push((format!("tag byte {i}"), s, aad.clone()));
    }
    for i in [0, 10] {
        cases.push((format!("AAD byte {i}"), sealed.clone(), flip(&aad, i)));
    }
    cases.push((
        "AAD longer".into(),
        sealed.clone(),
        [&aad[..], b"x"].concat(),
    ));
    // Metadata: its format, its key id, its version (2: a version the key
    // never had; 1 with another byte changed: fails the tag).
    for (i, what) in [(0, "format"), (5, "key id"), (19, "version")] {
        let mut s = sealed.clone();
        s.metadata = flip(&s.metadata, i);
        cases.push((format!("metadata {what}"), s, aad.clone()));
    }
    let mut s = sealed.clone();
    s.iv = [s.iv.clone(), vec![0; 4]].concat();
    cases.push(("IV of 16 bytes".into(), s, aad.clone()));
    for (what, s, aad) in &cases {
        let r = c.decrypt("ek-both", s, Some(aad));
        assert_eq!(
            (r.status, r.error_name()),
            (400, "InvalidCiphertextException"),
            "{what}: {}",
            r.text
        );
    }
    // No metadata at all.
    let mut body = XksClient::decrypt_body(&sealed, Some(&aad));
    body.as_object_mut().unwrap().remove("ciphertextMetadata");
    c.post("/keys/ek-both/decrypt", &body)
        .assert_error(400, "InvalidCiphertextException");
    // The untouched one still decrypts.
    assert_eq!(
        c.decrypt("ek-both", &sealed, Some(&aad)).bytes("plaintext"),
        b"sixteen bytes!!!"
    );
}

#[tokio::test]
async fn metadata_moved_into_the_aad_is_refused() {
    let (_gw, c, _) = usual().await;
    // Encrypted with no AAD; then the metadata passed as AAD and no
    // metadata: the same bytes in a row, but not the same AAD.
    let sealed = Sealed::of(&c.encrypt("ek-both", b"swap", None, false));
    let mut body = XksClient::decrypt_body(&sealed, Some(&sealed.metadata));
    body.as_object_mut().unwrap().remove("ciphertextMetadata");
    c.post("/keys/ek-both/decrypt", &body)
        .assert_error(400, "InvalidCiphertextException");
    // An empty AAD member is the same as none.
    let body = XksClient::decrypt_body(&sealed, Some(b""));
    assert_eq!(
        c.post("/keys/ek-both/decrypt", &body).bytes("plaintext"),
        b"swap"
    );
}

/// The spec's AAD for the token, written here from the spec's text
/// (Encrypt, `ciphertextMetadata`): 2-byte big-endian length of the AAD,
/// the AAD, 1-byte length of the metadata, the metadata.
fn spec_aad(aad: &[u8], metadata: &[u8]) -> Vec<u8> {
    let mut out = (aad.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(aad);
    out.push(metadata.len() as u8);
    out.extend_from_slice(metadata);
    out
}

/// Only a key whose material the test imported can be checked with an
/// independent AES-GCM: kmsgate's ciphertext opens with the spec's AAD
/// under that material, and a ciphertext sealed here the spec's way
/// (kmsgate's metadata format: 1, key id, version) decrypts through XKS.
#[tokio::test]
async fn an_imported_keys_ciphertexts_are_aes_gcm_with_the_specs_aad() {
    use aes_gcm::Aes256Gcm;
    use aes_gcm::aead::{Aead, KeyInit, Payload};

    let gw = start(&store_toml(
        "byok",
        "/byok",
        &[("imported", "alias/imported", "encrypt_decrypt")],
    ));
    let kms = gw.client();
    let key = crate::import::create_external(&kms).await;
    let material: [u8; 32] = rand::random();
    crate::import::import_material(&kms, &key, &material).await;
    kms.create_alias()
        .alias_name("alias/imported")
        .target_key_id(&key)
        .send()
        .await
        .unwrap();
    let c = client(&gw, "/byok");
    let cipher = Aes256Gcm::new_from_slice(&material).unwrap();

    for aad in [&b"project=nile,department=marketing"[..], b""] {
        let sealed = Sealed::of(&c.encrypt("imported", b"Hello World!", Some(aad), false));
        let iv: [u8; 12] = sealed.iv.clone().try_into().unwrap();
        let opened = cipher
            .decrypt(
                &iv.into(),
                Payload {
                    msg: &[&sealed.ciphertext[..], &sealed.tag[..]].concat(),
                    aad: &spec_aad(aad, &sealed.metadata),
                },
            )
            .expect("kmsgate's ciphertext opens with the spec's AAD");
        assert_eq!(opened, b"Hello World!");
        // Not with the AAD alone, nor with SHA-256(AAD) (what AWS's sample
        // proxy feeds its HSM).
        for wrong in [aad.to_vec(), Sha256::digest(aad).to_vec()] {
            assert!(
                cipher
                    .decrypt(
                        &iv.into(),
                        Payload {
                            msg: &[&sealed.ciphertext[..], &sealed.tag[..]].concat(),
                            aad: &wrong,
                        },
                    )
                    .is_err()
            );
        }
    }

    // Sealed here, opened by kmsgate.
    let id = uuid::Uuid::parse_str(&key).unwrap();
    let mut metadata = vec![1u8];
    metadata.extend_from_slice(id.as_bytes());
    metadata.extend_from_slice(&[0, 0, 1]);
    let iv: [u8; 12] = rand::random();
    let aad = b"sealed outside";
    let sealed = cipher
        .encrypt(
            &iv.into(),
            Payload {
                msg: b"from outside",
                aad: &spec_aad(aad, &metadata),
            },
        )
        .unwrap();
    let (ct, tag) = sealed.split_at(sealed.len() - 16);
    let outside = Sealed {
        ciphertext: ct.to_vec(),
        metadata,
        iv: iv.to_vec(),
        tag: tag.to_vec(),
        integrity: None,
    };
    assert_eq!(
        c.decrypt("imported", &outside, Some(aad))
            .bytes("plaintext"),
        b"from outside"
    );
}
