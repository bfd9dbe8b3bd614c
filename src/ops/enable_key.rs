//! EnableKey: a Disabled key becomes Enabled. A key pending deletion must
//! first have its deletion cancelled.

use super::Ctx;
use super::key_state::set_state;
use super::shapes::{Empty, KeyIdRequest};
use crate::error::KmsError;
use crate::keystore::KeyState;

pub async fn handle(ctx: &mut Ctx<'_>, req: KeyIdRequest) -> Result<Empty, KmsError> {
    set_state(ctx, req, KeyState::Enabled).await
}
