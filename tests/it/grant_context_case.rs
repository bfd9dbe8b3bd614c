//! A grant's encryption-context constraint compares context keys without
//! regard to case, as AWS KMS documents. A context may carry keys that
//! differ only by case; AWS does not say which of them it reads, so
//! kmsgate admits such a context only when every one of them satisfies
//! the constraint: `{"TENANT":"acme","tenant":"globex"}` does not meet
//! `EncryptionContextSubset {"tenant":"acme"}`.

use crate::common::*;
use aws_sdk_kms::Client;
use aws_sdk_kms::types::{DataKeySpec, GrantConstraints, GrantOperation};

/// `other`'s identity policy allows nothing that a test here asks for.
const NOTHING_HERE: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:ListKeys","Resource":"*"}]}"#;

async fn generate_data_key(
    kms: &Client,
    key: &str,
    context: &[(&str, &str)],
) -> Result<(), (String, String)> {
    let mut req = kms
        .generate_data_key()
        .key_id(key)
        .key_spec(DataKeySpec::Aes256);
    for (k, v) in context {
        req = req.encryption_context(*k, *v);
    }
    req.send().await.map(|_| ()).map_err(|e| error_of(&e))
}

fn refused(key: &str) -> Result<(), (String, String)> {
    Err((
        "AccessDeniedException".into(),
        format!(
            "User: arn:aws:iam::{ACCOUNT}:user/other is not authorized to perform: kms:GenerateDataKey on resource: {} because no identity-based policy allows the kms:GenerateDataKey action",
            key_arn(key)
        ),
    ))
}

#[tokio::test]
async fn a_case_duplicate_context_key_does_not_meet_a_grant_constraint() {
    let (gw, other) = Gateway::start_with_other(NOTHING_HERE);
    let admin = gw.client();
    let subset_key = create_key(&admin).await;
    let equals_key = create_key(&admin).await;
    for (key, constraints) in [
        (
            &subset_key,
            GrantConstraints::builder()
                .encryption_context_subset("tenant", "acme")
                .build(),
        ),
        (
            &equals_key,
            GrantConstraints::builder()
                .encryption_context_equals("tenant", "acme")
                .build(),
        ),
    ] {
        admin
            .create_grant()
            .key_id(key)
            .grantee_principal(format!("arn:aws:iam::{ACCOUNT}:user/other"))
            .operations(GrantOperation::GenerateDataKey)
            .constraints(constraints)
            .send()
            .await
            .unwrap();
    }

    // The grant works, with the key in any case.
    generate_data_key(&other, &subset_key, &[("tenant", "acme")])
        .await
        .unwrap();
    generate_data_key(&other, &subset_key, &[("TENANT", "acme"), ("x", "y")])
        .await
        .unwrap();
    generate_data_key(&other, &equals_key, &[("Tenant", "acme")])
        .await
        .unwrap();
    // Case variants that all say the same satisfy a subset constraint.
    generate_data_key(
        &other,
        &subset_key,
        &[("TENANT", "acme"), ("tenant", "acme")],
    )
    .await
    .unwrap();

    // One variant that says otherwise, in either order, is refused.
    for context in [
        [("TENANT", "acme"), ("tenant", "globex")],
        [("TENANT", "globex"), ("tenant", "acme")],
        [("Tenant", "acme"), ("tenant", "Acme")],
    ] {
        assert_eq!(
            generate_data_key(&other, &subset_key, &context).await,
            refused(&subset_key),
            "{context:?}"
        );
        assert_eq!(
            generate_data_key(&other, &equals_key, &context).await,
            refused(&equals_key),
            "{context:?}"
        );
    }
}
