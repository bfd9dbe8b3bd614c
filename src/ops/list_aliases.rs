//! ListAliases: every alias, or those of one key, a page at a time.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::key_arg::resolve_key_id_or_arn;
use super::shapes::check_paging;
use super::validate::Violations;
use crate::error::KmsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListAliasesRequest {
    pub key_id: Option<String>,
    pub limit: Option<i64>,
    pub marker: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasListEntry {
    pub alias_name: String,
    pub alias_arn: String,
    pub target_key_id: String,
    pub creation_date: f64,
    pub last_updated_date: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListAliasesResponse {
    pub aliases: Vec<AliasListEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub truncated: bool,
}

const DEFAULT_LIMIT: i64 = 50;

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: ListAliasesRequest,
) -> Result<ListAliasesResponse, KmsError> {
    let mut v = Violations::new();
    if let Some(k) = &req.key_id {
        v.str_len("keyId", k, 1, 2048);
    }
    check_paging(&mut v, req.limit, &req.marker);
    v.finish()?;
    let limit = req.limit.unwrap_or(DEFAULT_LIMIT) as usize;
    let filter = match &req.key_id {
        Some(k) => Some(*resolve_key_id_or_arn(ctx, k).await?.id()),
        None => None,
    };
    let realm = ctx.store.realm();
    let all: Vec<_> = ctx
        .store
        .all_aliases()?
        .into_iter()
        .filter(|a| filter.is_none_or(|id| a.target == id))
        .collect();
    // The marker is the alias name the next page starts at.
    let start = match &req.marker {
        Some(m) => all.partition_point(|a| a.name.as_str() < m.as_str()),
        None => 0,
    };
    let page = &all[start..];
    let truncated = page.len() > limit;
    let aliases = page
        .iter()
        .take(limit)
        .map(|a| AliasListEntry {
            alias_name: a.name.clone(),
            alias_arn: realm.alias_arn(&a.name),
            target_key_id: a.target.to_string(),
            creation_date: a.created,
            last_updated_date: a.updated,
        })
        .collect();
    Ok(ListAliasesResponse {
        aliases,
        next_marker: truncated.then(|| page[limit].name.clone()),
        truncated,
    })
}
