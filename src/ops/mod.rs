//! One module per TrentService operation.
//!
//! Each module owns its request and response shapes (plain serde structs
//! named like AWS's), validates its members with AWS's messages, and calls
//! the key store. None of them touches cryptoki or HTTP: they take parsed
//! JSON and return a value to serialise, or a [`KmsError`].

pub mod alias_name;
pub mod authorize;
pub mod cancel_key_deletion;
pub mod create_alias;
pub mod create_grant;
pub mod create_key;
pub mod data_key;
pub mod data_key_pair;
pub mod decrypt;
pub mod delete_alias;
pub mod delete_imported_key_material;
pub mod derive_shared_secret;
pub mod describe_key;
pub mod disable_key;
pub mod disable_key_rotation;
pub mod enable_key;
pub mod enable_key_rotation;
pub mod encrypt;
pub mod generate_data_key;
pub mod generate_data_key_pair;
pub mod generate_data_key_pair_without_plaintext;
pub mod generate_data_key_without_plaintext;
pub mod generate_mac;
pub mod generate_random;
pub mod get_key_policy;
pub mod get_key_rotation_status;
pub mod get_parameters_for_import;
pub mod get_public_key;
pub mod grant_shapes;
pub mod import_key_material;
pub mod key_arg;
pub mod key_policy;
pub mod key_state;
pub mod key_usage;
pub mod list_aliases;
pub mod list_grants;
pub mod list_key_policies;
pub mod list_key_rotations;
pub mod list_keys;
pub mod list_resource_tags;
pub mod list_retirable_grants;
pub mod mac;
pub mod open_ciphertext;
pub mod operation;
pub mod put_key_policy;
pub mod re_encrypt;
pub mod retire_grant;
pub mod revoke_grant;
pub mod rotate_key_on_demand;
pub mod schedule_key_deletion;
pub mod shapes;
pub mod sign;
pub mod signing;
pub mod tag_resource;
pub mod tags;
pub mod untag_resource;
pub mod update_alias;
pub mod update_key_description;
pub mod validate;
pub mod verify;
pub mod verify_mac;
pub mod xks;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::auth::Principal;
use crate::error::KmsError;
use crate::keystore::KeyStore;
pub use operation::Operation;

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

/// Runs `operation` on the request body.
pub async fn dispatch(
    ctx: &mut Ctx<'_>,
    operation: Operation,
    body: &[u8],
) -> Result<Vec<u8>, KmsError> {
    use Operation as O;
    ctx.store.catch_up().await;
    macro_rules! run {
        ($f:path) => {
            to_body(&$f(ctx, parse(body)?).await?)
        };
    }
    match operation {
        O::CancelKeyDeletion => run!(cancel_key_deletion::handle),
        O::CreateAlias => run!(create_alias::handle),
        O::CreateGrant => run!(create_grant::handle),
        O::CreateKey => run!(create_key::handle),
        O::Decrypt => run!(decrypt::handle),
        O::DeleteAlias => run!(delete_alias::handle),
        O::DeleteImportedKeyMaterial => run!(delete_imported_key_material::handle),
        O::DeriveSharedSecret => run!(derive_shared_secret::handle),
        O::DescribeKey => run!(describe_key::handle),
        O::DisableKey => run!(disable_key::handle),
        O::DisableKeyRotation => run!(disable_key_rotation::handle),
        O::EnableKey => run!(enable_key::handle),
        O::EnableKeyRotation => run!(enable_key_rotation::handle),
        O::Encrypt => run!(encrypt::handle),
        O::GenerateDataKey => run!(generate_data_key::handle),
        O::GenerateDataKeyPair => run!(generate_data_key_pair::handle),
        O::GenerateDataKeyPairWithoutPlaintext => {
            run!(generate_data_key_pair_without_plaintext::handle)
        }
        O::GenerateDataKeyWithoutPlaintext => run!(generate_data_key_without_plaintext::handle),
        O::GenerateMac => run!(generate_mac::handle),
        O::GenerateRandom => run!(generate_random::handle),
        O::GetKeyPolicy => run!(get_key_policy::handle),
        O::GetKeyRotationStatus => run!(get_key_rotation_status::handle),
        O::GetParametersForImport => run!(get_parameters_for_import::handle),
        O::GetPublicKey => run!(get_public_key::handle),
        O::ImportKeyMaterial => run!(import_key_material::handle),
        O::ListAliases => run!(list_aliases::handle),
        O::ListGrants => run!(list_grants::handle),
        O::ListKeyPolicies => run!(list_key_policies::handle),
        O::ListKeyRotations => run!(list_key_rotations::handle),
        O::ListKeys => run!(list_keys::handle),
        O::ListResourceTags => run!(list_resource_tags::handle),
        O::ListRetirableGrants => run!(list_retirable_grants::handle),
        O::PutKeyPolicy => run!(put_key_policy::handle),
        O::ReEncrypt => run!(re_encrypt::handle),
        O::RetireGrant => run!(retire_grant::handle),
        O::RevokeGrant => run!(revoke_grant::handle),
        O::RotateKeyOnDemand => run!(rotate_key_on_demand::handle),
        O::ScheduleKeyDeletion => run!(schedule_key_deletion::handle),
        O::Sign => run!(sign::handle),
        O::TagResource => run!(tag_resource::handle),
        O::UntagResource => run!(untag_resource::handle),
        O::UpdateAlias => run!(update_alias::handle),
        O::UpdateKeyDescription => run!(update_key_description::handle),
        O::Verify => run!(verify::handle),
        O::VerifyMac => run!(verify_mac::handle),
        O::ConnectCustomKeyStore
        | O::CreateCustomKeyStore
        | O::Decapsulate
        | O::DeleteCustomKeyStore
        | O::DescribeCustomKeyStores
        | O::DisconnectCustomKeyStore
        | O::Encapsulate
        | O::GetKeyLastUsage
        | O::ReplicateKey
        | O::UpdateCustomKeyStore
        | O::UpdatePrimaryRegion => Err(KmsError::UnsupportedOperation(Some(format!(
            "kmsgate does not support {}.",
            operation.name()
        )))),
    }
}
