//! DescribeKey: a key's metadata, in any state.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::shapes::KeyMetadata;
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
    let key = ctx
        .named_key("DescribeKey", &req.key_id, &req.grant_tokens)
        .await?;
    let realm = ctx.store.realm();
    Ok(DescribeKeyResponse {
        key_metadata: KeyMetadata::of(realm, &key),
    })
}
