//! ScheduleKeyDeletion: the key becomes PendingDeletion for a waiting
//! period of 7 to 30 days (default 30), refusing all cryptographic use.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::authorize::Use;
use super::key_arg::resolve_key_id_or_arn;
use super::shapes::{check_key_id, pending_deletion};
use super::validate::Violations;
use crate::error::KmsError;
use crate::keystore::KeyState;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleKeyDeletionRequest {
    pub key_id: Option<String>,
    pub pending_window_in_days: Option<i64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleKeyDeletionResponse {
    pub key_id: String,
    pub deletion_date: f64,
    pub key_state: &'static str,
    pub pending_window_in_days: u32,
}

pub const DEFAULT_WINDOW_DAYS: i64 = 30;

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: ScheduleKeyDeletionRequest,
) -> Result<ScheduleKeyDeletionResponse, KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    if let Some(d) = req.pending_window_in_days {
        v.int_range("pendingWindowInDays", d, 7, 30);
    }
    v.finish()?;
    let days = req.pending_window_in_days.unwrap_or(DEFAULT_WINDOW_DAYS) as u32;
    let key = resolve_key_id_or_arn(ctx, req.key_id.as_deref().unwrap_or_default()).await?;
    let key = ctx
        .authorize("ScheduleKeyDeletion", key, Use::default())
        .await?;
    let realm = ctx.store.realm();
    let arn = realm.key_arn(key.id());
    let deletion_date = (ctx.store.now() + f64::from(days) * 86_400.0).round();
    ctx.store
        .update_key(key.id(), |r| {
            if r.state == KeyState::PendingDeletion {
                return Err(pending_deletion(realm, &key));
            }
            r.state = KeyState::PendingDeletion;
            r.deletion_date = Some(deletion_date);
            r.pending_window_days = Some(days);
            Ok(())
        })
        .await?;
    Ok(ScheduleKeyDeletionResponse {
        key_id: arn,
        deletion_date,
        key_state: KeyState::PendingDeletion.as_str(),
        pending_window_in_days: days,
    })
}
