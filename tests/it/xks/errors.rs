//! The rows of the spec's error table this layer produces: status and
//! errorName on one line of JSON, and what each refusal leaves unchanged.
//! (The auth helper's tests cover 401, 403 and 429 in depth.)

use std::time::SystemTime;

use serde_json::json;

use super::client::{Sealed, XksClient, b64};
use super::*;

#[tokio::test]
async fn a_wrong_signature_is_authentication_failed() {
    let (gw, c, _) = usual().await;
    let mut wrong = c.clone();
    wrong.secret = "another0Secret0123456789abcdefghijklmnopqrstu".into();
    wrong
        .metadata("ek-both")
        .assert_error(401, "AuthenticationFailedException");
    let body = serde_json::to_vec(&XksClient::encrypt_body(b"x", None, false)).unwrap();
    c.send("POST", &c.path("/keys/ek-both/encrypt"), &body, None)
        .assert_error(401, "AuthenticationFailedException");
    // Signed for another region: another scope.
    let mut region = c.clone();
    region.region = "us-west-2".into();
    region
        .health()
        .assert_error(401, "AuthenticationFailedException");
    // The TrentService API is unchanged beside it.
    create_key(&gw.client()).await;
}

/// Over HTTP/2 a refused path is answered once its body is in, not while
/// the client is still sending it: an answer before the body makes hyper
/// reset the stream, and curl (AWS's compliance client runs it, HTTP/2 by
/// default over TLS) then reports the reset (error 92) instead of the
/// answer.
#[tokio::test]
async fn over_http2_a_refused_path_is_answered_after_its_body() {
    let (_gw, c, _) = usual().await;
    for path in [
        "/other/kms/xks/v1/keys/ek-both/encrypt",
        "/xks/kms/xks/v1/keys/ek-both/sign",
    ] {
        let (status, v) =
            crate::http::h2_answer_after_body(&c.addr, "POST", path, "application/json").await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(v["errorName"], "InvalidUriPathException", "{path}");
    }
}

#[tokio::test]
async fn paths_and_methods_the_api_does_not_have_are_refused() {
    let (_gw, c, _) = usual().await;
    let body =
        serde_json::to_vec(&json!({"requestMetadata": XksClient::request_metadata("x")})).unwrap();
    let now = Some(SystemTime::now());
    for path in [
        "/other/kms/xks/v1/health",
        "/xks/kms/xks/v1/keys/ek-both/sign",
        "/xks/kms/xks/v1/keys/ek-both",
        "/xks/kms/xks/v1/keys",
        "/xks/kms/xks/v1",
        "/xks/kms/xks/v1/healthz",
    ] {
        c.send("POST", path, &body, now)
            .assert_error(404, "InvalidUriPathException");
    }
    for path in [
        "/xks/kms/xks/v1/health",
        "/xks/kms/xks/v1/keys/ek-both/encrypt",
    ] {
        let r = c.send("GET", path, b"", now);
        assert_eq!(r.status, 405, "{path}: {}", r.text);
        assert_eq!(r.header("allow"), Some("POST"));
    }
}

#[tokio::test]
async fn malformed_requests_are_validation_exceptions() {
    let (_gw, c, _) = usual().await;
    let good = XksClient::encrypt_body(b"plain", Some(b"aad"), false);
    let broken = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut b = good.clone();
        f(&mut b);
        b
    };
    let cases: Vec<(&str, serde_json::Value)> = vec![
        (
            "no requestMetadata",
            broken(&|b| {
                b.as_object_mut().unwrap().remove("requestMetadata");
            }),
        ),
        (
            "no awsPrincipalArn",
            broken(&|b| {
                b["requestMetadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("awsPrincipalArn");
            }),
        ),
        (
            "no kmsRequestId",
            broken(&|b| {
                b["requestMetadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("kmsRequestId");
            }),
        ),
        (
            "no kmsOperation",
            broken(&|b| {
                b["requestMetadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("kmsOperation");
            }),
        ),
        (
            "no kmsKeyArn",
            broken(&|b| {
                b["requestMetadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("kmsKeyArn");
            }),
        ),
        (
            "no plaintext",
            broken(&|b| {
                b.as_object_mut().unwrap().remove("plaintext");
            }),
        ),
        (
            "plaintext not Base64",
            broken(&|b| b["plaintext"] = "*not base64*".into()),
        ),
        ("plaintext a number", broken(&|b| b["plaintext"] = 5.into())),
        (
            "no encryptionAlgorithm",
            broken(&|b| {
                b.as_object_mut().unwrap().remove("encryptionAlgorithm");
            }),
        ),
        (
            "AES_CBC",
            broken(&|b| b["encryptionAlgorithm"] = "AES_CBC".into()),
        ),
        (
            "SHA_1",
            broken(&|b| b["ciphertextDataIntegrityValueAlgorithm"] = "SHA_1".into()),
        ),
        (
            "AAD not Base64",
            broken(&|b| b["additionalAuthenticatedData"] = "%%".into()),
        ),
    ];
    for (what, body) in cases {
        let r = c.post("/keys/ek-both/encrypt", &body);
        assert_eq!(
            (r.status, r.error_name()),
            (400, "ValidationException"),
            "{what}: {}",
            r.text
        );
    }
    c.send(
        "POST",
        &c.path("/keys/ek-both/metadata"),
        b"{not json",
        Some(SystemTime::now()),
    )
    .assert_error(400, "ValidationException");
    c.post(
        "/health",
        &json!({"requestMetadata": {"kmsOperation": "KmsHealthCheck"}}),
    )
    .assert_error(400, "ValidationException");
    c.post("/health", &json!({}))
        .assert_error(400, "ValidationException");

    let sealed = Sealed::of(&c.encrypt("ek-both", b"plain", None, false));
    let dec = XksClient::decrypt_body(&sealed, None);
    let broken = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut b = dec.clone();
        f(&mut b);
        b
    };
    for (what, body) in [
        (
            "IV of 11 bytes",
            broken(&|b| b["initializationVector"] = b64(&[0; 11]).into()),
        ),
        (
            "tag of 15 bytes",
            broken(&|b| b["authenticationTag"] = b64(&[0; 15]).into()),
        ),
        (
            "metadata of 21 bytes",
            broken(&|b| b["ciphertextMetadata"] = b64(&[1; 21]).into()),
        ),
        (
            "no ciphertext",
            broken(&|b| {
                b.as_object_mut().unwrap().remove("ciphertext");
            }),
        ),
        (
            "no tag",
            broken(&|b| {
                b.as_object_mut().unwrap().remove("authenticationTag");
            }),
        ),
        (
            "no IV",
            broken(&|b| {
                b.as_object_mut().unwrap().remove("initializationVector");
            }),
        ),
    ] {
        let r = c.post("/keys/ek-both/decrypt", &body);
        assert_eq!(
            (r.status, r.error_name()),
            (400, "ValidationException"),
            "{what}: {}",
            r.text
        );
    }
}

#[tokio::test]
async fn unknown_operations_and_new_metadata_members_are_accepted() {
    let (_gw, c, _) = usual().await;
    let mut body = XksClient::encrypt_body(b"new", None, false);
    body["requestMetadata"]["kmsOperation"] = "BulkEncrypt".into();
    body["requestMetadata"]["kmsRequestId"] = "not-a-uuid at all".into();
    body["requestMetadata"]["someFutureField"] = json!({"nested": [1, 2]});
    body["someFutureMember"] = "x".into();
    let sealed = Sealed::of(&c.post("/keys/ek-both/encrypt", &body));
    let mut body = XksClient::decrypt_body(&sealed, None);
    body["requestMetadata"]["kmsOperation"] = "BulkDecrypt".into();
    assert_eq!(
        c.post("/keys/ek-both/decrypt", &body).bytes("plaintext"),
        b"new"
    );
    let r = c.post(
        "/health",
        &json!({"requestMetadata": {"kmsRequestId": "r", "kmsOperation": "SomethingNew", "more": 1}}),
    );
    r.assert_ok();
}

#[tokio::test]
async fn a_failing_token_is_a_5xx_never_a_4xx() {
    let token =
        Token::with_faulty_config(&format!("[xks]\nhealth_cache_secs = 0\n{}", usual_store()));
    let gw = Gateway::start_faulty_on_with_env(token, &[(XKS_SECRET_ENV, XKS_SECRET)]);
    let kms = gw.client();
    key_with_alias(&kms, "alias/xks-both").await;
    let c = client(&gw, "/xks");
    let sealed = Sealed::of(&c.encrypt("ek-both", b"kept", None, false));
    let faults = gw.faults();
    // CKR_DEVICE_ERROR on every encryption and decryption.
    faults.set("C_Encrypt fail 0x30 forever\nC_EncryptInit fail 0x30 forever\nC_Decrypt fail 0x30 forever\nC_DecryptInit fail 0x30 forever");
    for r in [
        c.encrypt("ek-both", b"x", None, false),
        c.decrypt("ek-both", &sealed, None),
    ] {
        assert!(
            matches!(
                r.error_name(),
                "InternalException" | "DependencyTimeoutException"
            ) && r.status >= 500,
            "{}: {}",
            r.status,
            r.text
        );
    }
    faults.clear();
    assert_eq!(
        c.decrypt("ek-both", &sealed, None).bytes("plaintext"),
        b"kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_token_is_dependency_timeout_503_within_the_deadline() {
    let token = Token::with_faulty_hsm(
        "call_timeout_ms = 1000\nqueue_timeout_ms = 1000",
        &usual_store(),
    );
    let gw = Gateway::start_faulty_on_with_env(token, &[(XKS_SECRET_ENV, XKS_SECRET)]);
    key_with_alias(&gw.client(), "alias/xks-both").await;
    let c = client(&gw, "/xks");
    let sealed = Sealed::of(&c.encrypt("ek-both", b"kept", None, false));
    let faults = gw.faults();
    faults.set("C_Encrypt stall forever");
    let started = std::time::Instant::now();
    let r = c.encrypt("ek-both", b"x", None, false);
    let waited = started.elapsed();
    r.assert_error(503, "DependencyTimeoutException");
    // The deadline is 1 s; allow for a loaded machine, never a hang.
    assert!(
        waited < std::time::Duration::from_secs(5),
        "waited {waited:?}"
    );
    faults.clear();
    assert_eq!(
        c.decrypt("ek-both", &sealed, None).bytes("plaintext"),
        b"kept"
    );
}
