//! ListKeyRotations: the key's rotations (each version after the first),
//! oldest first, a page at a time. With IncludeKeyMaterial=ALL_KEY_MATERIAL
//! the original version is listed too.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::authorize::Use;
use super::key_arg::resolve_key_id_or_arn;
use super::shapes::{check_key_id, check_paging};
use super::validate::Violations;
use crate::error::KmsError;
use crate::keystore::key_material_id;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyRotationsRequest {
    pub key_id: Option<String>,
    pub include_key_material: Option<String>,
    pub limit: Option<i64>,
    pub marker: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationsListEntry {
    pub key_id: String,
    pub key_material_id: String,
    pub key_material_state: &'static str,
    pub rotation_date: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_type: Option<&'static str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyRotationsResponse {
    pub rotations: Vec<RotationsListEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub truncated: bool,
}

const DEFAULT_LIMIT: i64 = 100;

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: ListKeyRotationsRequest,
) -> Result<ListKeyRotationsResponse, KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    check_paging(&mut v, req.limit, &req.marker);
    let all_material = match req.include_key_material.as_deref() {
        None => false,
        Some(m) => {
            v.enum_value(
                "includeKeyMaterial",
                m,
                &["ALL_KEY_MATERIAL", "ROTATIONS_ONLY"],
            );
            m == "ALL_KEY_MATERIAL"
        }
    };
    v.finish()?;
    let limit = req.limit.unwrap_or(DEFAULT_LIMIT) as usize;
    let key = resolve_key_id_or_arn(ctx, req.key_id.as_deref().unwrap_or_default()).await?;
    let key = ctx
        .authorize("ListKeyRotations", key, Use::default())
        .await?;
    super::key_usage::require_rotatable(&key)?;
    // The marker is the version number the next page starts at.
    let start: u32 = match &req.marker {
        Some(m) => m
            .parse()
            .map_err(|_| KmsError::InvalidMarker(format!("Invalid marker '{m}'")))?,
        None => 0,
    };
    let r = &key.record;
    let mut versions: Vec<_> = r
        .versions
        .iter()
        .filter(|v| all_material || v.rotation.is_some())
        .filter(|v| v.version >= start)
        .collect();
    versions.sort_by_key(|v| v.version);
    let truncated = versions.len() > limit;
    let rotations = versions
        .iter()
        .take(limit)
        .map(|v| RotationsListEntry {
            key_id: r.key_id.to_string(),
            key_material_id: key_material_id(&r.key_id, v.version),
            key_material_state: if v.version == r.primary_version {
                "CURRENT"
            } else {
                "NON_CURRENT"
            },
            rotation_date: v.created,
            rotation_type: v.rotation.map(|t| t.as_str()),
        })
        .collect();
    Ok(ListKeyRotationsResponse {
        rotations,
        next_marker: truncated.then(|| versions[limit].version.to_string()),
        truncated,
    })
}
