//! UntagResource: removes tags from a key by tag key. Keys the key does not
//! have are ignored, as AWS documents; reserved `aws:` keys are refused, as
//! they can never be a customer's to remove.

use serde::Deserialize;

use super::Ctx;
use super::key_arg::update_unless_pending;
use super::shapes::{Empty, check_key_id};
use super::tags::is_reserved_tag_key;
use super::validate::Violations;
use crate::error::KmsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UntagResourceRequest {
    pub key_id: Option<String>,
    pub tag_keys: Option<Vec<String>>,
}

pub async fn handle(ctx: &mut Ctx<'_>, req: UntagResourceRequest) -> Result<Empty, KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    if v.required("tagKeys", &req.tag_keys)
        && let Some(keys) = &req.tag_keys
    {
        for (i, k) in keys.iter().enumerate() {
            v.str_len(&format!("tagKeys.{}.member", i + 1), k, 1, 128);
        }
    }
    v.finish()?;
    let remove = req.tag_keys.unwrap_or_default();

    update_unless_pending(
        ctx,
        "UntagResource",
        req.key_id.as_deref().unwrap_or_default(),
        |r| {
            if remove.iter().any(|k| is_reserved_tag_key(k)) {
                return Err(KmsError::Tag(
                    "Tags beginning with aws: are reserved".into(),
                ));
            }
            r.tags.retain(|t| !remove.contains(&t.key));
            Ok(())
        },
    )
    .await?;
    Ok(Empty {})
}
