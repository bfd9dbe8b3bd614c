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

#[tokio::test]
async fn each_usage_kind_answers_its_key_usage_and_refuses_the_rest() {
    let (_gw, c, _) = usual().await;
    for (ek, usage) in [
        ("ek-both", serde_json::json!(["ENCRYPT", "DECRYPT"])),
        ("ek-encrypt", serde_json::json!(["ENCRYPT"])),
        ("ek-decrypt", serde_json::json!(["DECRYPT"])),
        ("ek-none", serde_json::json!([])),
    ] {
        let m = c.metadata(ek);
        m.assert_ok();
        assert_eq!(m.body["keyUsage"], usage, "{ek}");
        assert_eq!(m.body["keyStatus"], "ENABLED", "{ek}");
    }
    // Encrypt-only: encrypts, refuses decrypt, and refuses the integrity
    // value (its verification decrypt is a decrypt).
    let sealed = Sealed::of(&c.encrypt("ek-encrypt", b"one way", None, false));
    c.decrypt("ek-encrypt", &sealed, None)
        .assert_error(400, "InvalidKeyUsageException");
    c.encrypt("ek-encrypt", b"one way", None, true)
        .assert_error(400, "InvalidKeyUsageException");
    // Decrypt-only and neither refuse encrypt; neither refuses decrypt.
    for ek in ["ek-decrypt", "ek-none"] {
        c.encrypt(ek, b"x", None, false)
            .assert_error(400, "InvalidKeyUsageException");
    }
    c.decrypt("ek-none", &sealed, None)
        .assert_error(400, "InvalidKeyUsageException");
    // Decrypt-only reaches the token: this ciphertext is another key's.
    c.decrypt("ek-decrypt", &sealed, None)
        .assert_error(400, "InvalidCiphertextException");
}

#[tokio::test]
async fn a_disabled_key_says_disabled_and_refuses_until_enabled_again() {
    let (gw, c, ids) = usual().await;
    let kms = gw.client();
    let sealed = Sealed::of(&c.encrypt("ek-both", b"before", None, false));
    kms.disable_key().key_id(&ids[0]).send().await.unwrap();
    let m = c.metadata("ek-both");
    m.assert_ok();
    assert_eq!(m.body["keyStatus"], "DISABLED");
    c.encrypt("ek-both", b"x", None, false)
        .assert_error(400, "InvalidStateException");
    c.decrypt("ek-both", &sealed, None)
        .assert_error(400, "InvalidStateException");
    kms.enable_key().key_id(&ids[0]).send().await.unwrap();
    assert_eq!(c.metadata("ek-both").body["keyStatus"], "ENABLED");
    assert_eq!(
        c.decrypt("ek-both", &sealed, None).bytes("plaintext"),
        b"before"
    );
    Sealed::of(&c.encrypt("ek-both", b"after", None, false));
}

#[tokio::test]
async fn a_key_pending_deletion_is_refused_and_a_missing_one_is_not_found() {
    let (gw, c, ids) = usual().await;
    let kms = gw.client();
    let sealed = Sealed::of(&c.encrypt("ek-both", b"x", None, false));
    kms.schedule_key_deletion()
        .key_id(&ids[0])
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    c.metadata("ek-both")
        .assert_error(400, "InvalidStateException");
    c.encrypt("ek-both", b"x", None, false)
        .assert_error(400, "InvalidStateException");
    c.decrypt("ek-both", &sealed, None)
        .assert_error(400, "InvalidStateException");
    // An id the store does not expose, and one whose alias names no key.
    c.metadata("ek-unknown")
        .assert_error(404, "KeyNotFoundException");
    kms.delete_alias()
        .alias_name("alias/xks-none")
        .send()
        .await
        .unwrap();
    c.metadata("ek-none")
        .assert_error(404, "KeyNotFoundException");
    c.encrypt("ek-none", b"x", None, false)
        .assert_error(404, "KeyNotFoundException");
}

#[tokio::test]
async fn the_spec_minimum_sizes_are_accepted() {
    let (_gw, c, _) = usual().await;
    let plaintext: Vec<u8> = (0..4300u32).map(|i| (i % 251) as u8).collect();
    let aad: Vec<u8> = (0..8192u32).map(|i| (i % 241) as u8).collect();
    let sealed = Sealed::of(&c.encrypt("ek-both", &plaintext, Some(&aad), true));
    assert_eq!(sealed.ciphertext.len(), 4300);
    assert_eq!(
        c.decrypt("ek-both", &sealed, Some(&aad)).bytes("plaintext"),
        plaintext
    );
}

#[tokio::test]
async fn stores_answer_under_their_own_prefixes_and_the_empty_one_as_sent() {
    let mut config = store_toml("root", "", &[("root-key", "alias/root", "encrypt_decrypt")]);
    config.push_str(&store_toml(
        "tenant-b",
        "/tenant/b",
        &[("b-key", "alias/b", "encrypt_decrypt")],
    ));
    let gw = start(&config);
    let kms = gw.client();
    key_with_alias(&kms, "alias/root").await;
    key_with_alias(&kms, "alias/b").await;
    // The empty prefix, as a client that joins "/" and "" sends it
    // (`//kms/xks/v1/...`, signed as sent), and without the extra slash.
    let slash = client(&gw, "/");
    assert!(slash.path("/health").starts_with("//kms/xks/v1"));
    let sealed = Sealed::of(&slash.encrypt("root-key", b"root", None, false));
    let root = client(&gw, "");
    assert_eq!(
        root.decrypt("root-key", &sealed, None).bytes("plaintext"),
        b"root"
    );
    slash.health().assert_ok();
    // Each store exposes only its own keys.
    let b = client(&gw, "/tenant/b");
    b.metadata("b-key").assert_ok();
    b.metadata("root-key")
        .assert_error(404, "KeyNotFoundException");
    root.metadata("b-key")
        .assert_error(404, "KeyNotFoundException");
    client(&gw, "/tenant/c")
        .metadata("b-key")
        .assert_error(404, "InvalidUriPathException");
}

#[tokio::test]
async fn workers_serve_xks_and_count_themselves_in_the_fleet() {
    let token = Token::with_config(&usual_store());
    let gw =
        crate::workers::Supervised::start_with_env(token, "2", &[(XKS_SECRET_ENV, XKS_SECRET)]);
    let kms = gw.client();
    key_with_alias(&kms, "alias/xks-both").await;
    let addr = gw.endpoint.trim_start_matches("http://").to_owned();
    let c = client::XksClient::new(&addr, "/xks", XKS_REGION, XKS_ACCESS_KEY, XKS_SECRET);
    let h = c.health();
    h.assert_ok();
    assert_eq!(h.body["xksProxyFleetSize"], 2, "{}", h.text);
    // Each request on a connection of its own: both workers serve some,
    // and every ciphertext decrypts whichever worker answers.
    let sealed: Vec<Sealed> = (0..8u8)
        .map(|i| Sealed::of(&c.encrypt("ek-both", &[i], None, false)))
        .collect();
    for (i, s) in sealed.iter().enumerate() {
        assert_eq!(
            c.decrypt("ek-both", s, None).bytes("plaintext"),
            vec![i as u8]
        );
    }
}
