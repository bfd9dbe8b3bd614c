//! Black-box specification of HMAC keys: CreateKey with an HMAC key spec,
//! their KeyMetadata, GenerateMac and VerifyMac on the token, and the
//! refusals AWS gives when a key is used for what its usage does not allow.
//! The real binary on a real SoftHSM2 token, driven by aws-sdk-kms, and by
//! raw HTTP where the exact body of an error is the point.
//!
//! The MAC cannot be checked against an independent HMAC: the key never
//! leaves the token. What is checked instead: determinism, the length per
//! spec, that one flipped bit is refused, that another key gives another
//! MAC, and that MACs still verify after a restart.

#[path = "hmac_client/mod.rs"]
mod hmac_client;

use crate::common::*;
use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MacAlgorithmSpec};
use hmac_client::*;
use serde_json::json;

const SPECS: [(KeySpec, MacAlgorithmSpec, usize); 4] = [
    (KeySpec::Hmac224, MacAlgorithmSpec::HmacSha224, 28),
    (KeySpec::Hmac256, MacAlgorithmSpec::HmacSha256, 32),
    (KeySpec::Hmac384, MacAlgorithmSpec::HmacSha384, 48),
    (KeySpec::Hmac512, MacAlgorithmSpec::HmacSha512, 64),
];

#[tokio::test]
async fn hmac_keys_of_every_spec_are_described_as_aws_describes_them() {
    let gw = Gateway::start();
    let kms = gw.client();
    for (spec, alg, _) in SPECS {
        let created = kms
            .create_key()
            .key_spec(spec.clone())
            .key_usage(KeyUsageType::GenerateVerifyMac)
            .send()
            .await
            .unwrap()
            .key_metadata
            .unwrap();
        let id = created.key_id.clone();
        let r = gw.raw(
            Some("TrentService.DescribeKey"),
            json!({ "KeyId": id }).to_string().as_bytes(),
            true,
        );
        assert_eq!(r.status, 200);
        let m = &r.body["KeyMetadata"];
        assert_eq!(m["KeySpec"], spec.as_str());
        assert_eq!(m["CustomerMasterKeySpec"], spec.as_str());
        assert_eq!(m["KeyUsage"], "GENERATE_VERIFY_MAC");
        assert_eq!(m["MacAlgorithms"], json!([alg.as_str()]));
        assert_eq!(m["KeyState"], "Enabled");
        assert_eq!(m["Origin"], "AWS_KMS");
        for absent in [
            "EncryptionAlgorithms",
            "SigningAlgorithms",
            "CurrentKeyMaterialId",
        ] {
            assert!(m.get(absent).is_none(), "{absent} present: {m}");
        }
        // CreateKey's metadata says the same.
        assert_eq!(created.key_usage, Some(KeyUsageType::GenerateVerifyMac));
        assert_eq!(created.key_spec, Some(spec.clone()));
        assert_eq!(created.mac_algorithms, Some(vec![alg.clone()]));
        assert_eq!(created.encryption_algorithms, None);
    }
    // A symmetric key still lists its encryption algorithm and no MACs.
    let sym = create_key(&kms).await;
    let m = key_metadata(&kms, &sym).await;
    assert_eq!(m.mac_algorithms, None);
    assert_eq!(m.key_usage, Some(KeyUsageType::EncryptDecrypt));
}

#[tokio::test]
async fn generate_mac_is_deterministic_per_key_and_verify_mac_refuses_any_change() {
    let gw = Gateway::start();
    let kms = gw.client();
    let message = b"webhook body: {\"event\":\"paid\"}";
    for (spec, alg, len) in SPECS {
        let key = create_hmac_key(&kms, spec.clone()).await;
        let a = mac(&kms, &key, alg.clone(), message).await;
        assert_eq!(a.len(), len, "{spec:?}");
        assert_eq!(a, mac(&kms, &key, alg.clone(), message).await);
        assert_ne!(a, mac(&kms, &key, alg.clone(), b"another message").await);
        let other = create_hmac_key(&kms, spec.clone()).await;
        assert_ne!(a, mac(&kms, &other, alg.clone(), message).await);

        assert_eq!(verify(&kms, &key, alg.clone(), message, &a).await, Ok(()));
        for bit in [0, 7, len * 8 - 1] {
            let mut flipped = a.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                verify(&kms, &key, alg.clone(), message, &flipped).await,
                invalid_mac(),
                "{spec:?} bit {bit}"
            );
        }
        assert_eq!(
            verify(&kms, &key, alg.clone(), message, &a[..len - 1]).await,
            invalid_mac()
        );
        assert_eq!(
            verify(&kms, &key, alg.clone(), b"webhook body: tampered", &a).await,
            invalid_mac()
        );
        assert_eq!(
            verify(&kms, &other, alg.clone(), message, &a).await,
            invalid_mac()
        );
    }
    // The refusal has no message member, as AWS sends it.
    let key = create_hmac_key(&kms, KeySpec::Hmac256).await;
    let r = gw.raw(
        Some("TrentService.VerifyMac"),
        json!({"KeyId": key, "MacAlgorithm": "HMAC_SHA_256", "Message": "aGVsbG8=", "Mac": "AAAA"})
            .to_string()
            .as_bytes(),
        true,
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.body, json!({"__type": "KMSInvalidMacException"}));
    // Neither messages nor MACs reach the log or the audit trail: read
    // once the last request's own audit record is in it (records land a
    // moment after their response), so that record is checked too.
    let last = kms
        .generate_mac()
        .key_id(&key)
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .message(Blob::new(message.to_vec()))
        .send()
        .await
        .unwrap();
    let id = last.request_id().expect("x-amzn-RequestId").to_owned();
    let a = last.mac.unwrap().into_inner();
    assert!(
        gw.log_has(|l| l.contains("kmsgate::audit")
            && l.contains(&format!("\"requestID\":\"{id}\""))
            && l.contains("\"eventName\":\"GenerateMac\"")),
        "no audit record of the last GenerateMac ({id})"
    );
    let log = gw.log();
    for secret in [base64_encode(message), base64_encode(&a), hex_of(&a)] {
        assert!(!log.contains(&secret), "{secret} in the log");
    }
}

#[tokio::test]
async fn macs_verify_after_a_restart_and_the_key_is_the_same() {
    let gw = Gateway::start();
    let kms = gw.client();
    let key = create_hmac_key(&kms, KeySpec::Hmac384).await;
    let before = mac(
        &kms,
        &key,
        MacAlgorithmSpec::HmacSha384,
        b"jwt.header.payload",
    )
    .await;
    let token = gw.stop();
    let gw = Gateway::start_on(token);
    let kms = gw.client();
    assert_eq!(
        verify(
            &kms,
            &key,
            MacAlgorithmSpec::HmacSha384,
            b"jwt.header.payload",
            &before
        )
        .await,
        Ok(())
    );
    assert_eq!(
        mac(
            &kms,
            &key,
            MacAlgorithmSpec::HmacSha384,
            b"jwt.header.payload"
        )
        .await,
        before
    );
    let m = key_metadata(&kms, &key).await;
    assert_eq!(m.key_spec, Some(KeySpec::Hmac384));
}

#[tokio::test]
async fn keys_are_refused_for_what_their_usage_does_not_allow_both_ways() {
    let gw = Gateway::start();
    let kms = gw.client();
    let hmac = create_hmac_key(&kms, KeySpec::Hmac256).await;
    let sym = create_key(&kms).await;
    let blob = encrypt(&kms, &sym, b"secret").await.into_inner();
    let not_for = |arn: &str, usage: &str, op: &str| {
        (
            400,
            "InvalidKeyUsageException".to_owned(),
            format!("{arn} key usage is {usage} which is not valid for {op}."),
        )
    };
    let call = |op: &str, body: serde_json::Value| {
        let r = gw.raw(
            Some(&format!("TrentService.{op}")),
            body.to_string().as_bytes(),
            true,
        );
        (r.status, r.error_type().to_owned(), r.message().to_owned())
    };
    let mac_usage = |op| not_for(&key_arn(&hmac), "GENERATE_VERIFY_MAC", op);
    assert_eq!(
        call("Encrypt", json!({"KeyId": hmac, "Plaintext": "aGVsbG8="})),
        mac_usage("Encrypt")
    );
    assert_eq!(
        call(
            "GenerateDataKey",
            json!({"KeyId": hmac, "KeySpec": "AES_256"})
        ),
        mac_usage("GenerateDataKey")
    );
    assert_eq!(
        call(
            "GenerateDataKeyWithoutPlaintext",
            json!({"KeyId": hmac, "NumberOfBytes": 16})
        ),
        mac_usage("GenerateDataKeyWithoutPlaintext")
    );
    let b64 = |b: &[u8]| base64_encode(b);
    assert_eq!(
        call(
            "ReEncrypt",
            json!({"CiphertextBlob": b64(&blob), "DestinationKeyId": hmac})
        ),
        mac_usage("ReEncrypt")
    );
    // Decrypt naming the HMAC key: recorded from AWS as IncorrectKeyException.
    assert_eq!(
        call(
            "Decrypt",
            json!({"CiphertextBlob": b64(&blob), "KeyId": hmac})
        )
        .1,
        "IncorrectKeyException"
    );
    // And the other way round.
    for op in ["GenerateMac", "VerifyMac"] {
        assert_eq!(
            call(
                op,
                json!({"KeyId": sym, "MacAlgorithm": "HMAC_SHA_256", "Message": "aGVsbG8=", "Mac": "AAAA"})
            ),
            not_for(&key_arn(&sym), "ENCRYPT_DECRYPT", op)
        );
    }
    // An algorithm that does not fit the key's spec, and one that does not exist.
    let h224 = create_hmac_key(&kms, KeySpec::Hmac224).await;
    assert_eq!(
        call(
            "GenerateMac",
            json!({"KeyId": h224, "MacAlgorithm": "HMAC_SHA_256", "Message": "aGVsbG8="})
        ),
        (
            400,
            "InvalidKeyUsageException".to_owned(),
            "Algorithm HMAC_SHA_256 is incompatible with key spec HMAC_224.".to_owned()
        )
    );
    assert_eq!(
        call(
            "GenerateMac",
            json!({"KeyId": h224, "MacAlgorithm": "INVALID", "Message": "aGVsbG8="})
        ),
        (
            400,
            "ValidationException".to_owned(),
            "1 validation error detected: Value 'INVALID' at 'macAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: [HMAC_SHA_384, HMAC_SHA_256, HMAC_SHA_224, HMAC_SHA_512]".to_owned()
        )
    );
    assert_eq!(
        call(
            "GenerateMac",
            json!({"KeyId": h224, "MacAlgorithm": "HMAC_SHA_224", "Message": b64(&[1; 4097])})
        ),
        (
            400,
            "ValidationException".to_owned(),
            "1 validation error detected: Value at 'message' failed to satisfy constraint: Member must have length less than or equal to 4096".to_owned()
        )
    );
    assert_eq!(
        call(
            "GenerateMac",
            json!({"KeyId": "key_id", "MacAlgorithm": "HMAC_SHA_224", "Message": "aGVsbG8="})
        ),
        (
            400,
            "NotFoundException".to_owned(),
            "Invalid keyId 'key_id'".to_owned()
        )
    );
    // The largest message is fine.
    assert_eq!(
        mac(&kms, &h224, MacAlgorithmSpec::HmacSha224, &[9; 4096])
            .await
            .len(),
        28
    );
}

#[tokio::test]
async fn create_key_refuses_a_usage_that_does_not_fit_the_spec() {
    let gw = Gateway::start();
    for body in [
        json!({"KeySpec": "HMAC_256", "KeyUsage": "ENCRYPT_DECRYPT"}),
        json!({"KeySpec": "HMAC_512", "KeyUsage": "SIGN_VERIFY"}),
        json!({"KeyUsage": "GENERATE_VERIFY_MAC"}),
        json!({"CustomerMasterKeySpec": "HMAC_384", "KeyUsage": "ENCRYPT_DECRYPT"}),
    ] {
        let r = gw.raw(
            Some("TrentService.CreateKey"),
            body.to_string().as_bytes(),
            true,
        );
        assert_eq!(
            (r.status, r.error_type()),
            (400, "ValidationException"),
            "{body}"
        );
        assert!(
            r.message().contains("is not compatible with KeySpec"),
            "{body}: {}",
            r.message()
        );
    }
    let keys = gw.client().list_keys().send().await.unwrap();
    assert!(
        keys.keys.unwrap_or_default().is_empty(),
        "nothing was created"
    );
}

#[tokio::test]
async fn hmac_keys_do_not_rotate_and_state_and_dry_run_apply() {
    let gw = Gateway::start();
    let kms = gw.client();
    let key = create_hmac_key(&kms, KeySpec::Hmac256).await;
    for op in [
        "EnableKeyRotation",
        "DisableKeyRotation",
        "GetKeyRotationStatus",
        "RotateKeyOnDemand",
        "ListKeyRotations",
    ] {
        let r = gw.raw(
            Some(&format!("TrentService.{op}")),
            json!({ "KeyId": key }).to_string().as_bytes(),
            true,
        );
        assert_eq!(r.status, 400, "{op}");
        assert_eq!(
            r.body,
            json!({"__type": "UnsupportedOperationException"}),
            "{op}"
        );
    }

    let e = kms
        .generate_mac()
        .key_id(&key)
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .message(Blob::new(b"m".to_vec()))
        .dry_run(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "DryRunOperationException");

    kms.disable_key().key_id(&key).send().await.unwrap();
    let e = kms
        .generate_mac()
        .key_id(&key)
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .message(Blob::new(b"m".to_vec()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "DisabledException".into(),
            format!("{} is disabled.", key_arn(&key))
        )
    );
}

#[tokio::test]
async fn grants_on_hmac_keys_allow_only_mac_operations() {
    let gw = Gateway::start();
    let kms = gw.client();
    let key = create_hmac_key(&kms, KeySpec::Hmac256).await;
    let grantee = format!("arn:aws:iam::{ACCOUNT}:user/tester");
    let r = gw.raw(
        Some("TrentService.CreateGrant"),
        json!({"KeyId": key, "GranteePrincipal": grantee, "Operations": ["GenerateMac", "Encrypt"]})
            .to_string()
            .as_bytes(),
        true,
    );
    assert_eq!(
        (r.status, r.error_type(), r.message()),
        (
            400,
            "ValidationException",
            "Grant operation Encrypt is not valid for an HMAC KMS key."
        )
    );
    let r = gw.raw(
        Some("TrentService.CreateGrant"),
        json!({"KeyId": key, "GranteePrincipal": grantee, "Operations": ["GenerateMac", "VerifyMac", "DescribeKey"]})
            .to_string()
            .as_bytes(),
        true,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let sym = create_key(&kms).await;
    let r = gw.raw(
        Some("TrentService.CreateGrant"),
        json!({"KeyId": sym, "GranteePrincipal": grantee, "Operations": ["GenerateMac"]})
            .to_string()
            .as_bytes(),
        true,
    );
    assert_eq!(
        r.message(),
        "Grant operation GenerateMac is not valid for a symmetric encryption KMS key."
    );
}

#[tokio::test]
async fn hmac_keys_cannot_be_read_or_wrapped_out_of_the_token() {
    let gw = Gateway::start();
    let kms = gw.client();
    let keys = [
        create_hmac_key(&kms, KeySpec::Hmac224).await,
        create_hmac_key(&kms, KeySpec::Hmac512).await,
    ];
    let token = gw.stop();
    let config = token.config();
    let (ok, stdout, stderr) = token.run_cli(&["check-keys", "--config", config.to_str().unwrap()]);
    assert!(ok, "check-keys failed:\n{stdout}\n{stderr}");
    for (id, spec) in keys.iter().zip(["HMAC_224", "HMAC_512"]) {
        let line = stdout
            .lines()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("no line for {id} in:\n{stdout}"));
        for fact in [
            &format!("spec={spec}") as &str,
            "sensitive=true",
            "extractable=false",
            "never_extractable=true",
            "value_readable=false",
            "wrap_out=refused",
            " ok",
        ] {
            assert!(line.contains(fact), "{fact} missing in: {line}");
        }
    }
}
