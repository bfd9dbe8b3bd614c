//! ListGrants: the grants of one key, a page at a time.

use serde::Deserialize;

use super::Ctx;
use super::authorize::Use;
use super::grant_shapes::{
    DEFAULT_GRANT_LIMIT, GrantListEntry, ListGrantsResponse, check_grant_id, grant_page,
};
use super::key_arg::resolve_key_id_or_arn;
use super::shapes::{check_key_id, check_paging};
use super::validate::Violations;
use crate::error::KmsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListGrantsRequest {
    pub key_id: Option<String>,
    pub limit: Option<i64>,
    pub marker: Option<String>,
    pub grant_id: Option<String>,
    pub grantee_principal: Option<String>,
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: ListGrantsRequest,
) -> Result<ListGrantsResponse, KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    if let Some(l) = req.limit {
        v.int_range("limit", l, 1, 100);
    }
    check_paging(&mut v, None, &req.marker);
    if let Some(g) = &req.grant_id {
        v.str_len("grantId", g, 1, 128);
    }
    if let Some(p) = &req.grantee_principal {
        v.str_len("granteePrincipal", p, 1, 256);
    }
    v.finish()?;
    if let Some(g) = &req.grant_id {
        check_grant_id(g)?;
    }
    let key = resolve_key_id_or_arn(ctx, req.key_id.as_deref().unwrap_or_default()).await?;
    let key = ctx.authorize("ListGrants", key, Use::default()).await?;
    let realm = ctx.store.realm();
    let all = key
        .record
        .grants
        .iter()
        .filter(|g| req.grant_id.as_ref().is_none_or(|id| &g.grant_id == id))
        .filter(|g| {
            req.grantee_principal
                .as_ref()
                .is_none_or(|p| &g.grantee == p)
        })
        .map(|g| GrantListEntry::of(realm, key.id(), g))
        .collect();
    grant_page(
        all,
        req.marker.as_deref(),
        req.limit.unwrap_or(DEFAULT_GRANT_LIMIT),
        |g| g.grant_id.clone(),
    )
}
