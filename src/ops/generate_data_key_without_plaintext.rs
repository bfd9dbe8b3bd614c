//! GenerateDataKeyWithoutPlaintext: as GenerateDataKey, but only the sealed
//! data key is returned. Where the token can wrap with AES-GCM, the data
//! key's plaintext never exists outside the token.

use serde::Serialize;

use super::Ctx;
use super::data_key::{GenerateDataKeyRequest, generate};
use super::shapes::Blob;
use crate::error::KmsError;
use crate::keystore::key_material_id;

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyWithoutPlaintextResponse {
    pub ciphertext_blob: Blob,
    pub key_id: String,
    pub key_material_id: String,
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: GenerateDataKeyRequest,
) -> Result<GenerateDataKeyWithoutPlaintextResponse, KmsError> {
    let (sealed, key) = generate(ctx, req, false).await?;
    Ok(GenerateDataKeyWithoutPlaintextResponse {
        ciphertext_blob: Blob(sealed.blob),
        key_id: ctx.store.realm().key_arn(key.id()),
        key_material_id: key_material_id(key.id(), sealed.version),
    })
}
