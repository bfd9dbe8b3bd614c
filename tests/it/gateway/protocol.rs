//! The protocol: AWS-shaped errors with a request id, oversized bodies,
//! DryRun.

use crate::common::*;
use aws_sdk_kms::primitives::Blob;

#[tokio::test]
async fn protocol_errors_are_aws_shaped_and_every_response_has_a_request_id() {
    let gw = Gateway::start();
    let cases: [(Option<&str>, &[u8], u16, &str); 6] = [
        (
            Some("TrentService.NoSuchThing"),
            b"{}",
            400,
            "UnknownOperationException",
        ),
        (
            Some("Other.ListKeys"),
            b"{}",
            400,
            "UnknownOperationException",
        ),
        (None, b"{}", 400, "UnknownOperationException"),
        (
            Some("TrentService.ListKeys"),
            b"{not json",
            400,
            "SerializationException",
        ),
        (
            Some("TrentService.ListKeys"),
            br#"{"Limit":"ten"}"#,
            400,
            "SerializationException",
        ),
        (
            Some("TrentService.ReplicateKey"),
            b"{}",
            400,
            "UnsupportedOperationException",
        ),
    ];
    for (target, body, status, error) in cases {
        let r = gw.raw(target, body, true);
        assert_eq!((r.status, r.error_type()), (status, error), "{target:?}");
        assert_eq!(r.header("x-amzn-errortype"), Some(error));
        let id = r.header("x-amzn-requestid").unwrap_or_default();
        assert_eq!(id.len(), 36, "request id {id:?}");
    }
    let ok = gw.raw(Some("TrentService.ListKeys"), b"", true);
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("content-type"),
        Some("application/x-amz-json-1.1")
    );
    assert!(ok.header("x-amzn-requestid").is_some());
    assert_eq!(ok.body["Truncated"], serde_json::json!(false));
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_parsing() {
    let gw = Gateway::start();
    let body = vec![b' '; 200 * 1024];
    let r = gw.raw(Some("TrentService.ListKeys"), &body, true);
    assert_eq!(r.status, 413);
    assert_eq!(r.error_type(), "RequestEntityTooLargeException");
}

#[tokio::test]
async fn dry_run_checks_everything_and_does_nothing() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key(&kms).await;
    let e = kms
        .generate_data_key()
        .key_id(&id)
        .number_of_bytes(32)
        .dry_run(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "DryRunOperationException".into(),
            "The request would have succeeded, but the DryRun option is set.".into()
        )
    );
    // A dry run of something that would fail reports the failure.
    kms.disable_key().key_id(&id).send().await.unwrap();
    let e = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new("x"))
        .dry_run(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "DisabledException");
}
