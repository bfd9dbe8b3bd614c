//! GenerateDataKeyPair: an RSA or EC key pair made on the token, returned
//! as DER SubjectPublicKeyInfo and PKCS#8, with the private key also sealed
//! under a symmetric key.

use serde::Serialize;

use super::Ctx;
use super::data_key_pair::{GenerateDataKeyPairRequest, generate};
use super::shapes::{Blob, SecretBlob};
use crate::error::KmsError;

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyPairResponse {
    pub private_key_ciphertext_blob: Blob,
    pub private_key_plaintext: SecretBlob,
    pub public_key: Blob,
    pub key_id: String,
    pub key_pair_spec: &'static str,
    pub key_material_id: String,
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: GenerateDataKeyPairRequest,
) -> Result<GenerateDataKeyPairResponse, KmsError> {
    let made = generate(ctx, req, true).await?;
    let pair = made.pair;
    let private_key = pair
        .private_key
        .ok_or_else(|| KmsError::Internal("the key store returned no private key".into()))?;
    Ok(GenerateDataKeyPairResponse {
        private_key_ciphertext_blob: Blob(pair.sealed.blob),
        private_key_plaintext: SecretBlob(private_key),
        public_key: Blob(pair.public_key),
        key_id: made.key_arn,
        key_pair_spec: made.key_pair_spec,
        key_material_id: made.key_material_id,
    })
}
