//! GenerateDataKeyPairWithoutPlaintext: as GenerateDataKeyPair, but the
//! private key is returned only sealed. (It is still read out of the token
//! to be encoded and sealed: a PKCS#8 private key cannot be made by
//! wrapping on the token in the blob format.)

use serde::Serialize;

use super::Ctx;
use super::data_key_pair::{GenerateDataKeyPairRequest, generate};
use super::shapes::Blob;
use crate::error::KmsError;

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyPairWithoutPlaintextResponse {
    pub private_key_ciphertext_blob: Blob,
    pub public_key: Blob,
    pub key_id: String,
    pub key_pair_spec: &'static str,
    pub key_material_id: String,
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: GenerateDataKeyPairRequest,
) -> Result<GenerateDataKeyPairWithoutPlaintextResponse, KmsError> {
    let made = generate(ctx, req, false).await?;
    Ok(GenerateDataKeyPairWithoutPlaintextResponse {
        private_key_ciphertext_blob: Blob(made.pair.sealed.blob),
        public_key: Blob(made.pair.public_key),
        key_id: made.key_arn,
        key_pair_spec: made.key_pair_spec,
        key_material_id: made.key_material_id,
    })
}
