//! CreateKey: a symmetric ENCRYPT_DECRYPT key, an HMAC GENERATE_VERIFY_MAC
//! key, an RSA or ECC SIGN_VERIFY key pair, an RSA ENCRYPT_DECRYPT pair or
//! an ECC KEY_AGREEMENT pair, whose secret material is generated on the
//! token and never leaves it; or, with Origin EXTERNAL, a symmetric or HMAC
//! key with no material, PendingImport until material is imported into it
//! ([`super::import_key_material`]).

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::key_policy::check_new_policy;
use super::shapes::{KeyMetadata, SYMMETRIC_DEFAULT, TagShape};
use super::tags::check_tags;
use super::validate::Violations;
use crate::error::{KmsError, external_spec_unsupported};
use crate::keystore::{KeySpec, KeyUsage};

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct CreateKeyRequest {
    pub policy: Option<String>,
    pub description: Option<String>,
    pub key_usage: Option<String>,
    pub customer_master_key_spec: Option<String>,
    pub key_spec: Option<String>,
    pub origin: Option<String>,
    pub custom_key_store_id: Option<String>,
    pub bypass_policy_lockout_safety_check: Option<bool>,
    pub tags: Option<Vec<TagShape>>,
    pub multi_region: Option<bool>,
    pub xks_key_id: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateKeyResponse {
    pub key_metadata: KeyMetadata,
}

/// In the order AWS prints them in its validation message (recorded against
/// the real service for the first twelve; later specs appended).
pub const KEY_SPECS: &[&str] = &[
    "RSA_2048",
    "ECC_NIST_P384",
    "ECC_NIST_P256",
    "ECC_NIST_P521",
    "HMAC_384",
    "RSA_3072",
    "ECC_SECG_P256K1",
    "RSA_4096",
    "SYMMETRIC_DEFAULT",
    "HMAC_256",
    "HMAC_224",
    "HMAC_512",
    "SM2",
    "ML_DSA_44",
    "ML_DSA_65",
    "ML_DSA_87",
    "ECC_NIST_EDWARDS25519",
];
/// AWS's recorded order, KEY_AGREEMENT appended.
const KEY_USAGES: &[&str] = &[
    "ENCRYPT_DECRYPT",
    "SIGN_VERIFY",
    "GENERATE_VERIFY_MAC",
    "KEY_AGREEMENT",
];
const ORIGINS: &[&str] = &["AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"];
pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: CreateKeyRequest,
) -> Result<CreateKeyResponse, KmsError> {
    let mut v = Violations::new();
    if let Some(d) = &req.description {
        v.str_len("description", d, 0, 8192);
    }
    if let Some(p) = &req.policy {
        v.str_len("policy", p, 1, 131072);
    }
    for (member, value) in [
        ("keySpec", &req.key_spec),
        ("customerMasterKeySpec", &req.customer_master_key_spec),
    ] {
        if let Some(s) = value {
            v.enum_value(member, s, KEY_SPECS);
        }
    }
    if let Some(u) = &req.key_usage {
        v.enum_value("keyUsage", u, KEY_USAGES);
    }
    if let Some(o) = &req.origin {
        v.enum_value("origin", o, ORIGINS);
    }
    v.finish()?;

    if req.key_spec.is_some() && req.customer_master_key_spec.is_some() {
        return Err(KmsError::Validation(
            "You cannot specify KeySpec and CustomerMasterKeySpec in the same request. CustomerMasterKeySpec is deprecated.".into(),
        ));
    }
    let spec = req
        .key_spec
        .as_deref()
        .or(req.customer_master_key_spec.as_deref())
        .unwrap_or(SYMMETRIC_DEFAULT);
    if spec != SYMMETRIC_DEFAULT && req.key_usage.is_none() {
        return Err(KmsError::Validation(
            "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys.".into(),
        ));
    }
    let Some(spec) = KeySpec::parse(spec) else {
        return Err(KmsError::UnsupportedOperation(Some(format!(
            "KeySpec {spec} is not supported by kmsgate: only SYMMETRIC_DEFAULT, HMAC, RSA and ECC signing keys are."
        ))));
    };
    // RSA keys sign or encrypt, NIST ECC keys sign or agree keys; every
    // other spec has one usage.
    let usage = match req.key_usage.as_deref() {
        None => spec.usages()[0],
        Some(u) => match KeyUsage::parse(u).filter(|u| spec.usages().contains(u)) {
            Some(usage) => usage,
            None => {
                return Err(KmsError::Validation(format!(
                    "KeyUsage {u} is not compatible with KeySpec {}",
                    spec.as_str()
                )));
            }
        },
    };
    let external = req.origin.as_deref() == Some("EXTERNAL");
    if external && !crate::keystore::import::importable(spec) {
        return Err(external_spec_unsupported(spec.as_str()));
    }
    match req.origin.as_deref() {
        None | Some("AWS_KMS") | Some("EXTERNAL") => {}
        Some(o) => {
            return Err(KmsError::UnsupportedOperation(Some(format!(
                "Origin {o} is not supported by kmsgate: key material is always generated on the token."
            ))));
        }
    }
    if req.custom_key_store_id.is_some() || req.xks_key_id.is_some() {
        return Err(KmsError::UnsupportedOperation(Some(
            "Custom key stores are not supported by kmsgate.".into(),
        )));
    }
    if req.multi_region == Some(true) {
        return Err(KmsError::UnsupportedOperation(Some(
            "Multi-Region keys are not supported by kmsgate.".into(),
        )));
    }
    let tags = check_tags(req.tags.as_deref().unwrap_or_default())?;
    // AWS tags a new key only for a caller whose IAM policy allows
    // kms:TagResource on every key of the account and region.
    if !tags.is_empty() {
        ctx.authorize_on_any_key("TagResource")?;
    }
    let realm = ctx.store.realm();
    if let Some(p) = &req.policy {
        // The key's ARN is not known yet: check against every key's.
        let any_key = format!(
            "arn:{}:kms:{}:{}:key/*",
            realm.partition, realm.region, realm.account_id
        );
        check_new_policy(
            ctx,
            p,
            &any_key,
            req.bypass_policy_lockout_safety_check == Some(true),
        )?;
    }

    let description = req.description.unwrap_or_default();
    let key = if external {
        ctx.store
            .create_external_key(spec, usage, description, tags, req.policy)
            .await?
    } else {
        ctx.store
            .create_key(spec, usage, description, tags, req.policy)
            .await?
    };
    ctx.audit(realm.key_arn(key.id()));
    Ok(CreateKeyResponse {
        key_metadata: KeyMetadata::of(realm, &key),
    })
}
