//! DisableKeyRotation: no more automatic rotations; existing versions stay.

use super::Ctx;
use super::key_state::update_if_usable;
use super::shapes::{Empty, KeyIdRequest};
use crate::error::KmsError;

pub async fn handle(ctx: &mut Ctx<'_>, req: KeyIdRequest) -> Result<Empty, KmsError> {
    update_if_usable(ctx, "DisableKeyRotation", req.key_id()?, |r| {
        r.rotation = None;
        Ok(())
    })
    .await?;
    Ok(Empty {})
}
