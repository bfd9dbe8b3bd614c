//! What GenerateMac and VerifyMac share: their members' checks, and the
//! checks of the key in AWS's order (the key exists, the caller may use
//! it, it is enabled, it is an HMAC key, the algorithm fits its spec).

use std::sync::Arc;

use super::Ctx;
use super::authorize::Use;
use super::key_usage::require_usage;
use super::shapes::{SecretBlob, check_key_id};
use super::validate::Violations;
use crate::error::{KmsError, incompatible_algorithm};
use crate::keystore::{Key, KeyUsage, MacAlgorithm};

/// Checks the members both operations have; the caller adds its own
/// (VerifyMac's `Mac`) to `v` and finishes it.
pub fn check_members(
    v: &mut Violations,
    key_id: &Option<String>,
    message: &Option<SecretBlob>,
    algorithm: &Option<String>,
    grant_tokens: &Option<Vec<String>>,
) {
    if v.required("message", message)
        && let Some(m) = message
    {
        v.blob_len("message", m.0.len(), 1, 4096);
    }
    check_key_id(v, "keyId", key_id);
    if v.required("macAlgorithm", algorithm)
        && let Some(a) = algorithm
    {
        let names = MacAlgorithm::ALL.map(MacAlgorithm::as_str);
        v.enum_value("macAlgorithm", a, &names);
    }
    v.grant_tokens(grant_tokens);
}

/// Resolves and authorizes the key of `operation` (`GenerateMac` or
/// `VerifyMac`) and checks that it can make MACs with `algorithm` (a
/// valid name, checked by [`check_members`]).
pub async fn mac_key(
    ctx: &mut Ctx<'_>,
    operation: &str,
    key_id: &str,
    algorithm: &str,
    grant_tokens: Option<&[String]>,
) -> Result<(Arc<Key>, MacAlgorithm), KmsError> {
    let algorithm = MacAlgorithm::parse(algorithm)
        .ok_or_else(|| KmsError::Internal(format!("unchecked MAC algorithm {algorithm}")))?;
    let key = ctx.store.resolve(key_id).await?;
    let use_ = Use {
        key_id: Some(key_id),
        algorithm: Some(algorithm.as_str()),
        grant_tokens,
        ..Use::default()
    };
    let key = ctx.authorize(operation, key, use_).await?;
    key.check_usable(ctx.store.realm())?;
    require_usage(ctx, &key, KeyUsage::GenerateVerifyMac, operation)?;
    if key.record.key_spec.mac_algorithm() != Some(algorithm) {
        return Err(incompatible_algorithm(
            algorithm.as_str(),
            key.record.key_spec.as_str(),
        ));
    }
    Ok((key, algorithm))
}
