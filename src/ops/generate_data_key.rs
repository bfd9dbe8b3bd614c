//! GenerateDataKey: a data key made by the token's RNG, returned in
//! plaintext and sealed under the key's primary version.

use serde::Serialize;

use super::Ctx;
use super::data_key::{GenerateDataKeyRequest, generate};
use super::shapes::{Blob, SecretBlob};
use crate::error::KmsError;
use crate::keystore::key_material_id;

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyResponse {
    pub ciphertext_blob: Blob,
    pub plaintext: SecretBlob,
    pub key_id: String,
    pub key_material_id: String,
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: GenerateDataKeyRequest,
) -> Result<GenerateDataKeyResponse, KmsError> {
    let (sealed, key) = generate(ctx, req, true).await?;
    let plaintext = sealed
        .plaintext
        .ok_or_else(|| KmsError::Internal("the token returned no plaintext data key".into()))?;
    Ok(GenerateDataKeyResponse {
        ciphertext_blob: Blob(sealed.blob),
        plaintext: SecretBlob(plaintext),
        key_id: ctx.store.realm().key_arn(key.id()),
        key_material_id: key_material_id(key.id(), sealed.version),
    })
}
