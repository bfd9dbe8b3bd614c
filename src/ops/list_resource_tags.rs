//! ListResourceTags: a key's tags, a page at a time, in any key state.
//!
//! Tags are listed sorted by tag key (by code point), not in the order they
//! were added: a sorted list lets the marker be the tag key the next page
//! starts at, so paging stays correct while tags are added or removed
//! between pages. The marker is that key hex-encoded, because a tag key may
//! hold characters that AWS's MarkerType (`[\u0020-\u00FF]*`) does not allow.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::authorize::Use;
use super::key_arg::resolve_key_id_or_arn;
use super::shapes::{TagShape, check_key_id, check_paging};
use super::validate::Violations;
use crate::error::KmsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListResourceTagsRequest {
    pub key_id: Option<String>,
    pub limit: Option<i64>,
    pub marker: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListResourceTagsResponse {
    pub tags: Vec<TagShape>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub truncated: bool,
}

/// AWS documents Limit as 1 to 50, default 50, while its model allows up to
/// 1000; a larger Limit passes validation and returns at most 50 tags.
const MAX_PAGE: usize = 50;

fn decode_marker(marker: &str) -> Result<String, KmsError> {
    hex::decode(marker)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| KmsError::InvalidMarker("Invalid marker".into()))
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: ListResourceTagsRequest,
) -> Result<ListResourceTagsResponse, KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    check_paging(&mut v, req.limit, &req.marker);
    v.finish()?;
    let limit = req.limit.map_or(MAX_PAGE, |l| (l as usize).min(MAX_PAGE));
    let start_key = req.marker.as_deref().map(decode_marker).transpose()?;

    let key = resolve_key_id_or_arn(ctx, req.key_id.as_deref().unwrap_or_default()).await?;
    let key = ctx
        .authorize("ListResourceTags", key, Use::default())
        .await?;
    let mut all: Vec<_> = key.record.tags.iter().collect();
    all.sort_by(|a, b| a.key.cmp(&b.key));
    let start = match &start_key {
        Some(k) => all.partition_point(|t| t.key.as_str() < k.as_str()),
        None => 0,
    };
    let page = &all[start..];
    let truncated = page.len() > limit;
    Ok(ListResourceTagsResponse {
        tags: page
            .iter()
            .take(limit)
            .map(|t| TagShape {
                tag_key: t.key.clone(),
                tag_value: t.value.clone(),
            })
            .collect(),
        next_marker: truncated.then(|| hex::encode(page[limit].key.as_bytes())),
        truncated,
    })
}
