//! DescribeKey: a key's metadata, in any state.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::authorize::Use;
use super::shapes::{KeyMetadata, check_key_id};
use super::validate::Violations;
use crate::error::KmsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeKeyRequest {
    pub key_id: Option<String>,
    pub grant_tokens: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeKeyResponse {
    pub key_metadata: KeyMetadata,
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: DescribeKeyRequest,
) -> Result<DescribeKeyResponse, KmsError> {
    let mut v = Violations::new();
    check_key_id(&mut v, "keyId", &req.key_id);
    v.grant_tokens(&req.grant_tokens);
    v.finish()?;
    let key = ctx
        .store
        .resolve(req.key_id.as_deref().unwrap_or_default())
        .await?;
    let use_ = Use {
        key_id: req.key_id.as_deref(),
        grant_tokens: req.grant_tokens.as_deref(),
        ..Use::default()
    };
    let key = ctx.authorize("DescribeKey", key, use_).await?;
    let realm = ctx.store.realm();
    Ok(DescribeKeyResponse {
        key_metadata: KeyMetadata::of(realm, &key),
    })
}
