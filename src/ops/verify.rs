//! Verify: whether a signature is the key's signature of a message or
//! digest. The token verifies with the key's public key; a signature that
//! does not verify is KMSInvalidSignatureException, never
//! `SignatureValid: false`, as AWS answers.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::shapes::{Blob, SecretBlob, dry_run};
use super::signing::{SigningMembers, check_members, signing_key};
use super::validate::Violations;
use crate::error::KmsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyRequest {
    pub key_id: Option<String>,
    pub message: Option<SecretBlob>,
    pub message_type: Option<String>,
    pub signature: Option<Blob>,
    pub signing_algorithm: Option<String>,
    pub grant_tokens: Option<Vec<String>>,
    pub dry_run: Option<bool>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyResponse {
    /// The key ARN.
    pub key_id: String,
    pub signature_valid: bool,
    pub signing_algorithm: &'static str,
}

pub async fn handle(ctx: &mut Ctx<'_>, req: VerifyRequest) -> Result<VerifyResponse, KmsError> {
    let members = SigningMembers {
        key_id: &req.key_id,
        message: &req.message,
        message_type: &req.message_type,
        algorithm: &req.signing_algorithm,
        grant_tokens: &req.grant_tokens,
    };
    let mut v = Violations::new();
    check_members(&mut v, &members);
    if v.required("signature", &req.signature)
        && let Some(s) = &req.signature
    {
        v.blob_len("signature", s.0.len(), 1, 6144);
    }
    v.finish()?;
    let (key, algorithm, message_type) = signing_key(ctx, "Verify", &members).await?;
    dry_run(req.dry_run)?;
    let message = req.message.map(|m| m.0).unwrap_or_default();
    let signature = req.signature.map(|s| s.0).unwrap_or_default();
    let (version, valid) = ctx
        .store
        .verify(&key, algorithm, message_type, message, signature)
        .await?;
    ctx.audit_version(version);
    if !valid {
        return Err(KmsError::KmsInvalidSignature);
    }
    Ok(VerifyResponse {
        key_id: ctx.store.realm().key_arn(key.id()),
        signature_valid: true,
        signing_algorithm: algorithm.as_str(),
    })
}
