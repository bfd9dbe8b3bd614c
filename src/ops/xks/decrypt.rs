//! Decrypt: with the key version the `ciphertextMetadata` names, so that
//! what was encrypted before a rotation still decrypts.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::error::XksError;
use super::shapes::encode;
use crate::keystore::{Key, KeyStore};

/// A validated Decrypt request.
pub struct Decrypt {
    pub ciphertext: Vec<u8>,
    pub metadata: Option<Vec<u8>>,
    pub aad: Vec<u8>,
    pub iv: Vec<u8>,
    pub tag: Vec<u8>,
}

/// Decrypts; returns the answer's body (it holds the plaintext, so it is
/// zeroizing) and the version that decrypted.
pub async fn decrypt(
    keys: &KeyStore,
    key: &Arc<Key>,
    req: Decrypt,
) -> Result<(Zeroizing<Vec<u8>>, u32), XksError> {
    let (version, plaintext) = keys
        .xks_decrypt(
            key,
            req.metadata.as_deref(),
            &req.aad,
            &req.iv,
            &req.ciphertext,
            &req.tag,
        )
        .await?;
    let encoded = Zeroizing::new(encode(&plaintext));
    let mut body = Zeroizing::new(Vec::with_capacity(encoded.len() + 16));
    body.extend_from_slice(b"{\"plaintext\":\"");
    body.extend_from_slice(encoded.as_bytes());
    body.extend_from_slice(b"\"}");
    Ok((body, version))
}
