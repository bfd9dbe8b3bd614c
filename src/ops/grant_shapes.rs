//! What the grant operations share: the grant token format, the operations
//! a grant may allow, a grant as ListGrants and ListRetirableGrants show it
//! (and their paging), and the removal RetireGrant and RevokeGrant share.
//!
//! A grant token names its key and grant: `base64url("kmsgate-grant:1:"
//! key-id ":" grant-id)`. It confers nothing by itself. A request that
//! brings one makes the gateway read the key afresh from the token, so a
//! grant made a moment ago through another gateway is honoured at once.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Ctx;
use super::shapes::Empty;
use crate::arn::Realm;
use crate::error::KmsError;
use crate::keystore::{GrantRecord, KeySpec, KeyUsage};

const TOKEN_PREFIX: &str = "kmsgate-grant:1:";

/// Grants a key may hold. AWS allows 50,000; a kmsgate key keeps its grants
/// in its own record, rewritten on every change of the key, so the bound
/// is lower (docs/security.md).
pub const MAX_GRANTS_PER_KEY: usize = 500;

/// The grant operations that make sense for a symmetric encryption key.
pub const SYMMETRIC_GRANT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
];

/// The grant operations that make sense for an HMAC key.
pub const HMAC_GRANT_OPERATIONS: &[&str] = &[
    "GenerateMac",
    "VerifyMac",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
];

/// The grant operations that make sense for an asymmetric signing key.
pub const SIGNING_GRANT_OPERATIONS: &[&str] = &[
    "Sign",
    "Verify",
    "GetPublicKey",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
];

/// The grant operations that make sense for a key agreement key.
pub const KEY_AGREEMENT_GRANT_OPERATIONS: &[&str] = &[
    "DeriveSharedSecret",
    "GetPublicKey",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
];

/// The grant operations that make sense for an RSA encryption key.
pub const ASYMMETRIC_ENCRYPTION_GRANT_OPERATIONS: &[&str] = &[
    "Encrypt",
    "Decrypt",
    "ReEncryptFrom",
    "ReEncryptTo",
    "GetPublicKey",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
];

/// The grant operations a key of `spec` and `usage` can be granted, and
/// the kind of key as the refusal of another one names it.
pub fn grant_operations_for(
    spec: KeySpec,
    usage: KeyUsage,
) -> (&'static [&'static str], &'static str) {
    match usage {
        KeyUsage::EncryptDecrypt if spec.is_asymmetric() => (
            ASYMMETRIC_ENCRYPTION_GRANT_OPERATIONS,
            "an asymmetric encryption",
        ),
        KeyUsage::EncryptDecrypt => (SYMMETRIC_GRANT_OPERATIONS, "a symmetric encryption"),
        KeyUsage::GenerateVerifyMac => (HMAC_GRANT_OPERATIONS, "an HMAC"),
        KeyUsage::SignVerify => (SIGNING_GRANT_OPERATIONS, "an asymmetric signing"),
        KeyUsage::KeyAgreement => (KEY_AGREEMENT_GRANT_OPERATIONS, "a key agreement"),
    }
}

/// ValidationException for the first of `operations` that a key of
/// `usage` cannot be granted.
pub fn check_grant_operations(
    spec: KeySpec,
    usage: KeyUsage,
    operations: &[String],
) -> Result<(), KmsError> {
    let (allowed, kind) = grant_operations_for(spec, usage);
    match operations.iter().find(|o| !allowed.contains(&o.as_str())) {
        Some(bad) => Err(KmsError::Validation(format!(
            "Grant operation {bad} is not valid for {kind} KMS key."
        ))),
        None => Ok(()),
    }
}

/// Every GrantOperation of the service model.
pub const GRANT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "Sign",
    "Verify",
    "GetPublicKey",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
];

pub fn grant_token(key: &Uuid, grant_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{TOKEN_PREFIX}{key}:{grant_id}"))
}

/// The key and grant a token names; InvalidGrantTokenException if it is
/// not a kmsgate grant token.
pub fn parse_grant_token(token: &str) -> Result<(Uuid, String), KmsError> {
    let invalid = || KmsError::InvalidGrantToken("The grant token is not valid.".into());
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let rest = text.strip_prefix(TOKEN_PREFIX).ok_or_else(invalid)?;
    let (key, grant) = rest.split_once(':').ok_or_else(invalid)?;
    let key = Uuid::parse_str(key).map_err(|_| invalid())?;
    if !is_grant_id(grant) {
        return Err(invalid());
    }
    Ok((key, grant.to_owned()))
}

/// 64 lowercase hex characters.
pub fn is_grant_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// InvalidGrantIdException unless `id` has the form of a grant id.
pub fn check_grant_id(id: &str) -> Result<(), KmsError> {
    if is_grant_id(id) {
        Ok(())
    } else {
        Err(KmsError::InvalidGrantId(format!(
            "Grant ID {id} is not a valid grant ID."
        )))
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct GrantConstraints {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_context_subset: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_context_equals: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GrantListEntry {
    pub key_id: String,
    pub grant_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub creation_date: f64,
    pub grantee_principal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retiring_principal: Option<String>,
    pub issuing_account: String,
    pub operations: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraints: Option<GrantConstraints>,
}

impl GrantListEntry {
    pub fn of(realm: &Realm, key: &Uuid, g: &GrantRecord) -> GrantListEntry {
        let constraints =
            (g.context_equals.is_some() || g.context_subset.is_some()).then(|| GrantConstraints {
                encryption_context_subset: g.context_subset.clone(),
                encryption_context_equals: g.context_equals.clone(),
            });
        GrantListEntry {
            key_id: realm.key_arn(key),
            grant_id: g.grant_id.clone(),
            name: g.name.clone(),
            creation_date: g.created,
            grantee_principal: g.grantee.clone(),
            retiring_principal: g.retiring.clone(),
            issuing_account: format!("arn:{}:iam::{}:root", realm.partition, realm.account_id),
            operations: g.operations.clone(),
            constraints,
        }
    }
}

/// Grants listed per page unless the request says otherwise.
pub const DEFAULT_GRANT_LIMIT: i64 = 50;

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListGrantsResponse {
    pub grants: Vec<GrantListEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub truncated: bool,
}

/// One page of `all`, whose entries are in a stable order and named by
/// `marker_of`: the marker is the name of the first entry of the next page.
pub fn grant_page(
    all: Vec<GrantListEntry>,
    marker: Option<&str>,
    limit: i64,
    marker_of: impl Fn(&GrantListEntry) -> String,
) -> Result<ListGrantsResponse, KmsError> {
    let start = match marker {
        None => 0,
        Some(m) => all
            .iter()
            .position(|g| marker_of(g) == m)
            .ok_or_else(|| KmsError::InvalidMarker("Invalid marker".into()))?,
    };
    let mut rest: Vec<GrantListEntry> = all.into_iter().skip(start).collect();
    let limit = limit as usize;
    let next_marker = rest.get(limit).map(&marker_of);
    rest.truncate(limit);
    Ok(ListGrantsResponse {
        grants: rest,
        truncated: next_marker.is_some(),
        next_marker,
    })
}

pub fn grant_not_found(grant_id: &str) -> KmsError {
    KmsError::NotFound(format!("Grant ID {grant_id} not found"))
}

/// Removes grant `grant_id` from the key's latest record (RetireGrant,
/// RevokeGrant); NotFoundException if it is not there.
pub async fn remove_grant(
    ctx: &Ctx<'_>,
    key: &uuid::Uuid,
    grant_id: &str,
) -> Result<Empty, KmsError> {
    ctx.store
        .update_key(key, |r| {
            let before = r.grants.len();
            r.grants.retain(|g| g.grant_id != grant_id);
            if r.grants.len() == before {
                return Err(grant_not_found(grant_id));
            }
            Ok(())
        })
        .await?;
    Ok(Empty {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_operations_depend_on_the_key_usage() {
        let ops = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(
            check_grant_operations(
                KeySpec::SymmetricDefault,
                KeyUsage::EncryptDecrypt,
                &ops(&["Decrypt"])
            )
            .is_ok()
        );
        assert!(
            check_grant_operations(
                KeySpec::Rsa2048,
                KeyUsage::EncryptDecrypt,
                &ops(&["GetPublicKey"])
            )
            .is_ok()
        );
        assert!(
            check_grant_operations(
                KeySpec::Rsa2048,
                KeyUsage::EncryptDecrypt,
                &ops(&["GenerateDataKey"])
            )
            .is_err()
        );
        assert!(
            check_grant_operations(
                KeySpec::Hmac256,
                KeyUsage::GenerateVerifyMac,
                &ops(&["GenerateMac", "VerifyMac"])
            )
            .is_ok()
        );
        let e = check_grant_operations(
            KeySpec::Hmac256,
            KeyUsage::GenerateVerifyMac,
            &ops(&["Encrypt"]),
        )
        .unwrap_err();
        assert_eq!(
            e.message().as_deref(),
            Some("Grant operation Encrypt is not valid for an HMAC KMS key.")
        );
        let e = check_grant_operations(
            KeySpec::SymmetricDefault,
            KeyUsage::EncryptDecrypt,
            &ops(&["GenerateMac"]),
        )
        .unwrap_err();
        assert_eq!(
            e.message().as_deref(),
            Some("Grant operation GenerateMac is not valid for a symmetric encryption KMS key.")
        );
    }

    #[test]
    fn grant_tokens_round_trip_and_reject_strangers() {
        let key = Uuid::new_v4();
        let id = "ab".repeat(32);
        let t = grant_token(&key, &id);
        assert_eq!(parse_grant_token(&t).unwrap(), (key, id));
        for bad in [
            "",
            "not-base64!",
            "a2V5",
            &URL_SAFE_NO_PAD.encode("kmsgate-grant:1:x:y"),
        ] {
            assert_eq!(
                parse_grant_token(bad).unwrap_err().type_name(),
                "InvalidGrantTokenException"
            );
        }
    }
}
