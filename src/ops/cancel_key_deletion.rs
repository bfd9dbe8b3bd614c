//! CancelKeyDeletion: a key pending deletion goes back to Disabled (not
//! Enabled), or to PendingImport if it has no key material, as in AWS KMS.
//! Only while its waiting period lasts: once the deletion date has passed,
//! or a gateway has begun destroying the key (a decision committed on the
//! token, which this change loses to or wins against: keystore/destroy.rs),
//! the deletion is under way and the cancel is refused.

use serde::Serialize;

use super::Ctx;
use super::authorize::Use;
use super::key_arg::resolve_key_id_or_arn;
use super::shapes::KeyIdRequest;
use crate::error::KmsError;
use crate::keystore::{KeyState, Origin};

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CancelKeyDeletionResponse {
    pub key_id: String,
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: KeyIdRequest,
) -> Result<CancelKeyDeletionResponse, KmsError> {
    let key = resolve_key_id_or_arn(ctx, req.key_id()?).await?;
    let key = ctx
        .authorize("CancelKeyDeletion", key, Use::default())
        .await?;
    let store = ctx.store;
    let arn = store.realm().key_arn(key.id());
    store
        .update_key(key.id(), |r| {
            if r.state != KeyState::PendingDeletion {
                return Err(KmsError::InvalidState(format!(
                    "{arn} is not pending deletion."
                )));
            }
            if r.deletion_under_way(store.now()) {
                return Err(KmsError::InvalidState(format!(
                    "{arn} is being deleted: its waiting period has ended."
                )));
            }
            // A key with no material (EXTERNAL, none imported or deleted)
            // goes back to waiting for it, as in AWS.
            r.state = if r.origin != Origin::AwsKms && r.versions.is_empty() {
                KeyState::PendingImport
            } else {
                KeyState::Disabled
            };
            r.deletion_date = None;
            r.pending_window_days = None;
            Ok(())
        })
        .await?;
    Ok(CancelKeyDeletionResponse { key_id: arn })
}
