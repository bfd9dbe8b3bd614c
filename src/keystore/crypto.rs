//! Cryptography with a key: the blob format around the token's AES-GCM,
//! and the token's HMAC for HMAC keys.
//!
//! Encryption always uses the key's primary version and spends one unit of
//! its GCM usage budget; decryption uses the version the blob names, looked
//! up on the token if this gateway has not seen it yet (another gateway may
//! have rotated the key).

use std::sync::Arc;

use zeroize::Zeroizing;

use super::error::{StoreError, token};
use super::spec::{KeyUsage, MacAlgorithm};
use super::{Key, KeyStore};
use crate::blob::{self, EncryptionContext, Header};
use crate::hsm::crypto::{self, MacHash};
use crate::hsm::objects::MasterKeyVersion;
use crate::hsm::{HsmError, TokenSession};

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
    /// Runs `op` on the token with version `version` of `key`.
    ///
    /// A stale handle (the token re-indexed the object, or the library was
    /// re-initialised and handles were renumbered) makes the key be read
    /// again from the token and `op` run once more with the fresh handle, so
    /// a recovered token serves the request instead of failing it. The key
    /// is reported gone only if a healthy listing of the token says so; a
    /// lookup that fails during a fault is a retryable error.
    pub(super) async fn with_version<T, F>(
        &self,
        key: &Arc<Key>,
        version: u32,
        handle: MasterKeyVersion,
        op: F,
    ) -> Result<(Arc<Key>, T), StoreError>
    where
        T: Send + 'static,
        F: Fn(&TokenSession, MasterKeyVersion) -> Result<T, HsmError> + Clone + Send + 'static,
    {
        let first = op.clone();
        match self.hsm.pool().run(move |s| first(s, handle)).await {
            Ok(t) => return Ok((key.clone(), t)),
            Err(e) if e.handle_is_stale() => {
                tracing::warn!(key_id = %key.id(), version, error = %e, "stale key handle; re-reading the key");
            }
            Err(e) => return Err(token(e)),
        }
        let fresh = self
            .reload_key(key.id())
            .await?
            .ok_or_else(|| self.key_not_found(key.id()))?;
        let Some(handle) = fresh.version(version) else {
            tracing::error!(key_id = %key.id(), version, "key version missing on the token");
            return Err(token(HsmError::StaleGeneration));
        };
        let t = self
            .hsm
            .pool()
            .run(move |s| op(s, handle))
            .await
            .map_err(token)?;
        Ok((fresh, t))
    }

    /// The key (as fresh as needed) and the handle of its version
    /// `wanted`, for a decryption. A version this gateway has not seen:
    /// another gateway may have rotated the key, so it is read again. One
    /// that does not exist at all is [`StoreError::NoSuchVersion`] (an
    /// invalid ciphertext); one the record lists but whose object a listing
    /// missed (a token fault) is a retryable error, not a bad ciphertext.
    pub(super) async fn decryption_version(
        &self,
        key: &Arc<Key>,
        wanted: u32,
    ) -> Result<(Arc<Key>, MasterKeyVersion), StoreError> {
        if let Some(h) = key.version(wanted) {
            return Ok((key.clone(), h));
        }
        let fresh = self
            .reload_key(key.id())
            .await?
            .ok_or_else(|| self.key_not_found(key.id()))?;
        if fresh.record.version(wanted).is_none() {
            return Err(StoreError::NoSuchVersion);
        }
        self.version_handle(&fresh, wanted).await
    }

    /// Encrypts `plaintext` under the key's primary version.
    pub async fn encrypt(
        &self,
        key: &Arc<Key>,
        context: &EncryptionContext,
        plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<Sealed, StoreError> {
        let (key, version, handle) = self.take_encryption(key).await?;
        let header = Header {
            key_id: *key.id(),
            key_version: version,
        };
        let aad = Arc::new(blob::aad(&header, context));
        let iv_source = self.hsm.capabilities().iv_source;
        let plaintext = Arc::new(plaintext);
        let (key, (iv, ct)) = self
            .with_version(&key, version, handle, move |s, h| {
                crypto::encrypt(s, h, iv_source, &aad, &plaintext)
            })
            .await?;
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
    ) -> Result<Sealed, StoreError> {
        let (key, version, handle) = self.take_encryption(key).await?;
        let header = Header {
            key_id: *key.id(),
            key_version: version,
        };
        let aad = Arc::new(blob::aad(&header, context));
        let caps = self.hsm.capabilities();
        let iv_source = caps.iv_source;
        let wrap = caps.gcm_wrap && !want_plaintext;
        let (key, dk) = self
            .with_version(&key, version, handle, move |s, h| {
                if wrap {
                    crypto::generate_wrapped_data_key(s, h, iv_source, &aad, len)
                } else {
                    crypto::generate_data_key(s, h, iv_source, &aad, len)
                }
            })
            .await?;
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
        key: &Arc<Key>,
        parsed: &blob::ParsedBlob<'_>,
        context: &EncryptionContext,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        if key.record.key_usage != KeyUsage::EncryptDecrypt
            || key.record.key_spec != super::KeySpec::SymmetricDefault
        {
            // Only a forged blob names a key that never seals blobs.
            return Err(StoreError::NoSuchVersion);
        }
        let wanted = parsed.header.key_version;
        let (key, handle) = self.decryption_version(key, wanted).await?;
        let aad = Arc::new(blob::aad(&parsed.header, context));
        let iv = parsed.iv;
        let ct = Arc::new(parsed.ciphertext_and_tag.to_vec());
        let iv_source = self.hsm.capabilities().iv_source;
        let (_, plaintext) = self
            .with_version(&key, wanted, handle, move |s, h| {
                crypto::decrypt(s, h, iv_source, &iv, &aad, &ct)
            })
            .await?;
        Ok(plaintext)
    }

    /// The HMAC of `message` under the key's primary version, on the token.
    pub async fn generate_mac(
        &self,
        key: &Arc<Key>,
        algorithm: MacAlgorithm,
        message: Zeroizing<Vec<u8>>,
    ) -> Result<(u32, Vec<u8>), StoreError> {
        let (key, version, handle) = self.mac_key(key).await?;
        let hash = mac_hash(algorithm);
        let message = Arc::new(message);
        let (_, mac) = self
            .with_version(&key, version, handle, move |s, h| {
                crypto::mac(s, h, hash, &message)
            })
            .await?;
        Ok((version, mac))
    }

    /// Whether `mac` is the HMAC of `message` under the key's primary
    /// version. The token compares (C_Verify), so the expected MAC never
    /// reaches the gateway.
    pub async fn verify_mac(
        &self,
        key: &Arc<Key>,
        algorithm: MacAlgorithm,
        message: Zeroizing<Vec<u8>>,
        mac: Vec<u8>,
    ) -> Result<(u32, bool), StoreError> {
        let (key, version, handle) = self.mac_key(key).await?;
        let hash = mac_hash(algorithm);
        let message = Arc::new(message);
        let mac = Arc::new(mac);
        let (_, valid) = self
            .with_version(&key, version, handle, move |s, h| {
                crypto::verify_mac(s, h, hash, &message, &mac)
            })
            .await?;
        Ok((version, valid))
    }

    /// The primary version of an HMAC key. Callers check the key's usage
    /// first; this refuses any other key, so an encryption key can never
    /// be used for MACs (nor, in [`take_encryption`](Self::take_encryption),
    /// the other way round).
    async fn mac_key(
        &self,
        key: &Arc<Key>,
    ) -> Result<(Arc<Key>, u32, MasterKeyVersion), StoreError> {
        if key.record.key_usage != KeyUsage::GenerateVerifyMac {
            return Err(StoreError::Internal(format!(
                "key {} is not an HMAC key",
                key.id()
            )));
        }
        let version = key.record.primary_version;
        let (key, handle) = self.version_handle(key, version).await?;
        Ok((key, version, handle))
    }

    /// Bytes from the token's RNG.
    pub async fn random(&self, len: usize) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        self.hsm
            .pool()
            .run(move |s| crypto::random(s, len))
            .await
            .map_err(token)
    }
}

fn mac_hash(algorithm: MacAlgorithm) -> MacHash {
    match algorithm {
        MacAlgorithm::HmacSha224 => MacHash::Sha224,
        MacAlgorithm::HmacSha256 => MacHash::Sha256,
        MacAlgorithm::HmacSha384 => MacHash::Sha384,
        MacAlgorithm::HmacSha512 => MacHash::Sha512,
    }
}
