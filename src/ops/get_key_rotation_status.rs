//! GetKeyRotationStatus: whether automatic rotation is on, its period and
//! the next date. On-demand rotations complete within the request, so no
//! OnDemandRotationStartDate is ever pending.

use serde::Serialize;

use super::Ctx;
use super::authorize::Use;
use super::key_arg::resolve_key_id_or_arn;
use super::shapes::{KeyIdRequest, pending_deletion};
use crate::error::KmsError;
use crate::keystore::KeyState;

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetKeyRotationStatusResponse {
    pub key_rotation_enabled: bool,
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_period_in_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_rotation_date: Option<f64>,
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: KeyIdRequest,
) -> Result<GetKeyRotationStatusResponse, KmsError> {
    let key = resolve_key_id_or_arn(ctx, req.key_id()?).await?;
    let key = ctx
        .authorize("GetKeyRotationStatus", key, Use::default())
        .await?;
    super::key_usage::require_rotatable(&key)?;
    let realm = ctx.store.realm();
    let arn = realm.key_arn(key.id());
    if key.record.state == KeyState::PendingDeletion {
        return Err(pending_deletion(realm, &key));
    }
    let schedule = key.record.rotation.as_ref();
    Ok(GetKeyRotationStatusResponse {
        key_rotation_enabled: schedule.is_some(),
        key_id: arn,
        rotation_period_in_days: schedule.map(|s| s.period_days),
        next_rotation_date: schedule.map(|s| s.next_rotation),
    })
}
