//! The KeyId of operations that AWS documents as taking "the key ID or key
//! ARN of the KMS key" and nothing else: TagResource, UntagResource,
//! ListResourceTags, UpdateKeyDescription, EnableKey, DisableKey, the
//! rotation operations (Enable/DisableKeyRotation, GetKeyRotationStatus,
//! ListKeyRotations, RotateKeyOnDemand), Schedule/CancelKeyDeletion, the
//! key policy operations (Get/PutKeyPolicy, ListKeyPolicies), the grant
//! operations (CreateGrant, ListGrants, RevokeGrant, RetireGrant) and
//! ListAliases's KeyId filter.
//!
//! These operations must not quietly act on an alias's target: a caller who
//! disables or schedules the deletion of `alias/app` would otherwise act on
//! whichever key the alias names today. An alias is answered the way AWS
//! answers any KeyId that is not a key id (`Invalid keyId '...'`) or not a
//! key ARN (`Invalid arn ...`), both NotFoundException.

use std::sync::Arc;

use super::Ctx;
use super::authorize::Use;
use super::shapes::pending_deletion;
use crate::arn::{KeyRef, KeyRefError};
use crate::error::KmsError;
use crate::keystore::{Key, KeyRecord, KeyState};

/// The key named by a key id or key ARN; NotFoundException otherwise.
pub async fn resolve_key_id_or_arn(ctx: &Ctx<'_>, key_id: &str) -> Result<Arc<Key>, KmsError> {
    match ctx.store.realm().parse_key_ref(key_id)? {
        KeyRef::Key(_) | KeyRef::MultiRegion(_) => Ok(ctx.store.resolve(key_id).await?),
        KeyRef::Alias(_) if key_id.starts_with("arn:") => Err(KeyRefError::MalformedArn {
            arn: key_id.to_owned(),
        }
        .into()),
        KeyRef::Alias(_) => Err(KeyRefError::MalformedKeyId {
            key_id: key_id.to_owned(),
        }
        .into()),
    }
}

/// Resolves a key id or key ARN and changes its record, unless the key is
/// pending deletion (KMSInvalidStateException, checked on the latest record).
/// Shared by the operations that edit a key's tags and description.
pub async fn update_unless_pending<F>(
    ctx: &mut Ctx<'_>,
    operation: &str,
    key_id: &str,
    mut change: F,
) -> Result<(), KmsError>
where
    F: FnMut(&mut KeyRecord) -> Result<(), KmsError>,
{
    let key = resolve_key_id_or_arn(ctx, key_id).await?;
    let key = ctx.authorize(operation, key, Use::default()).await?;
    let store = ctx.store;
    let realm = store.realm();
    store
        .update_key(key.id(), |r| {
            if r.state == KeyState::PendingDeletion {
                return Err(pending_deletion(realm, &key));
            }
            change(r)
        })
        .await?;
    Ok(())
}
