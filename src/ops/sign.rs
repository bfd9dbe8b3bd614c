//! Sign: a signature of a message (1 to 4096 bytes, hashed with the
//! algorithm's hash) or of its digest, made on the token with the key's
//! private key. ECDSA signatures are DER, as AWS returns them.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::shapes::{Blob, SecretBlob, dry_run};
use super::signing::{SigningMembers, check_members, signing_key};
use super::validate::Violations;
use crate::error::KmsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SignRequest {
    pub key_id: Option<String>,
    pub message: Option<SecretBlob>,
    pub message_type: Option<String>,
    pub grant_tokens: Option<Vec<String>>,
    pub signing_algorithm: Option<String>,
    pub dry_run: Option<bool>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SignResponse {
    /// The key ARN.
    pub key_id: String,
    pub signature: Blob,
    pub signing_algorithm: &'static str,
}

pub async fn handle(ctx: &mut Ctx<'_>, req: SignRequest) -> Result<SignResponse, KmsError> {
    let members = SigningMembers {
        key_id: &req.key_id,
        message: &req.message,
        message_type: &req.message_type,
        algorithm: &req.signing_algorithm,
        grant_tokens: &req.grant_tokens,
    };
    let mut v = Violations::new();
    check_members(&mut v, &members);
    v.finish()?;
    let (key, algorithm, message_type) = signing_key(ctx, "Sign", &members).await?;
    dry_run(req.dry_run)?;
    let message = req.message.map(|m| m.0).unwrap_or_default();
    let (version, signature) = ctx
        .store
        .sign(&key, algorithm, message_type, message)
        .await?;
    ctx.audit_version(version);
    Ok(SignResponse {
        key_id: ctx.store.realm().key_arn(key.id()),
        signature: Blob(signature),
        signing_algorithm: algorithm.as_str(),
    })
}
