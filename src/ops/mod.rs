//! One module per TrentService operation.
//!
//! Each module owns its request and response shapes (plain serde structs
//! named like AWS's), validates its members with AWS's messages, and calls
//! the key store. None of them touches cryptoki or HTTP: they take parsed
//! JSON and return a value to serialise, or a [`KmsError`].

pub mod authorize;
pub mod cancel_key_deletion;
pub mod create_alias;
pub mod create_grant;
pub mod create_key;
pub mod decrypt;
pub mod delete_alias;
pub mod describe_key;
pub mod disable_key;
pub mod disable_key_rotation;
pub mod enable_key;
pub mod enable_key_rotation;
pub mod encrypt;
pub mod generate_data_key;
pub mod generate_data_key_without_plaintext;
pub mod generate_mac;
pub mod generate_random;
pub mod get_key_rotation_status;
pub mod grant_shapes;
pub mod key_arg;
pub mod key_policy;
pub mod key_usage;
pub mod list_aliases;
pub mod list_grants;
pub mod list_key_rotations;
pub mod list_keys;
pub mod list_resource_tags;
pub mod mac;
pub mod re_encrypt;
pub mod retire_grant;
pub mod rotate_key_on_demand;
pub mod schedule_key_deletion;
pub mod shapes;
pub mod tag_resource;
pub mod untag_resource;
pub mod update_alias;
pub mod update_key_description;
pub mod validate;
pub mod verify_mac;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::auth::Principal;
use crate::error::KmsError;
use crate::keystore::KeyStore;

/// What an operation needs besides its request.
pub struct Ctx<'a> {
    pub store: &'a KeyStore,
    pub principal: &'a Principal,
    /// Who is calling, for authorization ([`authorize`]).
    pub caller: &'a authorize::Caller,
    /// The key the request acted on, for the audit record (its ARN).
    pub audit_key: Option<String>,
    /// The key version that encrypted or decrypted, for the audit record.
    pub audit_version: Option<u32>,
}

impl Ctx<'_> {
    pub fn audit(&mut self, key_arn: String) {
        self.audit_key = Some(key_arn);
    }

    /// Records the key version the operation used (the last call wins:
    /// ReEncrypt's destination version).
    pub fn audit_version(&mut self, version: u32) {
        self.audit_version = Some(version);
    }
}

/// The operations on no key: authorized by identity policies alone,
/// before they run (the others are authorized against the key they name).
pub const KEYLESS_OPERATIONS: &[&str] = &[
    "CreateKey",
    "GenerateRandom",
    "ListAliases",
    "ListKeys",
    "ListRetirableGrants",
];

/// Every operation of the KMS service model. Those kmsgate does not
/// implement are answered with UnsupportedOperationException, not with
/// UnknownOperationException, which is for targets that do not exist.
pub const ALL_OPERATIONS: &[&str] = &[
    "CancelKeyDeletion",
    "ConnectCustomKeyStore",
    "CreateAlias",
    "CreateCustomKeyStore",
    "CreateGrant",
    "CreateKey",
    "Decapsulate",
    "Decrypt",
    "DeleteAlias",
    "DeleteCustomKeyStore",
    "DeleteImportedKeyMaterial",
    "DeriveSharedSecret",
    "DescribeCustomKeyStores",
    "DescribeKey",
    "DisableKey",
    "DisableKeyRotation",
    "DisconnectCustomKeyStore",
    "EnableKey",
    "EnableKeyRotation",
    "Encapsulate",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateMac",
    "GenerateRandom",
    "GetKeyLastUsage",
    "GetKeyPolicy",
    "GetKeyRotationStatus",
    "GetParametersForImport",
    "GetPublicKey",
    "ImportKeyMaterial",
    "ListAliases",
    "ListGrants",
    "ListKeyPolicies",
    "ListKeyRotations",
    "ListKeys",
    "ListResourceTags",
    "ListRetirableGrants",
    "PutKeyPolicy",
    "ReEncrypt",
    "ReplicateKey",
    "RetireGrant",
    "RevokeGrant",
    "RotateKeyOnDemand",
    "ScheduleKeyDeletion",
    "Sign",
    "TagResource",
    "UntagResource",
    "UpdateAlias",
    "UpdateCustomKeyStore",
    "UpdateKeyDescription",
    "UpdatePrimaryRegion",
    "Verify",
    "VerifyMac",
];

/// Parses a request body. An empty body is an empty object, as AWS takes it.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, KmsError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        // serde's text is precise enough; drop its line/column suffix.
        let msg = msg
            .rsplit_once(" at line ")
            .map(|(m, _)| m.to_owned())
            .unwrap_or(msg);
        KmsError::Serialization(msg)
    })
}

fn to_body<T: Serialize>(value: &T) -> Result<Vec<u8>, KmsError> {
    serde_json::to_vec(value).map_err(|e| KmsError::Internal(e.to_string()))
}

/// Runs the operation named by `X-Amz-Target` (without its prefix).
pub async fn dispatch(
    ctx: &mut Ctx<'_>,
    operation: &str,
    body: &[u8],
) -> Result<Vec<u8>, KmsError> {
    macro_rules! run {
        ($m:ident) => {
            to_body(&$m::handle(ctx, parse(body)?).await?)
        };
    }
    match operation {
        "CancelKeyDeletion" => run!(cancel_key_deletion),
        "CreateAlias" => run!(create_alias),
        "CreateGrant" => run!(create_grant),
        "CreateKey" => run!(create_key),
        "Decrypt" => run!(decrypt),
        "DeleteAlias" => run!(delete_alias),
        "DescribeKey" => run!(describe_key),
        "DisableKey" => run!(disable_key),
        "DisableKeyRotation" => run!(disable_key_rotation),
        "EnableKey" => run!(enable_key),
        "EnableKeyRotation" => run!(enable_key_rotation),
        "Encrypt" => run!(encrypt),
        "GenerateDataKey" => run!(generate_data_key),
        "GenerateDataKeyWithoutPlaintext" => run!(generate_data_key_without_plaintext),
        "GenerateMac" => run!(generate_mac),
        "GenerateRandom" => run!(generate_random),
        "GetKeyPolicy" => to_body(&key_policy::get(ctx, parse(body)?).await?),
        "GetKeyRotationStatus" => run!(get_key_rotation_status),
        "ListAliases" => run!(list_aliases),
        "ListGrants" => run!(list_grants),
        "ListRetirableGrants" => to_body(&list_grants::retirable(ctx, parse(body)?).await?),
        "ListKeyRotations" => run!(list_key_rotations),
        "ListKeyPolicies" => to_body(&key_policy::list(ctx, parse(body)?).await?),
        "ListKeys" => run!(list_keys),
        "PutKeyPolicy" => to_body(&key_policy::put(ctx, parse(body)?).await?),
        "ListResourceTags" => run!(list_resource_tags),
        "ReEncrypt" => run!(re_encrypt),
        "RetireGrant" => to_body(&retire_grant::retire(ctx, parse(body)?).await?),
        "RevokeGrant" => to_body(&retire_grant::revoke(ctx, parse(body)?).await?),
        "RotateKeyOnDemand" => run!(rotate_key_on_demand),
        "ScheduleKeyDeletion" => run!(schedule_key_deletion),
        "TagResource" => run!(tag_resource),
        "UntagResource" => run!(untag_resource),
        "UpdateAlias" => run!(update_alias),
        "UpdateKeyDescription" => run!(update_key_description),
        "VerifyMac" => run!(verify_mac),
        other if ALL_OPERATIONS.contains(&other) => Err(KmsError::UnsupportedOperation(Some(
            format!("kmsgate does not support {other}."),
        ))),
        _ => Err(KmsError::UnknownOperation),
    }
}
