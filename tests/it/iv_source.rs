//! `hsm.iv_source`: where the AES-GCM IV comes from. On every token, a
//! setting the token does not honour never lets a ciphertext out, and
//! `kmsgate doctor` says which settings the token offers. On Kryoptic the
//! token makes the IV in PKCS#11 3.0's C_EncryptMessage
//! (`iv_source = "message"`), a path SoftHSM2 (PKCS#11 2.40) cannot run.

use std::collections::HashSet;

use aws_sdk_kms::primitives::Blob;

use crate::common::*;

/// The IV a blob carries (docs/ciphertext-format.md: bytes 22..34).
fn iv_of(blob: &[u8]) -> [u8; 12] {
    blob[22..34].try_into().unwrap()
}

pub(crate) fn with_iv_source(value: &str) -> std::sync::Arc<Token> {
    let token = Token::new();
    let config = std::fs::read_to_string(token.config()).unwrap();
    std::fs::write(
        token.config(),
        config.replace(
            "token_label = \"kmsgate\"",
            &format!("token_label = \"kmsgate\"\niv_source = \"{value}\""),
        ),
    )
    .unwrap();
    token
}

#[test]
fn the_doctor_names_the_iv_sources_the_token_offers_and_fails_one_it_does_not() {
    let offered = match implementation() {
        Implementation::SoftHsm2 => "the token offers \"caller\"\n",
        Implementation::Kryoptic(_) => "the token offers \"caller\", \"message\"\n",
    };
    let token = Token::new();
    let (ok, out, _) = token.run_cli(&["doctor", "--config", &token.config().to_string_lossy()]);
    assert!(ok, "{out}");
    assert!(out.contains(offered), "{out}");
    // Neither generates the IV in C_Encrypt.
    for source in ["token", "token_appended"] {
        let token = with_iv_source(source);
        let (ok, out, _) =
            token.run_cli(&["doctor", "--config", &token.config().to_string_lossy()]);
        assert!(!ok, "{out}");
        let line = out.lines().find(|l| l.contains("IV source")).unwrap();
        assert!(line.starts_with("FAIL"), "{out}");
        assert!(
            line.contains(&format!("\"{source}\" does not work")),
            "{out}"
        );
    }
}

#[tokio::test]
async fn a_token_that_does_not_make_the_iv_never_lets_its_ciphertext_out() {
    a_zero_iv_is_refused("token", "left the GCM IV buffer zero").await;
    a_zero_iv_is_refused("token_appended", "not ciphertext, tag and a 12-byte IV").await;
}

async fn a_zero_iv_is_refused(source: &str, logged: &str) {
    let gw = Gateway::start_on(with_iv_source(source));
    let kms = gw.client();
    let key = create_key(&kms).await;
    let e = kms
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(b"secret".to_vec()))
        .send()
        .await
        .unwrap_err();
    let (code, _) = error_of(&e);
    assert_eq!(code, "KeyUnavailableException");
    assert_eq!(e.raw_response().unwrap().status().as_u16(), 500);
    let with_plaintext = kms
        .generate_data_key()
        .key_id(&key)
        .number_of_bytes(32)
        .send()
        .await;
    assert_eq!(
        with_plaintext.map_err(|e| error_of(&e).0).err().as_deref(),
        Some(code.as_str())
    );
    let without = kms
        .generate_data_key_without_plaintext()
        .key_id(&key)
        .number_of_bytes(32)
        .send()
        .await;
    assert_eq!(
        without.map_err(|e| error_of(&e).0).err().as_deref(),
        Some(code.as_str())
    );
    assert!(gw.log_has(|l| l.contains(logged)), "{source}: {}", gw.log());
}

#[tokio::test]
async fn message_based_encryption_takes_the_ivs_the_token_makes() {
    if implementation() == Implementation::SoftHsm2 {
        eprintln!("SoftHSM2 2.6 has no C_EncryptMessage (PKCS#11 2.40): Kryoptic runs this test");
        return;
    }
    let gw = Gateway::start_on(with_iv_source("message"));
    assert!(gw.log_has(|l| l.contains("C_GenerateRandom + C_EncryptMessage")));
    let kms = gw.client();
    let key = create_key(&kms).await;
    let mut ivs = HashSet::new();
    for _ in 0..20 {
        let blob = encrypt(&kms, &key, b"the same plaintext").await;
        assert!(ivs.insert(iv_of(blob.as_ref())), "an IV came twice");
        assert_eq!(decrypt(&kms, blob).await, b"the same plaintext");
    }
    assert!(!ivs.contains(&[0; 12]));
    let dk = kms
        .generate_data_key()
        .key_id(&key)
        .number_of_bytes(32)
        .send()
        .await
        .unwrap();
    let blob = dk.ciphertext_blob.unwrap();
    assert!(ivs.insert(iv_of(blob.as_ref())));
    assert_eq!(
        decrypt(&kms, blob).await,
        dk.plaintext.unwrap().into_inner()
    );
    let dk = kms
        .generate_data_key_without_plaintext()
        .key_id(&key)
        .number_of_bytes(32)
        .send()
        .await
        .unwrap();
    let blob = dk.ciphertext_blob.unwrap();
    assert!(ivs.insert(iv_of(blob.as_ref())));
    assert_eq!(decrypt(&kms, blob).await.len(), 32);
}

#[tokio::test]
async fn without_plaintext_data_keys_are_wrapped_on_the_token_where_it_offers_gcm_wrapping() {
    let token = Token::with_config("[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let gw = Gateway::start_on(token);
    let addr = crate::metrics::metrics_addr(|| gw.log());
    let kms = gw.client();
    let key = create_key(&kms).await;
    let dk = kms
        .generate_data_key_without_plaintext()
        .key_id(&key)
        .number_of_bytes(32)
        .send()
        .await
        .unwrap();
    assert_eq!(decrypt(&kms, dk.ciphertext_blob.unwrap()).await.len(), 32);
    let (_, body) = tokio::task::spawn_blocking(move || crate::metrics::scrape(&addr))
        .await
        .unwrap();
    let wraps = crate::metrics::sum(
        &body,
        "kmsgate_token_call_duration_seconds_count",
        &["function=\"C_WrapKey\""],
    );
    // SoftHSM2 does not offer CKM_AES_GCM for C_WrapKey; Kryoptic does,
    // and there the data key's plaintext never leaves the token.
    match implementation() {
        Implementation::SoftHsm2 => {
            assert_eq!(wraps, 0.0);
            assert!(gw.log_has(|l| l.contains("data_key_path=\"C_GenerateRandom + C_Encrypt")));
        }
        Implementation::Kryoptic(_) => {
            assert_eq!(wraps, 1.0, "{body}");
            assert!(gw.log_has(|l| l.contains("data_key_path=\"C_WrapKey with CKM_AES_GCM")));
        }
    }
}
