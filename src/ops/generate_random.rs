//! GenerateRandom: bytes from the token's RNG.

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::shapes::SecretBlob;
use super::validate::Violations;
use crate::error::KmsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateRandomRequest {
    pub number_of_bytes: Option<i64>,
    pub custom_key_store_id: Option<String>,
    pub recipient: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateRandomResponse {
    pub plaintext: SecretBlob,
}

pub async fn handle(
    ctx: &mut Ctx<'_>,
    req: GenerateRandomRequest,
) -> Result<GenerateRandomResponse, KmsError> {
    let mut v = Violations::new();
    if let Some(n) = req.number_of_bytes {
        v.int_range("numberOfBytes", n, 1, 1024);
    }
    if let Some(c) = &req.custom_key_store_id {
        v.str_len("customKeyStoreId", c, 1, 64);
    }
    v.finish()?;
    // AWS's own text: the model does not mark the member required.
    let Some(n) = req.number_of_bytes else {
        return Err(KmsError::Validation("NumberOfBytes is required.".into()));
    };
    if req.custom_key_store_id.is_some() || req.recipient.is_some() {
        return Err(KmsError::UnsupportedOperation(Some(
            "CustomKeyStoreId and Recipient are not supported by kmsgate.".into(),
        )));
    }
    let bytes = ctx.store.random(n as usize).await?;
    Ok(GenerateRandomResponse {
        plaintext: SecretBlob(bytes),
    })
}
