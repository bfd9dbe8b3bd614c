//! Secrets stay secret: master keys never leave the token, and no PIN,
//! credential or plaintext reaches the log.

use super::base64_encode;
use crate::common::*;
use aws_sdk_kms::types::DataKeySpec;

#[tokio::test]
async fn master_keys_cannot_be_read_or_wrapped_out_of_the_token() {
    let gw = Gateway::start();
    let kms = gw.client();
    let a = create_key(&kms).await;
    let b = create_key(&kms).await;
    let token = gw.stop();
    let config = token.config();
    let (ok, stdout, stderr) = token.run_cli(&["check-keys", "--config", config.to_str().unwrap()]);
    assert!(ok, "check-keys failed:\n{stdout}\n{stderr}");
    for id in [&a, &b] {
        let line = stdout
            .lines()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("no line for {id} in:\n{stdout}"));
        for fact in [
            "sensitive=true",
            "extractable=false",
            "never_extractable=true",
            "value_readable=false",
            "wrap_out=refused",
        ] {
            assert!(line.contains(fact), "{fact} missing in: {line}");
        }
    }
}

#[tokio::test]
async fn secrets_never_reach_the_log() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key(&kms).await;
    let dk = kms
        .generate_data_key()
        .key_id(&id)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    let plaintext = base64_encode(dk.plaintext.unwrap().as_ref());
    let _ = gw
        .client_as(ACCESS_KEY, "wrong-secret-value-zzz", REGION)
        .list_keys()
        .send()
        .await;
    // Every record up to the refused one is in the log before it is read.
    assert!(
        gw.log_has(|l| l.contains("kmsgate::audit") && l.contains("InvalidSignatureException")),
        "no audit record of the refused signature in:\n{}",
        gw.log()
    );
    let log = gw.log();
    assert!(log.contains(&id), "audit records name the key");
    for secret in [PIN, SECRET, plaintext.as_str(), "wrong-secret-value-zzz"] {
        assert!(!log.contains(secret), "secret {secret:?} in the log");
    }
}
