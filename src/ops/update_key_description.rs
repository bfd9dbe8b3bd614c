//! UpdateKeyDescription: replaces a key's description (DescribeKey shows
//! it). Allowed while the key is disabled, refused while it is pending
//! deletion, as AWS's key-state table says.

use serde::Deserialize;

use super::Ctx;
use super::key_arg::update_unless_pending;
use super::shapes::{Empty, check_key_id};
use super::validate::Violations;
use crate::error::KmsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateKeyDescriptionRequest {
    pub key_id: Option<String>,
    pub description: Option<String>,
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: UpdateKeyDescriptionRequest,
) -> Result<Empty, KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    if v.required("description", &req.description)
        && let Some(d) = &req.description
    {
        v.str_len("description", d, 0, 8192);
    }
    v.finish()?;
    let description = req.description.unwrap_or_default();

    update_unless_pending(
        ctx,
        "UpdateKeyDescription",
        req.key_id.as_deref().unwrap_or_default(),
        |r| {
            r.description = description.clone();
            Ok(())
        },
    )
    .await?;
    Ok(Empty {})
}
