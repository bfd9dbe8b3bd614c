//! TagResource: adds tags to a key, or gives existing tag keys new values.
//!
//! Checked in the order AWS's layers see a request: the model's limits
//! (ValidationException) before the key is looked up, the key's state
//! before the tag rules (TagException), and the 50-tag limit against the
//! tags the key would end up with. Every refusal leaves the key as it was.

use serde::Deserialize;

use super::Ctx;
use super::key_arg::update_unless_pending;
use super::shapes::{Empty, TagShape, check_key_id};
use super::tags::{MAX_TAGS, check_tag_lengths, check_tag_rules};
use super::validate::Violations;
use crate::error::KmsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagResourceRequest {
    pub key_id: Option<String>,
    pub tags: Option<Vec<TagShape>>,
}

pub async fn handle(ctx: &mut Ctx<'_>, req: TagResourceRequest) -> Result<Empty, KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    if v.required("tags", &req.tags)
        && let Some(tags) = &req.tags
    {
        check_tag_lengths(&mut v, tags);
    }
    v.finish()?;
    let requested = req.tags.unwrap_or_default();

    update_unless_pending(
        ctx,
        "TagResource",
        req.key_id.as_deref().unwrap_or_default(),
        |r| {
            for tag in check_tag_rules(&requested)? {
                match r.tags.iter_mut().find(|t| t.key == tag.key) {
                    Some(existing) => existing.value = tag.value,
                    None => r.tags.push(tag),
                }
            }
            if r.tags.len() > MAX_TAGS {
                return Err(KmsError::Tag("Too many tags".into()));
            }
            Ok(())
        },
    )
    .await?;
    Ok(Empty {})
}
