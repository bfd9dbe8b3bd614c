//! Encrypt: AES-256-GCM under the key's primary version, on the token,
//! with the spec's AAD and kmsgate's `ciphertextMetadata` (the version);
//! with `ciphertextDataIntegrityValueAlgorithm`, the integrity value of
//! Appendix C, computed before a verification decrypt on the token.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::error::{XksError, XksErrorName};
use super::shapes::{EncryptResponse, encode};
use crate::keystore::{Key, KeyStore};

/// A validated Encrypt request.
pub struct Encrypt {
    pub plaintext: Zeroizing<Vec<u8>>,
    pub aad: Vec<u8>,
    /// `ciphertextDataIntegrityValueAlgorithm` was SHA_256.
    pub integrity: bool,
}

/// Encrypts; returns the answer and the version that encrypted.
pub async fn encrypt(
    keys: &KeyStore,
    key: &Arc<Key>,
    can_decrypt: bool,
    req: Encrypt,
) -> Result<(EncryptResponse, u32), XksError> {
    if req.integrity && !can_decrypt {
        // The verification decrypt Appendix C asks for would use the key
        // for what the store does not allow.
        return Err(XksError::new(
            XksErrorName::InvalidKeyUsage,
            "ciphertextDataIntegrityValueAlgorithm needs a verification decrypt, and this external key may not decrypt.",
        ));
    }
    let plain_copy = req.integrity.then(|| req.plaintext.clone());
    let sealed = keys.xks_encrypt(key, &req.aad, req.plaintext).await?;
    let integrity = match plain_copy {
        None => None,
        Some(plaintext) => {
            // First the value over what will be answered, then the check
            // that it decrypts (Appendix C's order).
            let mut h = Sha256::new();
            h.update(&req.aad);
            h.update(sealed.metadata);
            h.update(sealed.iv);
            h.update(&sealed.ciphertext);
            h.update(sealed.tag);
            let value = encode(&h.finalize());
            let (_, back) = keys
                .xks_decrypt(
                    &sealed.key,
                    Some(&sealed.metadata),
                    &req.aad,
                    &sealed.iv,
                    &sealed.ciphertext,
                    &sealed.tag,
                )
                .await
                .map_err(|e| match XksError::from(e) {
                    e if e.name == XksErrorName::InvalidCiphertext => XksError::new(
                        XksErrorName::Internal,
                        "The verification decrypt of the new ciphertext failed. Retry the request.",
                    ),
                    e => e,
                })?;
            if *back != *plaintext {
                return Err(XksError::new(
                    XksErrorName::Internal,
                    "The verification decrypt of the new ciphertext failed. Retry the request.",
                ));
            }
            Some(value)
        }
    };
    Ok((
        EncryptResponse {
            ciphertext: encode(&sealed.ciphertext),
            ciphertext_metadata: encode(&sealed.metadata),
            initialization_vector: encode(&sealed.iv),
            authentication_tag: encode(&sealed.tag),
            ciphertext_data_integrity_value: integrity,
        },
        sealed.version,
    ))
}
