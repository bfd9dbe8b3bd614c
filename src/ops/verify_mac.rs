//! VerifyMac: whether a MAC is the HMAC of a message under an HMAC key.
//! The token compares (C_Verify); a MAC that does not verify is
//! KMSInvalidMacException, never `MacValid: false`, as AWS answers.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::mac::{check_members, mac_key};
use super::shapes::{Blob, SecretBlob, dry_run};
use super::validate::Violations;
use crate::error::KmsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyMacRequest {
    pub message: Option<SecretBlob>,
    pub key_id: Option<String>,
    pub mac_algorithm: Option<String>,
    pub mac: Option<Blob>,
    pub grant_tokens: Option<Vec<String>>,
    pub dry_run: Option<bool>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyMacResponse {
    /// The key ARN.
    pub key_id: String,
    pub mac_valid: bool,
    pub mac_algorithm: &'static str,
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: VerifyMacRequest,
) -> Result<VerifyMacResponse, KmsError> {
    let mut v = Violations::new();
    check_members(
        &mut v,
        &req.key_id,
        &req.message,
        &req.mac_algorithm,
        &req.grant_tokens,
    );
    if v.required("mac", &req.mac)
        && let Some(m) = &req.mac
    {
        v.blob_len("mac", m.0.len(), 1, 6144);
    }
    v.finish()?;
    let (key, algorithm) = mac_key(
        ctx,
        "VerifyMac",
        req.key_id.as_deref().unwrap_or_default(),
        req.mac_algorithm.as_deref().unwrap_or_default(),
        req.grant_tokens.as_deref(),
    )
    .await?;
    dry_run(req.dry_run)?;
    let message = req.message.map(|m| m.0).unwrap_or_default();
    let mac = req.mac.map(|m| m.0).unwrap_or_default();
    let (version, valid) = ctx.store.verify_mac(&key, algorithm, message, mac).await?;
    ctx.audit_version(version);
    if !valid {
        return Err(KmsError::InvalidMac);
    }
    Ok(VerifyMacResponse {
        key_id: ctx.store.realm().key_arn(key.id()),
        mac_valid: true,
        mac_algorithm: algorithm.as_str(),
    })
}
