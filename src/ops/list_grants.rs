//! ListGrants (the grants of one key) and ListRetirableGrants (the grants,
//! on every key, that a principal may retire), a page at a time.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::authorize::Use;
use super::grant_shapes::{GrantListEntry, check_grant_id};
use super::key_arg::resolve_key_id_or_arn;
use super::shapes::{check_key_id, check_paging};
use super::validate::Violations;
use crate::error::KmsError;

const DEFAULT_LIMIT: i64 = 50;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListGrantsRequest {
    pub key_id: Option<String>,
    pub limit: Option<i64>,
    pub marker: Option<String>,
    pub grant_id: Option<String>,
    pub grantee_principal: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListGrantsResponse {
    pub grants: Vec<GrantListEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub truncated: bool,
}

/// One page of `all`, whose entries are in a stable order and named by
/// `marker_of`: the marker is the name of the first entry of the next page.
fn page(
    all: Vec<GrantListEntry>,
    marker: Option<&str>,
    limit: i64,
    marker_of: impl Fn(&GrantListEntry) -> String,
) -> Result<ListGrantsResponse, KmsError> {
    let start = match marker {
        None => 0,
        Some(m) => all
            .iter()
            .position(|g| marker_of(g) == m)
            .ok_or_else(|| KmsError::InvalidMarker("Invalid marker".into()))?,
    };
    let mut rest: Vec<GrantListEntry> = all.into_iter().skip(start).collect();
    let limit = limit as usize;
    let next_marker = rest.get(limit).map(&marker_of);
    rest.truncate(limit);
    Ok(ListGrantsResponse {
        grants: rest,
        truncated: next_marker.is_some(),
        next_marker,
    })
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
    page(
        all,
        req.marker.as_deref(),
        req.limit.unwrap_or(DEFAULT_LIMIT),
        |g| g.grant_id.clone(),
    )
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListRetirableGrantsRequest {
    pub retiring_principal: Option<String>,
    pub limit: Option<i64>,
    pub marker: Option<String>,
}

pub async fn retirable(
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
    page(
        all,
        req.marker.as_deref(),
        req.limit.unwrap_or(DEFAULT_LIMIT),
        |g| format!("{}:{}", g.key_id, g.grant_id),
    )
}
