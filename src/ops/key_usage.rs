//! What a key may be used for, checked by every operation that uses one:
//! an encryption key never makes a MAC, an HMAC key never encrypts, and
//! only symmetric encryption keys rotate.

use super::Ctx;
use crate::error::{
    KmsError, incompatible_algorithm, no_material_pending_rotation, wrong_key_usage,
};
use crate::keystore::{Key, KeySpec, KeyState, KeyUsage, Origin, StoreError};

/// InvalidKeyUsageException (AWS's text) unless `key` is for `wanted`.
pub fn require_usage(
    ctx: &Ctx<'_>,
    key: &Key,
    wanted: KeyUsage,
    operation: &str,
) -> Result<(), KmsError> {
    let usage = key.record.key_usage;
    if usage == wanted {
        return Ok(());
    }
    let arn = ctx.store.realm().key_arn(key.id());
    Err(wrong_key_usage(&arn, usage.as_str(), operation))
}

/// Rotation (automatic, on demand, its status and its history) is for
/// symmetric encryption keys only. AWS refuses it for other keys with
/// UnsupportedOperationException and no message.
pub fn require_rotatable(key: &Key) -> Result<(), KmsError> {
    if key.record.key_spec == KeySpec::SymmetricDefault {
        Ok(())
    } else {
        Err(KmsError::UnsupportedOperation(None))
    }
}

/// The data key family's key: a symmetric encryption key. A key of another
/// usage is refused with AWS's usage text; an asymmetric encryption key
/// with the text AWS gives when SYMMETRIC_DEFAULT is asked of it.
pub fn require_symmetric_encryption(
    ctx: &Ctx<'_>,
    key: &Key,
    operation: &str,
) -> Result<(), KmsError> {
    require_usage(ctx, key, KeyUsage::EncryptDecrypt, operation)?;
    match key.record.key_spec {
        KeySpec::SymmetricDefault => Ok(()),
        other => Err(incompatible_algorithm("SYMMETRIC_DEFAULT", other.as_str())),
    }
}

/// Rotation settings and on-demand rotation are for keys whose material
/// kmsgate generates. An EXTERNAL key with no material is pending import
/// (as AWS says first); with material, AWS's refusal: automatic rotation
/// is not for imported keys, and on demand there is no new material
/// pending rotation (kmsgate imports none).
pub fn require_generated(ctx: &Ctx<'_>, key: &Key, on_demand: bool) -> Result<(), KmsError> {
    if key.record.origin == Origin::AwsKms {
        return Ok(());
    }
    let arn = ctx.store.realm().key_arn(key.id());
    if key.record.state == KeyState::PendingImport {
        return Err(StoreError::PendingImport { arn }.into());
    }
    if on_demand {
        return Err(no_material_pending_rotation(&arn));
    }
    Err(StoreError::WrongOrigin {
        arn,
        origin: key.record.origin.as_str(),
    }
    .into())
}
