//! What Sign and Verify share: their members' checks, and the checks of
//! the key in AWS's order (the key exists, the caller may use it, it is
//! enabled, it is a signing key, the algorithm fits its spec, a digest has
//! the algorithm's length).

use std::sync::Arc;

use super::Ctx;
use super::authorize::Use;
use super::key_usage::require_usage;
use super::shapes::{SecretBlob, check_key_id};
use super::validate::Violations;
use crate::error::{KmsError, digest_length, incompatible_algorithm};
use crate::keystore::{Key, KeyUsage, MessageType, SigningAlgorithm};
use crate::policy::Facts;

/// The SigningAlgorithmSpec enum of the service model, in its order; the
/// ones kmsgate has no key for are valid names that fit no key.
pub const SIGNING_ALGORITHMS: &[&str] = &[
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
    "ECDSA_SHA_256",
    "ECDSA_SHA_384",
    "ECDSA_SHA_512",
    "SM2DSA",
    "ML_DSA_SHAKE_256",
    "ED25519_SHA_512",
    "ED25519_PH_SHA_512",
];

/// The MessageType enum of the service model.
const MESSAGE_TYPES: &[&str] = &["RAW", "DIGEST", "EXTERNAL_MU"];

/// The members Sign and Verify share, as they arrive.
pub struct SigningMembers<'r> {
    pub key_id: &'r Option<String>,
    pub message: &'r Option<SecretBlob>,
    pub message_type: &'r Option<String>,
    pub algorithm: &'r Option<String>,
    pub grant_tokens: &'r Option<Vec<String>>,
}

/// Checks the members both operations have; the caller adds its own
/// (Verify's `Signature`) to `v` and finishes it.
pub fn check_members(v: &mut Violations, m: &SigningMembers<'_>) {
    check_key_id(v, "keyId", m.key_id);
    if v.required("message", m.message)
        && let Some(msg) = m.message
    {
        v.blob_len("message", msg.0.len(), 1, 4096);
    }
    if let Some(t) = m.message_type {
        v.enum_value("messageType", t, MESSAGE_TYPES);
    }
    if v.required("signingAlgorithm", m.algorithm)
        && let Some(a) = m.algorithm
    {
        v.enum_value("signingAlgorithm", a, SIGNING_ALGORITHMS);
    }
    v.grant_tokens(m.grant_tokens);
}

/// Resolves and authorizes the key of `operation` (`Sign` or `Verify`)
/// and checks that it signs with the algorithm, and that a digest has the
/// algorithm's length. Call after [`check_members`] passed.
pub async fn signing_key(
    ctx: &mut Ctx<'_>,
    operation: &str,
    m: &SigningMembers<'_>,
) -> Result<(Arc<Key>, SigningAlgorithm, MessageType), KmsError> {
    let key_id = m.key_id.as_deref().unwrap_or_default();
    let name = m.algorithm.as_deref().unwrap_or_default();
    let key = ctx.store.resolve(key_id).await?;
    let mut facts = Facts::default();
    facts.set_one(
        "kms:MessageType",
        m.message_type.as_deref().unwrap_or("RAW"),
    );
    let use_ = Use {
        key_id: Some(key_id),
        algorithm: Some(name),
        grant_tokens: m.grant_tokens.as_deref(),
        extra: Some(&facts),
        ..Use::default()
    };
    let key = ctx.authorize(operation, key, use_).await?;
    key.check_usable(ctx.store.realm())?;
    require_usage(ctx, &key, KeyUsage::SignVerify, operation)?;
    let spec = key.record.key_spec;
    let Some(algorithm) =
        SigningAlgorithm::parse(name).filter(|a| spec.signing_algorithms().contains(a))
    else {
        return Err(incompatible_algorithm(name, spec.as_str()));
    };
    let message_type = match m.message_type.as_deref() {
        None | Some("RAW") => MessageType::Raw,
        Some("DIGEST") => MessageType::Digest,
        // EXTERNAL_MU is for ML-DSA keys only.
        Some(other) => {
            return Err(KmsError::Validation(format!(
                "MessageType {other} is not valid for algorithm {name}."
            )));
        }
    };
    let len = m.message.as_ref().map_or(0, |b| b.0.len());
    if message_type == MessageType::Digest && len != algorithm.digest_len() {
        return Err(digest_length(name));
    }
    Ok((key, algorithm, message_type))
}
