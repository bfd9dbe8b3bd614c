//! ListKeys: every key, in a stable order, a page at a time.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::shapes::check_paging;
use super::validate::Violations;
use crate::error::KmsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeysRequest {
    pub limit: Option<i64>,
    pub marker: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyListEntry {
    pub key_id: String,
    pub key_arn: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeysResponse {
    pub keys: Vec<KeyListEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub truncated: bool,
}

const DEFAULT_LIMIT: i64 = 100;

pub async fn handle(ctx: &mut Ctx<'_>, req: ListKeysRequest) -> Result<ListKeysResponse, KmsError> {
    let mut v = Violations::new();
    check_paging(&mut v, req.limit, &req.marker);
    v.finish()?;
    let limit = req.limit.unwrap_or(DEFAULT_LIMIT) as usize;
    let realm = ctx.store.realm();
    // A key whose record is of a newer kmsgate is listed too: it exists,
    // only its content is not this gateway's to tell.
    let mut all: Vec<uuid::Uuid> = ctx.store.all_keys()?.iter().map(|k| *k.id()).collect();
    all.extend(ctx.store.foreign_key_ids()?);
    all.sort();
    // The marker is the key id the next page starts at.
    let start = match &req.marker {
        Some(m) => all.partition_point(|k| k.to_string().as_str() < m.as_str()),
        None => 0,
    };
    let page = &all[start..];
    let truncated = page.len() > limit;
    let keys = page
        .iter()
        .take(limit)
        .map(|k| KeyListEntry {
            key_id: k.to_string(),
            key_arn: realm.key_arn(k),
        })
        .collect();
    Ok(ListKeysResponse {
        keys,
        next_marker: truncated.then(|| page[limit].to_string()),
        truncated,
    })
}
