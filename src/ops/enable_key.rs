//! EnableKey: a Disabled key becomes Enabled. A key pending deletion must
//! first have its deletion cancelled.

use super::Ctx;
use super::authorize::Use;
use super::key_arg::resolve_key_id_or_arn;
use super::shapes::{Empty, KeyIdRequest, pending_deletion};
use crate::error::KmsError;
use crate::keystore::KeyState;

pub async fn handle(ctx: &mut Ctx<'_>, req: KeyIdRequest) -> Result<Empty, KmsError> {
    set_state(ctx, req, KeyState::Enabled).await
}

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
            _ => {
                r.state = state;
                Ok(())
            }
        })
        .await?;
    Ok(Empty {})
}
