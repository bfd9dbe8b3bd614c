//! A Decrypt that fails: SoftHSM2 reports a bad GCM tag with
//! CKR_GENERAL_ERROR, the code of a device fault, so kmsgate asks the token
//! to prove it works (an encryption and a decryption) before it blames the
//! ciphertext. That probe must not encrypt under the key's version, whose
//! GCM encryptions are counted against the usage bound (it may be at the
//! bound already), and it must make its IV as `hsm.iv_source` says, as
//! every other encryption does.

use aws_sdk_kms::primitives::Blob;

use crate::common::*;
use crate::iv_source::with_iv_source;
use crate::metrics::{metrics_addr, scrape, sum};

/// How often the token was called with `function`, as the gateway's
/// metrics count it.
async fn token_calls(addr: &str, function: &str) -> f64 {
    let addr = addr.to_owned();
    let (_, body) = tokio::task::spawn_blocking(move || scrape(&addr))
        .await
        .unwrap();
    sum(
        &body,
        "kmsgate_token_call_duration_seconds_count",
        &[&format!("function=\"{function}\"")],
    )
}

/// A v1 blob (docs/ciphertext-format.md) naming version 1 of `key_id`,
/// with a random IV, ciphertext and tag: well formed, never valid.
fn forged_blob(key_id: &str) -> Vec<u8> {
    let hex: String = key_id.chars().filter(|c| *c != '-').collect();
    let mut blob = vec![1u8];
    blob.extend((0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()));
    blob.extend_from_slice(&1u32.to_be_bytes());
    blob.push(12);
    blob.extend_from_slice(&rand::random::<[u8; 12 + 32]>());
    blob
}

#[tokio::test]
async fn failed_decrypts_never_encrypt_under_the_keys_version() {
    let token = Token::with_config(
        "[metrics]\nlisten = \"127.0.0.1:0\"\n\n[keys]\ngcm_usage_bound = 2\ngcm_reserve_block = 1\n",
    );
    let gw = Gateway::start_on(token);
    let addr = metrics_addr(|| gw.log());
    let kms = gw.client();
    let key = create_key(&kms).await;
    // The version is at its bound: one more encryption under it would be
    // one too many.
    let sealed = encrypt(&kms, &key, b"at the bound").await;
    encrypt(&kms, &key, b"at the bound").await;

    let encrypts = token_calls(&addr, "C_Encrypt").await;
    let keys_made = token_calls(&addr, "C_GenerateKey").await;
    let mut bad = sealed.clone().into_inner();
    *bad.last_mut().unwrap() ^= 1;
    const FAILED: f64 = 4.0;
    for _ in 0..FAILED as usize {
        let r = kms
            .decrypt()
            .ciphertext_blob(Blob::new(bad.clone()))
            .send()
            .await;
        let e = r.unwrap_err();
        assert_eq!(error_of(&e).0, "InvalidCiphertextException");
    }
    let probes = token_calls(&addr, "C_Encrypt").await - encrypts;
    let probe_keys = token_calls(&addr, "C_GenerateKey").await - keys_made;
    // Every encryption the failed decryptions made was under a key made
    // for it (a session key the token generated), none under the key's
    // version.
    assert_eq!(
        probes, probe_keys,
        "encryptions {probes}, keys {probe_keys}"
    );
    if implementation() == Implementation::SoftHsm2 {
        // SoftHSM2 reports each bad tag as CKR_GENERAL_ERROR: each one
        // was probed.
        assert_eq!(probes, FAILED);
    }
    // The version's count is where the two Encrypts left it: the key has
    // not rotated, and the next encryption rotates it.
    assert!(rotations(&kms, &key).await.is_empty());
    assert_eq!(decrypt(&kms, sealed).await, b"at the bound");
    encrypt(&kms, &key, b"rotates").await;
    assert_eq!(rotations(&kms, &key).await.len(), 1);
}

#[tokio::test]
async fn the_probe_of_a_failed_decrypt_makes_its_iv_as_the_config_says() {
    if implementation() != Implementation::SoftHsm2 {
        eprintln!("only SoftHSM2 reports a bad tag with CKR_GENERAL_ERROR, which the probe is for");
        return;
    }
    // SoftHSM2 does not make the IV in C_Encrypt: with iv_source = "token"
    // nothing encrypts there (iv_source.rs), the probe included. So the
    // token cannot prove it works, and a failed decryption stays a
    // retryable fault; a probe that drew its own IV would have blamed the
    // ciphertext.
    let gw = Gateway::start_on(with_iv_source("token"));
    let kms = gw.client();
    let key = create_key(&kms).await;
    let e = kms
        .decrypt()
        .ciphertext_blob(Blob::new(forged_blob(&key)))
        .send()
        .await
        .unwrap_err();
    let (code, _) = error_of(&e);
    assert_ne!(code, "InvalidCiphertextException");
    assert!(e.raw_response().unwrap().status().as_u16() >= 500, "{code}");
    assert!(
        gw.log_has(|l| l.contains("left the GCM IV buffer zero")),
        "{}",
        gw.log()
    );
}
