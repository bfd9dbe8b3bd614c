//! The cryptography as the spec defines it, checked from outside: the
//! ciphertext integrity value recomputed with an independent SHA-256 from
//! Appendix C (the function is first checked against the spec's own
//! example), a change to any one of ciphertext, IV, tag, AAD or metadata
//! refused as InvalidCiphertextException, and the AAD's length prefixes
//! telling AAD and metadata apart (the spec's note on Encrypt).

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
async fn aad_and_metadata_are_length_prefixed_so_they_cannot_trade_places() {
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
