//! GenerateMac: the HMAC of a message (1 to 4096 bytes) under an HMAC key,
//! computed on the token.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::mac::{check_members, mac_key};
use super::shapes::{Blob, SecretBlob, dry_run};
use super::validate::Violations;
use crate::error::KmsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateMacRequest {
    pub message: Option<SecretBlob>,
    pub key_id: Option<String>,
    pub mac_algorithm: Option<String>,
    pub grant_tokens: Option<Vec<String>>,
    pub dry_run: Option<bool>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateMacResponse {
    pub mac: Blob,
    pub mac_algorithm: &'static str,
    /// The key ARN.
    pub key_id: String,
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: GenerateMacRequest,
) -> Result<GenerateMacResponse, KmsError> {
    let mut v = Violations::new();
    check_members(
        &mut v,
        &req.key_id,
        &req.message,
        &req.mac_algorithm,
        &req.grant_tokens,
    );
    v.finish()?;
    let (key, algorithm) = mac_key(
        ctx,
        "GenerateMac",
        req.key_id.as_deref().unwrap_or_default(),
        req.mac_algorithm.as_deref().unwrap_or_default(),
        req.grant_tokens.as_deref(),
    )
    .await?;
    dry_run(req.dry_run)?;
    let message = req.message.map(|m| m.0).unwrap_or_default();
    let (version, mac) = ctx.store.generate_mac(&key, algorithm, message).await?;
    ctx.audit_version(version);
    Ok(GenerateMacResponse {
        mac: Blob(mac),
        mac_algorithm: algorithm.as_str(),
        key_id: ctx.store.realm().key_arn(key.id()),
    })
}
