//! Changes to a key's record that several operations share: its state
//! (EnableKey, DisableKey) and changes allowed only while it is usable
//! (EnableKeyRotation, DisableKeyRotation).

use super::Ctx;
use super::authorize::Use;
use super::key_arg::resolve_key_id_or_arn;
use super::shapes::{Empty, KeyIdRequest, pending_deletion};
use crate::error::KmsError;
use crate::keystore::{KeyRecord, KeyState, StoreError, usable};

/// EnableKey and DisableKey: any state but PendingDeletion becomes `state`.
pub(super) async fn set_state(
    ctx: &mut Ctx<'_>,
    req: KeyIdRequest,
    state: KeyState,
) -> Result<Empty, KmsError> {
    let key = resolve_key_id_or_arn(ctx, req.key_id()?).await?;
    let operation = match state {
        KeyState::Disabled => "DisableKey",
        _ => "EnableKey",
    };
    let key = ctx.authorize(operation, key, Use::default()).await?;
    let realm = ctx.store.realm();
    ctx.store
        .update_key(key.id(), |r| match r.state {
            KeyState::PendingDeletion => Err(pending_deletion(realm, &key)),
            // Only an import gives an EXTERNAL key material (and so state).
            KeyState::PendingImport => Err(StoreError::PendingImport {
                arn: realm.key_arn(&r.key_id),
            }
            .into()),
            _ => {
                r.state = state;
                Ok(())
            }
        })
        .await?;
    Ok(Empty {})
}

/// EnableKeyRotation and DisableKeyRotation: resolve the key and change its
/// record, only while it is Enabled (checked on the cached key and again on
/// the latest record), with AWS's Disabled and pending-deletion errors.
pub(super) async fn update_if_usable<F>(
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
    super::key_usage::require_rotatable(&key)?;
    super::key_usage::require_generated(ctx, &key, false)?;
    let store = ctx.store;
    let realm = store.realm();
    key.check_usable(realm)?;
    store
        .update_key(key.id(), |r| {
            usable(r, realm)?;
            change(r)
        })
        .await?;
    Ok(())
}
