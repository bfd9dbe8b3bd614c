//! Client-side helpers of the HMAC tests (tests/it/hmac.rs): create an HMAC
//! key, GenerateMac and VerifyMac through aws-sdk-kms with the checks every
//! answer must pass, and the encodings a secret could leak in.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MacAlgorithmSpec};

use crate::common::{error_of, key_arn};

pub async fn create_hmac_key(kms: &aws_sdk_kms::Client, spec: KeySpec) -> String {
    crate::common::create_key_of(kms, spec, KeyUsageType::GenerateVerifyMac).await
}

pub async fn mac(
    kms: &aws_sdk_kms::Client,
    key: &str,
    alg: MacAlgorithmSpec,
    message: &[u8],
) -> Vec<u8> {
    let r = kms
        .generate_mac()
        .key_id(key)
        .mac_algorithm(alg.clone())
        .message(Blob::new(message))
        .send()
        .await
        .unwrap();
    assert_eq!(r.key_id.as_deref(), Some(key_arn(key).as_str()));
    assert_eq!(r.mac_algorithm, Some(alg));
    r.mac.unwrap().into_inner()
}

pub async fn verify(
    kms: &aws_sdk_kms::Client,
    key: &str,
    alg: MacAlgorithmSpec,
    message: &[u8],
    mac: &[u8],
) -> Result<(), (String, String)> {
    match kms
        .verify_mac()
        .key_id(key)
        .mac_algorithm(alg.clone())
        .message(Blob::new(message))
        .mac(Blob::new(mac))
        .send()
        .await
    {
        Ok(r) => {
            assert!(r.mac_valid, "a success always says MacValid");
            assert_eq!(r.key_id.as_deref(), Some(key_arn(key).as_str()));
            assert_eq!(r.mac_algorithm, Some(alg));
            Ok(())
        }
        Err(e) => Err(error_of(&e)),
    }
}

pub fn invalid_mac() -> Result<(), (String, String)> {
    Err(("KMSInvalidMacException".into(), String::new()))
}

pub fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
