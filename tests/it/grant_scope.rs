//! A grant that includes CreateGrant lets its grantee create only grants
//! within it, as AWS KMS documents: the new grant's operations must be
//! among the grant's, and its encryption-context constraint must be as
//! strict as the grant's or stricter. Permission from a key policy or an
//! identity policy has no such limit.

use crate::common::*;
use aws_sdk_kms::Client;
use aws_sdk_kms::types::{GrantConstraints, GrantOperation};

/// `other`'s identity policy allows nothing that a test here asks for.
const NOTHING_HERE: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:ListKeys","Resource":"*"}]}"#;

fn user(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:user/{name}")
}

fn subset(pairs: &[(&str, &str)]) -> GrantConstraints {
    let mut c = GrantConstraints::builder();
    for (k, v) in pairs {
        c = c.encryption_context_subset(*k, *v);
    }
    c.build()
}

fn equals(pairs: &[(&str, &str)]) -> GrantConstraints {
    let mut c = GrantConstraints::builder();
    for (k, v) in pairs {
        c = c.encryption_context_equals(*k, *v);
    }
    c.build()
}

async fn create_grant(
    kms: &Client,
    key: &str,
    operations: &[GrantOperation],
    constraints: Option<GrantConstraints>,
) -> Result<String, (String, String)> {
    kms.create_grant()
        .key_id(key)
        .grantee_principal(user("app"))
        .set_operations(Some(operations.to_vec()))
        .set_constraints(constraints)
        .send()
        .await
        .map(|o| o.grant_id.unwrap_or_default())
        .map_err(|e| error_of(&e))
}

/// Gives `other` a grant for Encrypt and CreateGrant with `constraints`.
async fn grant_other(admin: &Client, key: &str, constraints: GrantConstraints) {
    admin
        .create_grant()
        .key_id(key)
        .grantee_principal(user("other"))
        .operations(GrantOperation::Encrypt)
        .operations(GrantOperation::CreateGrant)
        .constraints(constraints)
        .send()
        .await
        .unwrap();
}

fn refused(key: &str) -> Result<String, (String, String)> {
    Err((
        "AccessDeniedException".into(),
        format!(
            "User: {} is not authorized to perform: kms:CreateGrant on resource: {} because no identity-based policy allows the kms:CreateGrant action",
            user("other"),
            key_arn(key)
        ),
    ))
}

#[tokio::test]
async fn a_grantee_creates_only_grants_within_a_subset_constrained_grant() {
    use GrantOperation::{CreateGrant, Decrypt, Encrypt};
    let (gw, other) = Gateway::start_with_other(NOTHING_HERE);
    let admin = gw.client();
    let key = create_key(&admin).await;
    grant_other(&admin, &key, subset(&[("app", "billing")])).await;
    let billing = || Some(subset(&[("app", "billing")]));

    // Operations beyond the grant's.
    assert_eq!(
        create_grant(&other, &key, &[Decrypt], billing()).await,
        refused(&key)
    );
    assert_eq!(
        create_grant(&other, &key, &[Encrypt, Decrypt], billing()).await,
        refused(&key)
    );
    // A constraint that is missing, looser or another.
    assert_eq!(
        create_grant(&other, &key, &[Encrypt], None).await,
        refused(&key)
    );
    assert_eq!(
        create_grant(&other, &key, &[Encrypt], Some(subset(&[("team", "a")]))).await,
        refused(&key)
    );
    assert_eq!(
        create_grant(
            &other,
            &key,
            &[Encrypt],
            Some(equals(&[("app", "payroll")]))
        )
        .await,
        refused(&key)
    );
    // The same constraint, or a stricter one, within the operations.
    create_grant(&other, &key, &[Encrypt], billing())
        .await
        .unwrap();
    create_grant(&other, &key, &[Encrypt, CreateGrant], billing())
        .await
        .unwrap();
    create_grant(
        &other,
        &key,
        &[Encrypt],
        Some(subset(&[("App", "billing"), ("team", "a")])),
    )
    .await
    .unwrap();
    create_grant(
        &other,
        &key,
        &[Encrypt],
        Some(equals(&[("app", "billing"), ("team", "a")])),
    )
    .await
    .unwrap();
    // The admin's permission comes from policies: no such limit.
    create_grant(&admin, &key, &[Decrypt], None).await.unwrap();
    let listed = admin.list_grants().key_id(&key).send().await.unwrap();
    assert_eq!(listed.grants().len(), 6);
}

#[tokio::test]
async fn a_grantee_of_an_equals_constrained_grant_creates_only_the_same_constraint() {
    use GrantOperation::Encrypt;
    let (gw, other) = Gateway::start_with_other(NOTHING_HERE);
    let admin = gw.client();
    let key = create_key(&admin).await;
    grant_other(&admin, &key, equals(&[("app", "billing")])).await;

    assert_eq!(
        create_grant(&other, &key, &[Encrypt], None).await,
        refused(&key)
    );
    // A subset constraint admits contexts with more pairs: looser.
    assert_eq!(
        create_grant(
            &other,
            &key,
            &[Encrypt],
            Some(subset(&[("app", "billing")]))
        )
        .await,
        refused(&key)
    );
    assert_eq!(
        create_grant(
            &other,
            &key,
            &[Encrypt],
            Some(equals(&[("app", "billing"), ("team", "a")]))
        )
        .await,
        refused(&key)
    );
    create_grant(
        &other,
        &key,
        &[Encrypt],
        Some(equals(&[("app", "billing")])),
    )
    .await
    .unwrap();
}
