//! Three places where kmsgate once answered differently from AWS KMS, each
//! pinned down with aws-sdk-kms against the real binary and token:
//!
//! * a well-formed multi-Region key id (`mrk-` and 32 hex digits) is a key
//!   that does not exist, not a malformed id;
//! * alias names hold only letters, digits, `/`, `_` and `-`, although the
//!   model's pattern also allows `:`;
//! * operations whose KeyId AWS documents as "key ID or key ARN" refuse
//!   alias names and alias ARNs rather than acting on the alias's target.

use crate::common::*;
use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::GrantOperation;

const MRK: &str = "mrk-0123456789abcdef0123456789abcdef";

fn not_found(arn: &str) -> (String, String) {
    (
        "NotFoundException".into(),
        format!("Key '{arn}' does not exist"),
    )
}

/// Sends one SDK request and keeps only its error, as (code, message).
macro_rules! outcome {
    ($request:expr) => {
        $request.send().await.map(|_| ()).map_err(|e| error_of(&e))
    };
}

#[tokio::test]
async fn a_well_formed_multi_region_id_is_a_key_that_does_not_exist() {
    let gw = Gateway::start();
    let kms = gw.client();
    let mrk_arn = key_arn(MRK);
    for key in [MRK, mrk_arn.as_str()] {
        assert_eq!(
            outcome!(kms.describe_key().key_id(key)),
            Err(not_found(&mrk_arn)),
            "{key}"
        );
        assert_eq!(
            outcome!(kms.encrypt().key_id(key).plaintext(Blob::new("x"))),
            Err(not_found(&mrk_arn)),
            "{key}"
        );
        assert_eq!(
            outcome!(kms.generate_data_key().key_id(key).number_of_bytes(32)),
            Err(not_found(&mrk_arn)),
            "{key}"
        );
        assert_eq!(
            outcome!(kms.disable_key().key_id(key)),
            Err(not_found(&mrk_arn)),
            "{key}"
        );
        assert_eq!(
            outcome!(
                kms.tag_resource().key_id(key).tags(
                    aws_sdk_kms::types::Tag::builder()
                        .tag_key("a")
                        .tag_value("1")
                        .build()
                        .unwrap()
                )
            ),
            Err(not_found(&mrk_arn)),
            "{key}"
        );
        assert_eq!(
            outcome!(
                kms.create_alias()
                    .alias_name("alias/to-mrk")
                    .target_key_id(key)
            ),
            Err(not_found(&mrk_arn)),
            "{key}"
        );
    }
    // Malformed multi-Region ids stay malformed, as in AWS.
    for bad in [
        "mrk-fake-key-id",
        "mrk-0123456789abcdef0123456789abcde",
        "mrk-0123456789ABCDEF0123456789ABCDEF",
    ] {
        assert_eq!(
            outcome!(kms.describe_key().key_id(bad)),
            Err(("NotFoundException".into(), format!("Invalid keyId '{bad}'"))),
        );
    }
    let all = kms.list_aliases().send().await.unwrap();
    assert!(all.aliases.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn alias_names_with_a_colon_are_refused_by_every_alias_operation() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key(&kms).await;
    let invalid = |name: &str| {
        Err((
            "ValidationException".into(),
            format!("{name} contains invalid characters for an alias"),
        ))
    };
    for name in ["alias/my:alias", "alias/a:", "alias/x/y:z"] {
        assert_eq!(
            outcome!(kms.create_alias().alias_name(name).target_key_id(&id)),
            invalid(name),
        );
    }
    // The model's constraints and the prefix rule come first, then the
    // reserved prefix, then the character rule.
    let e = outcome!(kms.create_alias().alias_name("my:alias").target_key_id(&id)).unwrap_err();
    assert_eq!(e.0, "ValidationException");
    assert!(e.1.starts_with("Alias must start with the prefix"), "{e:?}");
    let e = outcome!(
        kms.create_alias()
            .alias_name("alias/aws/my:alias")
            .target_key_id(&id)
    )
    .unwrap_err();
    assert_eq!(e.0, "InvalidAliasNameException");
    let e = outcome!(
        kms.create_alias()
            .alias_name("alias/my:alias here")
            .target_key_id(&id)
    )
    .unwrap_err();
    assert_eq!(e.0, "ValidationException");
    assert!(
        e.1.contains("Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$"),
        "{e:?}"
    );
    assert!(
        kms.list_aliases()
            .send()
            .await
            .unwrap()
            .aliases
            .unwrap_or_default()
            .is_empty()
    );

    assert_eq!(
        outcome!(
            kms.update_alias()
                .alias_name("alias/my:alias")
                .target_key_id(&id)
        ),
        invalid("alias/my:alias"),
    );
    assert_eq!(
        outcome!(kms.delete_alias().alias_name("alias/my:alias")),
        invalid("alias/my:alias"),
    );

    // Every character AWS allows is allowed.
    for name in ["alias/my-alias_/", "alias/My_Alias-09/x"] {
        kms.create_alias()
            .alias_name(name)
            .target_key_id(&id)
            .send()
            .await
            .unwrap();
    }
    let mut names: Vec<_> = kms
        .list_aliases()
        .send()
        .await
        .unwrap()
        .aliases
        .unwrap_or_default()
        .into_iter()
        .filter_map(|a| a.alias_name)
        .collect();
    names.sort();
    assert_eq!(names, ["alias/My_Alias-09/x", "alias/my-alias_/"]);
}

/// One operation of those that AWS documents as taking a key id or key ARN
/// only, called with `key` and a harmless rest; `grant_id` names an existing
/// grant for the grant operations that need one.
async fn call(kms: &Client, op: &str, key: &str, grant_id: &str) -> Result<(), (String, String)> {
    let grantee = format!("arn:aws:iam::{ACCOUNT}:user/app");
    match op {
        "EnableKey" => outcome!(kms.enable_key().key_id(key)),
        "DisableKey" => outcome!(kms.disable_key().key_id(key)),
        "EnableKeyRotation" => outcome!(kms.enable_key_rotation().key_id(key)),
        "DisableKeyRotation" => outcome!(kms.disable_key_rotation().key_id(key)),
        "GetKeyRotationStatus" => outcome!(kms.get_key_rotation_status().key_id(key)),
        "ListKeyRotations" => outcome!(kms.list_key_rotations().key_id(key)),
        "RotateKeyOnDemand" => outcome!(kms.rotate_key_on_demand().key_id(key)),
        "ScheduleKeyDeletion" => outcome!(
            kms.schedule_key_deletion()
                .key_id(key)
                .pending_window_in_days(7)
        ),
        "CancelKeyDeletion" => outcome!(kms.cancel_key_deletion().key_id(key)),
        "GetKeyPolicy" => outcome!(kms.get_key_policy().key_id(key).policy_name("default")),
        "PutKeyPolicy" => outcome!(
            kms.put_key_policy()
                .key_id(key)
                .policy_name("default")
                .policy(
                    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*"}]}"#
                )
        ),
        "ListKeyPolicies" => outcome!(kms.list_key_policies().key_id(key)),
        "CreateGrant" => outcome!(
            kms.create_grant()
                .key_id(key)
                .grantee_principal(grantee)
                .operations(GrantOperation::Encrypt)
        ),
        "ListGrants" => outcome!(kms.list_grants().key_id(key)),
        "RevokeGrant" => outcome!(kms.revoke_grant().key_id(key).grant_id(grant_id)),
        "RetireGrant" => outcome!(kms.retire_grant().key_id(key).grant_id(grant_id)),
        "ListAliases" => outcome!(kms.list_aliases().key_id(key)),
        _ => unreachable!("{op}"),
    }
}

const KEY_ID_OR_ARN_ONLY: &[&str] = &[
    "EnableKey",
    "DisableKey",
    "EnableKeyRotation",
    "DisableKeyRotation",
    "GetKeyRotationStatus",
    "ListKeyRotations",
    "RotateKeyOnDemand",
    "ScheduleKeyDeletion",
    "CancelKeyDeletion",
    "GetKeyPolicy",
    "PutKeyPolicy",
    "ListKeyPolicies",
    "CreateGrant",
    "ListGrants",
    "RevokeGrant",
    "RetireGrant",
    "ListAliases",
];

/// What the refused operations could have changed.
async fn state_of(kms: &Client, id: &str) -> String {
    let m = key_metadata(kms, id).await;
    let rotation = kms
        .get_key_rotation_status()
        .key_id(id)
        .send()
        .await
        .unwrap();
    let rotations = kms.list_key_rotations().key_id(id).send().await.unwrap();
    let policy = kms
        .get_key_policy()
        .key_id(id)
        .policy_name("default")
        .send()
        .await
        .unwrap();
    let grants = kms.list_grants().key_id(id).send().await.unwrap();
    format!(
        "{:?} {:?} {:?} {} {:?} {:?} {:?}",
        m.key_state,
        m.deletion_date,
        m.current_key_material_id,
        rotation.key_rotation_enabled,
        rotations.rotations,
        policy.policy,
        grants
            .grants
            .unwrap_or_default()
            .into_iter()
            .map(|g| g.grant_id)
            .collect::<Vec<_>>()
    )
}

#[tokio::test]
async fn key_id_or_arn_operations_refuse_aliases_instead_of_following_them() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key(&kms).await;
    kms.create_alias()
        .alias_name("alias/app")
        .target_key_id(&id)
        .send()
        .await
        .unwrap();
    let grant_id = kms
        .create_grant()
        .key_id(&id)
        .grantee_principal(format!("arn:aws:iam::{ACCOUNT}:user/app"))
        .operations(GrantOperation::Decrypt)
        .send()
        .await
        .unwrap()
        .grant_id
        .unwrap();
    let before = state_of(&kms, &id).await;
    let alias_arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:alias/app");
    for &op in KEY_ID_OR_ARN_ONLY {
        assert_eq!(
            call(&kms, op, "alias/app", &grant_id).await,
            Err((
                "NotFoundException".into(),
                "Invalid keyId 'alias/app'".into()
            )),
            "{op}"
        );
        assert_eq!(
            call(&kms, op, &alias_arn, &grant_id).await,
            Err((
                "NotFoundException".into(),
                format!("Invalid arn {alias_arn}")
            )),
            "{op}"
        );
        // A multi-Region id is a valid id of no key in these too.
        assert_eq!(
            call(&kms, op, MRK, &grant_id).await,
            Err(not_found(&key_arn(MRK))),
            "{op}"
        );
    }
    assert_eq!(state_of(&kms, &id).await, before, "a refused request acted");

    // The same requests naming the key by its ARN are served.
    let arn = key_arn(&id);
    for op in [
        "EnableKeyRotation",
        "GetKeyRotationStatus",
        "RotateKeyOnDemand",
        "ListKeyRotations",
        "DisableKeyRotation",
        "GetKeyPolicy",
        "ListKeyPolicies",
        "CreateGrant",
        "ListGrants",
        "RevokeGrant",
        "ListAliases",
        "DisableKey",
        "EnableKey",
        "ScheduleKeyDeletion",
        "CancelKeyDeletion",
    ] {
        assert_eq!(call(&kms, op, &arn, &grant_id).await, Ok(()), "{op}");
    }
    // Operations that take any KeyId still follow the alias.
    let m = kms.describe_key().key_id("alias/app").send().await.unwrap();
    assert_eq!(m.key_metadata.unwrap().key_id, id);
}
