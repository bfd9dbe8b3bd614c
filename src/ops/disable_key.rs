//! DisableKey: the key refuses cryptographic use until enabled again.

use super::Ctx;
use super::key_state::set_state;
use super::shapes::{Empty, KeyIdRequest};
use crate::error::KmsError;
use crate::keystore::KeyState;

pub async fn handle(ctx: &mut Ctx<'_>, req: KeyIdRequest) -> Result<Empty, KmsError> {
    set_state(ctx, req, KeyState::Disabled).await
}
