//! Who may call: requests signed with a configured credential only, and a
//! credential restricted to some actions.

use crate::common::*;
use aws_sdk_kms::types::{DataKeySpec, KeyState};

#[tokio::test]
async fn requests_must_be_signed_with_a_configured_credential() {
    let gw = Gateway::start();
    let r = gw.raw(Some("TrentService.ListKeys"), b"{}", false);
    assert_eq!(
        (r.status, r.error_type()),
        (400, "MissingAuthenticationTokenException")
    );

    let e = gw
        .client_as("AKIAUNKNOWNUNKNOWN00", SECRET, REGION)
        .list_keys()
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "UnrecognizedClientException".into(),
            "The security token included in the request is invalid.".into()
        )
    );

    let e = gw
        .client_as(ACCESS_KEY, "not-the-secret", REGION)
        .create_key()
        .send()
        .await
        .unwrap_err();
    let (code, message) = error_of(&e);
    assert_eq!(code, "InvalidSignatureException");
    assert!(
        message.starts_with("The request signature we calculated does not match"),
        "{message}"
    );
    // The refused CreateKey created nothing.
    let keys = gw.client().list_keys().send().await.unwrap();
    assert!(keys.keys.unwrap_or_default().is_empty());

    let e = gw
        .client_as(ACCESS_KEY, SECRET, "eu-west-1")
        .list_keys()
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "InvalidSignatureException");

    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(6 * 60);
    let r = gw.raw_with(Some("TrentService.ListKeys"), b"{}", Some(old), &[]);
    assert_eq!(r.error_type(), "InvalidSignatureException");
    assert!(
        r.message().starts_with("Signature expired"),
        "{}",
        r.message()
    );
}

#[tokio::test]
async fn a_credential_restricted_to_some_actions_is_refused_the_others() {
    const APP_KEY: &str = "AKIAKMSGATEAPPONLY01";
    const APP_SECRET: &str = "app-secret-0123456789abcdefghijklmnopqrs";
    let token = Token::with_config(&format!(
        "[[auth.credentials]]\naccess_key_id = \"{APP_KEY}\"\nsecret_env = \"KMSGATE_TEST_APP_SECRET\"\nprincipal = \"app\"\nallow = [\"kms:Decrypt\", \"kms:GenerateDataKey*\", \"kms:DescribeKey\"]\n"
    ));
    let gw = Gateway::start_on_with_env(token, &[("KMSGATE_TEST_APP_SECRET", APP_SECRET)]);
    let admin = gw.client();
    let app = gw.client_as(APP_KEY, APP_SECRET, REGION);
    let id = create_key(&admin).await;

    let dk = app
        .generate_data_key()
        .key_id(&id)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    app.decrypt()
        .ciphertext_blob(dk.ciphertext_blob.unwrap())
        .send()
        .await
        .unwrap();
    app.describe_key().key_id(&id).send().await.unwrap();

    let e = app
        .schedule_key_deletion()
        .key_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "AccessDeniedException".into(),
            format!(
                "User: arn:aws:iam::{ACCOUNT}:user/app is not authorized to perform: kms:ScheduleKeyDeletion on resource: arn:aws:kms:{REGION}:{ACCOUNT}:key/{id} because no identity-based policy allows the kms:ScheduleKeyDeletion action"
            )
        )
    );
    let e = app.create_key().send().await.unwrap_err();
    assert_eq!(error_of(&e).0, "AccessDeniedException");
    // Refused requests changed nothing.
    let m = admin.describe_key().key_id(&id).send().await.unwrap();
    assert_eq!(m.key_metadata.unwrap().key_state, Some(KeyState::Enabled));
    assert_eq!(
        admin.list_keys().send().await.unwrap().keys.unwrap().len(),
        1
    );
}
