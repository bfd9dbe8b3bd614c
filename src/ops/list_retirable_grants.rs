//! ListRetirableGrants: the grants, on every key, that a principal may
//! retire, a page at a time.

use serde::Deserialize;

use super::Ctx;
use super::grant_shapes::{DEFAULT_GRANT_LIMIT, GrantListEntry, ListGrantsResponse, grant_page};
use super::shapes::check_paging;
use super::validate::Violations;
use crate::error::KmsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListRetirableGrantsRequest {
    pub retiring_principal: Option<String>,
    pub limit: Option<i64>,
    pub marker: Option<String>,
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: ListRetirableGrantsRequest,
) -> Result<ListGrantsResponse, KmsError> {
    let mut v = Violations::new();
    if v.required("retiringPrincipal", &req.retiring_principal)
        && let Some(p) = &req.retiring_principal
    {
        v.str_len("retiringPrincipal", p, 1, 256);
    }
    if let Some(l) = req.limit {
        v.int_range("limit", l, 1, 100);
    }
    check_paging(&mut v, None, &req.marker);
    v.finish()?;
    let principal = req.retiring_principal.unwrap_or_default();
    let realm = ctx.store.realm();
    let mut all = Vec::new();
    for key in ctx.store.all_keys()? {
        for g in &key.record.grants {
            if g.retiring.as_deref() == Some(principal.as_str()) {
                all.push(GrantListEntry::of(realm, key.id(), g));
            }
        }
    }
    grant_page(
        all,
        req.marker.as_deref(),
        req.limit.unwrap_or(DEFAULT_GRANT_LIMIT),
        |g| format!("{}:{}", g.key_id, g.grant_id),
    )
}
