//! Cryptography for the XKS proxy API (AWS KMS external key stores): the
//! same AES-256-GCM key versions as Encrypt, with the spec's AAD and a
//! `ciphertextMetadata` that names the key version, so that ciphertexts
//! AWS KMS holds keep decrypting after the key rotates here.
//!
//! `ciphertextMetadata` (20 bytes, always): byte 0 the format (1), bytes
//! 1..17 the kmsgate key id (UUID bytes), bytes 17..20 the key version,
//! 24-bit big-endian. The AAD given to the token is the spec's:
//! `u16 BE len(AAD) || AAD || u8 len(metadata) || metadata`, so it is never
//! empty (SoftHSM2 aborts on empty AAD) and a changed metadata byte fails
//! the tag.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::error::{StoreError, token};
use super::spec::KeyUsage;
use super::{Key, KeySpec, KeyStore};
use crate::hsm::crypto::{self, IV_LEN, TAG_LEN};

/// The format byte of kmsgate's `ciphertextMetadata`.
pub const METADATA_FORMAT: u8 = 1;
/// The length of kmsgate's `ciphertextMetadata` (the spec's maximum).
pub const METADATA_LEN: usize = 20;
/// The largest key version the metadata can name.
const MAX_VERSION: u32 = 0x00ff_ffff;

/// What an XKS encryption made.
pub struct XksSealed {
    /// The key as it was when it sealed (it may have rotated to do so).
    pub key: Arc<Key>,
    pub version: u32,
    pub metadata: [u8; METADATA_LEN],
    pub iv: [u8; IV_LEN],
    pub ciphertext: Vec<u8>,
    pub tag: [u8; TAG_LEN],
}

/// The metadata naming `version` of key `key`.
pub fn metadata(key: &uuid::Uuid, version: u32) -> [u8; METADATA_LEN] {
    let mut m = [0u8; METADATA_LEN];
    m[0] = METADATA_FORMAT;
    m[1..17].copy_from_slice(key.as_bytes());
    m[17..20].copy_from_slice(&version.to_be_bytes()[1..]);
    m
}

/// The key id and version a metadata names; `None` unless it is kmsgate's
/// format 1.
pub fn parse_metadata(m: &[u8]) -> Option<(uuid::Uuid, u32)> {
    if m.len() != METADATA_LEN || m[0] != METADATA_FORMAT {
        return None;
    }
    let id = uuid::Uuid::from_slice(&m[1..17]).ok()?;
    let version = u32::from_be_bytes([0, m[17], m[18], m[19]]);
    Some((id, version))
}

/// The AAD the token authenticates: the spec's length-prefixed
/// concatenation of the request's AAD and the metadata. `None` if the AAD
/// is longer than its 2-byte length can say.
pub fn token_aad(aad: &[u8], metadata: &[u8]) -> Option<Vec<u8>> {
    let aad_len = u16::try_from(aad.len()).ok()?;
    let meta_len = u8::try_from(metadata.len()).ok()?;
    let mut out = Vec::with_capacity(3 + aad.len() + metadata.len());
    out.extend_from_slice(&aad_len.to_be_bytes());
    out.extend_from_slice(aad);
    out.push(meta_len);
    out.extend_from_slice(metadata);
    Some(out)
}

/// Why an XKS decryption or encryption input cannot be used.
fn invalid() -> StoreError {
    StoreError::NoSuchVersion
}

impl KeyStore {
    /// The key an XKS store exposes under `name` (a key id, key ARN or
    /// alias, as a KeyId parameter): only a SYMMETRIC_DEFAULT encryption
    /// key; any other is reported as not found (AWS KMS can use no other).
    pub async fn xks_key(&self, name: &str) -> Result<Arc<Key>, StoreError> {
        let key = self.resolve(name).await?;
        if key.record.key_spec != KeySpec::SymmetricDefault
            || key.record.key_usage != KeyUsage::EncryptDecrypt
        {
            return Err(StoreError::KeyNotFound {
                arn: self.realm.key_arn(key.id()),
            });
        }
        Ok(key)
    }

    /// Encrypts `plaintext` under the key's primary version, spending its
    /// GCM budget as Encrypt does (a version at the bound rotates the key;
    /// an imported key at its bound is refused).
    pub async fn xks_encrypt(
        &self,
        key: &Arc<Key>,
        aad: &[u8],
        plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<XksSealed, StoreError> {
        let (key, version, handle) = self.take_encryption(key).await?;
        if version > MAX_VERSION {
            return Err(StoreError::Internal(format!(
                "key {} version {version} does not fit XKS ciphertext metadata",
                key.id()
            )));
        }
        let meta = metadata(key.id(), version);
        let full = Arc::new(token_aad(aad, &meta).ok_or_else(invalid)?);
        let iv_source = self.hsm.capabilities().iv_source;
        let plaintext = Arc::new(plaintext);
        let (key, (iv, mut sealed)) = self
            .with_version(&key, version, handle, move |s, h| {
                crypto::encrypt(s, h, iv_source, &full, &plaintext)
            })
            .await?;
        if sealed.len() < TAG_LEN {
            return Err(StoreError::Internal(
                "the token's AES-GCM output has no tag".into(),
            ));
        }
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&sealed[sealed.len() - TAG_LEN..]);
        sealed.truncate(sealed.len() - TAG_LEN);
        Ok(XksSealed {
            key,
            version,
            metadata: meta,
            iv,
            ciphertext: sealed,
            tag,
        })
    }

    /// Decrypts with the key version `metadata` names (looked up on the
    /// token if this gateway has not seen it: another gateway may have
    /// rotated). Metadata that is not kmsgate's, names another key or a
    /// version the key never had, an IV that is not 12 bytes, or a tag
    /// that does not verify: [`StoreError::NoSuchVersion`] or a bad-tag
    /// token error, both InvalidCiphertextException. Returns the plaintext
    /// and the version.
    pub async fn xks_decrypt(
        &self,
        key: &Arc<Key>,
        metadata: Option<&[u8]>,
        aad: &[u8],
        iv: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
    ) -> Result<(u32, Zeroizing<Vec<u8>>), StoreError> {
        let (id, wanted) = metadata.and_then(parse_metadata).ok_or_else(invalid)?;
        if id != *key.id() || tag.len() != TAG_LEN {
            return Err(invalid());
        }
        let iv: [u8; IV_LEN] = iv.try_into().map_err(|_| invalid())?;
        // A version the key does not have is an invalid ciphertext.
        let (key, handle) = self.decryption_version(key, wanted).await?;
        let full = Arc::new(token_aad(aad, metadata.unwrap_or_default()).ok_or_else(invalid)?);
        let mut sealed = Vec::with_capacity(ciphertext.len() + TAG_LEN);
        sealed.extend_from_slice(ciphertext);
        sealed.extend_from_slice(tag);
        let sealed = Arc::new(sealed);
        let iv_source = self.hsm.capabilities().iv_source;
        let (_, plaintext) = self
            .with_version(&key, wanted, handle, move |s, h| {
                crypto::decrypt(s, h, iv_source, &iv, &full, &sealed)
            })
            .await?;
        Ok((wanted, plaintext))
    }

    /// The XKS health check's deep probe: an AES-GCM encryption and
    /// decryption on the token under a session key made for it (never a
    /// customer key, so no GCM budget is spent). `Ok(false)`: the token
    /// answered and its AES-GCM failed; `Err`: the token did not answer.
    pub async fn xks_probe(&self) -> Result<bool, StoreError> {
        let iv_source = self.hsm.capabilities().iv_source;
        self.hsm
            .pool()
            .run(move |s| Ok(crypto::gcm_self_test(s, iv_source)))
            .await
            .map_err(token)
    }

    /// The token's manufacturer and model (C_GetTokenInfo at start-up).
    pub fn token_vendor_model(&self) -> (&str, &str) {
        let caps = self.hsm.capabilities();
        (&caps.manufacturer, &caps.model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_names_the_key_and_a_24_bit_version() {
        let id = uuid::Uuid::new_v4();
        let m = metadata(&id, 0x01_02_03);
        assert_eq!(m[0], 1);
        assert_eq!(&m[17..], &[1, 2, 3]);
        assert_eq!(parse_metadata(&m), Some((id, 0x01_02_03)));
        let mut other = m;
        other[0] = 2;
        assert_eq!(parse_metadata(&other), None);
        assert_eq!(parse_metadata(&m[..19]), None);
    }

    #[test]
    fn the_token_aad_is_the_specs_construction() {
        assert_eq!(
            token_aad(b"ab", b"xyz").unwrap(),
            vec![0, 2, b'a', b'b', 3, b'x', b'y', b'z']
        );
        assert_eq!(token_aad(b"", b"").unwrap(), vec![0, 0, 0]);
        assert!(token_aad(&vec![0; 65536], b"").is_none());
    }
}
