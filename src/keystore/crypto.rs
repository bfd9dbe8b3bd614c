//! Cryptography with a key: the blob format around the token's AES-GCM.
//!
//! Encryption always uses the key's primary version and spends one unit of
//! its GCM usage budget; decryption uses the version the blob names, looked
//! up on the token if this gateway has not seen it yet (another gateway may
//! have rotated the key).

use std::sync::Arc;

use zeroize::Zeroizing;

use super::{Key, KeyStore, hsm_to_kms};
use crate::blob::{self, EncryptionContext, Header};
use crate::error::KmsError;
use crate::hsm::HsmError;
use crate::hsm::crypto;

/// A ciphertext produced by the token, with the version that made it.
pub struct Sealed {
    pub blob: Vec<u8>,
    /// The key as it was when it sealed (it may have rotated to do so).
    pub key: Arc<Key>,
    pub version: u32,
    /// Present unless the token wrapped a data key without exposing it.
    pub plaintext: Option<Zeroizing<Vec<u8>>>,
}

impl KeyStore {
    /// Maps a token failure during an operation with `key`. A stale object
    /// handle (the token lost or replaced the object) makes the key be read
    /// again from the token, so that the client's retry finds it right, or
    /// finds it gone.
    async fn key_failure(&self, key: &Key, e: HsmError) -> KmsError {
        if e.handle_is_stale() {
            tracing::warn!(key_id = %key.id(), error = %e, "stale key handle; re-reading the key");
            return match self.reload_key(key.id()).await {
                Ok(Some(_)) => KmsError::KeyUnavailable(
                    "The key was being reloaded from the key store. Retry the request.".into(),
                ),
                Ok(None) => self.realm.key_not_found(key.id()),
                Err(e) => e,
            };
        }
        hsm_to_kms(e)
    }

    /// Encrypts `plaintext` under the key's primary version.
    pub async fn encrypt(
        &self,
        key: &Arc<Key>,
        context: &EncryptionContext,
        plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<Sealed, KmsError> {
        let (key, version, handle) = self.take_encryption(key).await?;
        let header = Header {
            key_id: *key.id(),
            key_version: version,
        };
        let aad = blob::aad(&header, context);
        let iv_source = self.hsm.capabilities().iv_source;
        let (iv, ct) = match self
            .hsm
            .pool()
            .run(move |s| crypto::encrypt(s, handle, iv_source, &aad, &plaintext))
            .await
        {
            Ok(r) => r,
            Err(e) => return Err(self.key_failure(&key, e).await),
        };
        Ok(Sealed {
            blob: blob::assemble(&header, &iv, &ct),
            key,
            version,
            plaintext: None,
        })
    }

    /// Makes a data key of `len` bytes on the token, sealed under the key's
    /// primary version. Without `want_plaintext`, and where the token can,
    /// the data key is wrapped without its plaintext leaving the token.
    pub async fn generate_data_key(
        &self,
        key: &Arc<Key>,
        context: &EncryptionContext,
        len: usize,
        want_plaintext: bool,
    ) -> Result<Sealed, KmsError> {
        let (key, version, handle) = self.take_encryption(key).await?;
        let header = Header {
            key_id: *key.id(),
            key_version: version,
        };
        let aad = blob::aad(&header, context);
        let caps = self.hsm.capabilities();
        let iv_source = caps.iv_source;
        let wrap = caps.gcm_wrap && !want_plaintext;
        let dk = match self
            .hsm
            .pool()
            .run(move |s| {
                if wrap {
                    crypto::generate_wrapped_data_key(s, handle, iv_source, &aad, len)
                } else {
                    crypto::generate_data_key(s, handle, iv_source, &aad, len)
                }
            })
            .await
        {
            Ok(dk) => dk,
            Err(e) => return Err(self.key_failure(&key, e).await),
        };
        Ok(Sealed {
            blob: blob::assemble(&header, &dk.iv, &dk.ciphertext),
            key,
            version,
            plaintext: if want_plaintext { dk.plaintext } else { None },
        })
    }

    /// Decrypts a parsed blob with the version it names.
    pub async fn decrypt(
        &self,
        key: &Key,
        parsed: &blob::ParsedBlob<'_>,
        context: &EncryptionContext,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let wanted = parsed.header.key_version;
        let handle = match key.version(wanted) {
            Some(h) => h,
            // A version this gateway has not seen: another gateway may have
            // rotated the key. A blob naming a version that does not exist
            // at all is just an invalid ciphertext.
            None => self
                .reload_key(key.id())
                .await?
                .and_then(|k| k.version(wanted))
                .ok_or(KmsError::InvalidCiphertext)?,
        };
        let aad = blob::aad(&parsed.header, context);
        let iv = parsed.iv;
        let ct = parsed.ciphertext_and_tag.to_vec();
        match self
            .hsm
            .pool()
            .run(move |s| crypto::decrypt(s, handle, &iv, &aad, &ct))
            .await
        {
            Ok(p) => Ok(p),
            Err(e) => Err(self.key_failure(key, e).await),
        }
    }

    /// Bytes from the token's RNG.
    pub async fn random(&self, len: usize) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        self.hsm
            .pool()
            .run(move |s| crypto::random(s, len))
            .await
            .map_err(hsm_to_kms)
    }
}
