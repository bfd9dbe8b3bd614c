//! EnableKeyRotation: rotate the key automatically every
//! RotationPeriodInDays (90 to 2560, default 365) days.

use serde::Deserialize;

use super::Ctx;
use super::key_state::update_if_usable;
use super::shapes::{Empty, check_key_id};
use super::validate::Violations;
use crate::error::KmsError;
use crate::keystore::RotationSchedule;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnableKeyRotationRequest {
    pub key_id: Option<String>,
    pub rotation_period_in_days: Option<i64>,
}

pub const DEFAULT_PERIOD_DAYS: i64 = 365;

pub async fn handle(ctx: &mut Ctx<'_>, req: EnableKeyRotationRequest) -> Result<Empty, KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    if let Some(d) = req.rotation_period_in_days {
        v.int_range("rotationPeriodInDays", d, 90, 2560);
    }
    v.finish()?;
    let period = req.rotation_period_in_days.unwrap_or(DEFAULT_PERIOD_DAYS) as u32;
    let now = ctx.store.now();
    let key_id = req.key_id.as_deref().unwrap_or_default();
    update_if_usable(ctx, "EnableKeyRotation", key_id, |r| {
        // Same period: keep the date already scheduled.
        if r.rotation.as_ref().is_some_and(|s| s.period_days == period) {
            return Ok(());
        }
        r.rotation = Some(RotationSchedule {
            period_days: period,
            next_rotation: (now + f64::from(period) * 86_400.0).round(),
        });
        Ok(())
    })
    .await?;
    Ok(Empty {})
}
