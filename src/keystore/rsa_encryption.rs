//! RSA encryption keys: RSAES-OAEP with SHA-1 or SHA-256, the public key
//! encrypting and the private key decrypting on the token. The ciphertext
//! is the raw RSA ciphertext (as long as the modulus), as AWS returns it,
//! not a kmsgate blob: anyone with the public key can make one.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::error::{StoreError, token};
use super::spec::{KeySpec, KeyUsage};
use super::{Key, KeyStore};
use crate::hsm::oaep::{self, OaepHash};

/// An asymmetric encryption algorithm of Encrypt and Decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionAlgorithm {
    RsaesOaepSha1,
    RsaesOaepSha256,
}

const RSA_ENCRYPTION: &[EncryptionAlgorithm] = &[
    EncryptionAlgorithm::RsaesOaepSha1,
    EncryptionAlgorithm::RsaesOaepSha256,
];

impl EncryptionAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            EncryptionAlgorithm::RsaesOaepSha1 => "RSAES_OAEP_SHA_1",
            EncryptionAlgorithm::RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
        }
    }

    pub fn parse(s: &str) -> Option<EncryptionAlgorithm> {
        RSA_ENCRYPTION.iter().copied().find(|a| a.as_str() == s)
    }

    fn hash(self) -> OaepHash {
        match self {
            EncryptionAlgorithm::RsaesOaepSha1 => OaepHash::Sha1,
            EncryptionAlgorithm::RsaesOaepSha256 => OaepHash::Sha256,
        }
    }

    fn hash_len(self) -> usize {
        match self {
            EncryptionAlgorithm::RsaesOaepSha1 => 20,
            EncryptionAlgorithm::RsaesOaepSha256 => 32,
        }
    }
}

impl KeySpec {
    /// The asymmetric encryption algorithms of an RSA key spec, in AWS's
    /// order; empty for other specs.
    pub fn rsa_encryption_algorithms(self) -> &'static [EncryptionAlgorithm] {
        if self.is_rsa() { RSA_ENCRYPTION } else { &[] }
    }

    /// The modulus length in bytes of an RSA key spec.
    fn modulus_len(self) -> Option<usize> {
        match self {
            KeySpec::Rsa2048 => Some(256),
            KeySpec::Rsa3072 => Some(384),
            KeySpec::Rsa4096 => Some(512),
            _ => None,
        }
    }

    /// The longest plaintext a key of this spec encrypts with `algorithm`
    /// (RFC 8017 7.1.1: k - 2 hLen - 2); `None` for non-RSA specs.
    pub fn max_oaep_plaintext(self, algorithm: EncryptionAlgorithm) -> Option<usize> {
        self.modulus_len().map(|k| k - 2 * algorithm.hash_len() - 2)
    }
}

impl KeyStore {
    /// Encrypts `plaintext` (the caller checked its length) under an RSA
    /// encryption key's public key, on the token.
    pub async fn rsa_encrypt(
        &self,
        key: &Arc<Key>,
        algorithm: EncryptionAlgorithm,
        plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<(u32, Vec<u8>), StoreError> {
        let (version, _, label) = self.pair_version(key, KeyUsage::EncryptDecrypt).await?;
        let hash = algorithm.hash();
        let ciphertext = self
            .hsm
            .pool()
            .run(move |s| oaep::oaep_encrypt(s, &label, hash, &plaintext))
            .await
            .map_err(token)?;
        Ok((version, ciphertext))
    }

    /// Decrypts an RSA ciphertext with an RSA encryption key's private key,
    /// on the token; `None` when it is no ciphertext of this key and
    /// algorithm.
    pub async fn rsa_decrypt(
        &self,
        key: &Arc<Key>,
        algorithm: EncryptionAlgorithm,
        ciphertext: Vec<u8>,
    ) -> Result<(u32, Option<Zeroizing<Vec<u8>>>), StoreError> {
        let (version, handle, _) = self.pair_version(key, KeyUsage::EncryptDecrypt).await?;
        // RFC 8017 7.1.2 step 1: a ciphertext is as long as the modulus.
        // Kryoptic reads a shorter block as the same number, so a block cut
        // short by its leading zero byte would open there.
        if Some(ciphertext.len()) != key.record.key_spec.modulus_len() {
            return Ok((version, None));
        }
        let hash = algorithm.hash();
        let (_, plaintext) = self
            .with_version(key, version, handle, move |s, h| {
                oaep::oaep_decrypt(s, h, hash, &ciphertext)
            })
            .await?;
        Ok((version, plaintext))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_limits_are_aws_limits() {
        use EncryptionAlgorithm::*;
        let limits = [
            (KeySpec::Rsa2048, RsaesOaepSha1, 214),
            (KeySpec::Rsa2048, RsaesOaepSha256, 190),
            (KeySpec::Rsa3072, RsaesOaepSha1, 342),
            (KeySpec::Rsa3072, RsaesOaepSha256, 318),
            (KeySpec::Rsa4096, RsaesOaepSha1, 470),
            (KeySpec::Rsa4096, RsaesOaepSha256, 446),
        ];
        for (spec, alg, max) in limits {
            assert_eq!(spec.max_oaep_plaintext(alg), Some(max));
            assert_eq!(EncryptionAlgorithm::parse(alg.as_str()), Some(alg));
        }
        assert_eq!(KeySpec::EccNistP256.max_oaep_plaintext(RsaesOaepSha1), None);
        assert!(
            KeySpec::SymmetricDefault
                .rsa_encryption_algorithms()
                .is_empty()
        );
        assert_eq!(KeySpec::Rsa3072.rsa_encryption_algorithms().len(), 2);
    }
}
