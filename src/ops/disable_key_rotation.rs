//! DisableKeyRotation: no more automatic rotations; existing versions stay.

use super::Ctx;
use super::shapes::{Empty, KeyIdRequest};
use crate::error::KmsError;

pub async fn handle(ctx: &mut Ctx<'_>, req: KeyIdRequest) -> Result<Empty, KmsError> {
    let key = ctx.store.resolve(req.key_id()?).await?;
    let store = ctx.store;
    let realm = store.realm();
    ctx.audit(realm.key_arn(key.id()));
    key.check_usable(realm)?;
    store
        .update_key(key.id(), |r| {
            crate::keystore::usable(r, realm)?;
            r.rotation = None;
            Ok(())
        })
        .await?;
    Ok(Empty {})
}
