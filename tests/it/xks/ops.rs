//! The four operations end to end, the usage kinds and the key states.

use super::client::Sealed;
use super::*;

#[tokio::test]
async fn metadata_encrypt_and_decrypt_round_trip_on_the_token() {
    let (_gw, c, ids) = usual().await;
    let m = c.metadata("ek-both");
    m.assert_ok();
    assert_eq!(m.body["keySpec"], "AES_256");
    assert_eq!(
        m.body["keyUsage"],
        serde_json::json!(["ENCRYPT", "DECRYPT"])
    );
    assert_eq!(m.body["keyStatus"], "ENABLED");

    let plaintext = b"Hello World!";
    let r = c.encrypt("ek-both", plaintext, Some(b"project=nile"), false);
    let sealed = Sealed::of(&r);
    assert_eq!(sealed.ciphertext.len(), plaintext.len());
    assert_ne!(sealed.ciphertext, plaintext);
    assert_eq!(sealed.iv.len(), 12);
    assert_eq!(sealed.tag.len(), 16);
    assert_eq!(sealed.metadata.len(), 20);
    // Format 1, the kmsgate key id, version 1.
    assert_eq!(sealed.metadata[0], 1);
    let id = uuid::Uuid::parse_str(&ids[0]).unwrap();
    assert_eq!(&sealed.metadata[1..17], id.as_bytes());
    assert_eq!(&sealed.metadata[17..], &[0, 0, 1]);
    assert!(r.body.get("ciphertextDataIntegrityValue").is_none());

    let d = c.decrypt("ek-both", &sealed, Some(b"project=nile"));
    d.assert_ok();
    assert_eq!(d.bytes("plaintext"), plaintext);
    // Without AAD too.
    let sealed = Sealed::of(&c.encrypt("ek-both", b"no aad", None, false));
    let d = c.decrypt("ek-both", &sealed, None);
    assert_eq!(d.bytes("plaintext"), b"no aad");
}
