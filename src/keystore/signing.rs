//! Signing keys: which algorithms fit which key spec, and Sign, Verify and
//! the public key of a key's (only) version, on the token.
//!
//! The token speaks raw PKCS#11 (r || s, CKA_MODULUS, CKA_EC_POINT); AWS
//! speaks DER (ECDSA-Sig-Value, SubjectPublicKeyInfo). [`super::der`]
//! translates.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::der::{ecdsa_from_der, ecdsa_to_der, public_key_der};
use super::error::{StoreError, token};
use super::record::version_label;
use super::spec::{KeySpec, KeyUsage};
use super::{Key, KeyStore};
use crate::hsm::keypair::{self, KeyPairKind, SignHash, SignInput, SignScheme};
use crate::hsm::objects::MasterKeyVersion;

/// A signing algorithm of Sign and Verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    RsassaPssSha256,
    RsassaPssSha384,
    RsassaPssSha512,
    RsassaPkcs1V15Sha256,
    RsassaPkcs1V15Sha384,
    RsassaPkcs1V15Sha512,
    EcdsaSha256,
    EcdsaSha384,
    EcdsaSha512,
}

/// Whether Sign and Verify get the message or its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Raw,
    Digest,
}

/// The CKA_EC_PARAMS of each curve: its OID, DER-encoded.
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const P521: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
const SECP256K1: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];

const RSA_ALGORITHMS: &[SigningAlgorithm] = &[
    SigningAlgorithm::RsassaPkcs1V15Sha256,
    SigningAlgorithm::RsassaPkcs1V15Sha384,
    SigningAlgorithm::RsassaPkcs1V15Sha512,
    SigningAlgorithm::RsassaPssSha256,
    SigningAlgorithm::RsassaPssSha384,
    SigningAlgorithm::RsassaPssSha512,
];

/// The key pair the token makes for a signing key spec; `None` for the
/// specs that are secret keys.
pub(super) fn pair_kind(spec: KeySpec) -> Option<KeyPairKind> {
    Some(match spec {
        KeySpec::Rsa2048 => KeyPairKind::Rsa(2048),
        KeySpec::Rsa3072 => KeyPairKind::Rsa(3072),
        KeySpec::Rsa4096 => KeyPairKind::Rsa(4096),
        KeySpec::EccNistP256 => KeyPairKind::Ec(P256),
        KeySpec::EccNistP384 => KeyPairKind::Ec(P384),
        KeySpec::EccNistP521 => KeyPairKind::Ec(P521),
        KeySpec::EccSecgP256k1 => KeyPairKind::Ec(SECP256K1),
        KeySpec::SymmetricDefault
        | KeySpec::Hmac224
        | KeySpec::Hmac256
        | KeySpec::Hmac384
        | KeySpec::Hmac512 => return None,
    })
}

/// The length in bytes of r and of s in an ECDSA signature of this curve.
pub(super) fn ecdsa_scalar_len(spec: KeySpec) -> Option<usize> {
    match spec {
        KeySpec::EccNistP256 | KeySpec::EccSecgP256k1 => Some(32),
        KeySpec::EccNistP384 => Some(48),
        KeySpec::EccNistP521 => Some(66),
        _ => None,
    }
}

impl KeySpec {
    /// The signing algorithms a key of this spec supports, in the order
    /// AWS lists them; empty for keys that do not sign.
    pub fn signing_algorithms(self) -> &'static [SigningAlgorithm] {
        match self {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => RSA_ALGORITHMS,
            KeySpec::EccNistP256 | KeySpec::EccSecgP256k1 => &[SigningAlgorithm::EcdsaSha256],
            KeySpec::EccNistP384 => &[SigningAlgorithm::EcdsaSha384],
            KeySpec::EccNistP521 => &[SigningAlgorithm::EcdsaSha512],
            _ => &[],
        }
    }
}

impl SigningAlgorithm {
    /// Every algorithm kmsgate signs with.
    pub const ALL: [SigningAlgorithm; 9] = [
        SigningAlgorithm::RsassaPssSha256,
        SigningAlgorithm::RsassaPssSha384,
        SigningAlgorithm::RsassaPssSha512,
        SigningAlgorithm::RsassaPkcs1V15Sha256,
        SigningAlgorithm::RsassaPkcs1V15Sha384,
        SigningAlgorithm::RsassaPkcs1V15Sha512,
        SigningAlgorithm::EcdsaSha256,
        SigningAlgorithm::EcdsaSha384,
        SigningAlgorithm::EcdsaSha512,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::RsassaPssSha256 => "RSASSA_PSS_SHA_256",
            SigningAlgorithm::RsassaPssSha384 => "RSASSA_PSS_SHA_384",
            SigningAlgorithm::RsassaPssSha512 => "RSASSA_PSS_SHA_512",
            SigningAlgorithm::RsassaPkcs1V15Sha256 => "RSASSA_PKCS1_V1_5_SHA_256",
            SigningAlgorithm::RsassaPkcs1V15Sha384 => "RSASSA_PKCS1_V1_5_SHA_384",
            SigningAlgorithm::RsassaPkcs1V15Sha512 => "RSASSA_PKCS1_V1_5_SHA_512",
            SigningAlgorithm::EcdsaSha256 => "ECDSA_SHA_256",
            SigningAlgorithm::EcdsaSha384 => "ECDSA_SHA_384",
            SigningAlgorithm::EcdsaSha512 => "ECDSA_SHA_512",
        }
    }

    pub fn parse(s: &str) -> Option<SigningAlgorithm> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    fn hash(self) -> SignHash {
        use SigningAlgorithm as A;
        match self {
            A::RsassaPssSha256 | A::RsassaPkcs1V15Sha256 | A::EcdsaSha256 => SignHash::Sha256,
            A::RsassaPssSha384 | A::RsassaPkcs1V15Sha384 | A::EcdsaSha384 => SignHash::Sha384,
            A::RsassaPssSha512 | A::RsassaPkcs1V15Sha512 | A::EcdsaSha512 => SignHash::Sha512,
        }
    }

    fn scheme(self) -> SignScheme {
        use SigningAlgorithm as A;
        match self {
            A::RsassaPssSha256 | A::RsassaPssSha384 | A::RsassaPssSha512 => SignScheme::RsaPss,
            A::RsassaPkcs1V15Sha256 | A::RsassaPkcs1V15Sha384 | A::RsassaPkcs1V15Sha512 => {
                SignScheme::RsaPkcs1
            }
            A::EcdsaSha256 | A::EcdsaSha384 | A::EcdsaSha512 => SignScheme::Ecdsa,
        }
    }

    /// The length of a digest this algorithm signs (MessageType DIGEST).
    pub fn digest_len(self) -> usize {
        self.hash().output_len()
    }
}

impl MessageType {
    fn input(self) -> SignInput {
        match self {
            MessageType::Raw => SignInput::Message,
            MessageType::Digest => SignInput::Digest,
        }
    }
}

impl KeyStore {
    /// The private key (the only version) of a key pair of `usage`, and
    /// the label of both halves. Callers check the key's usage first; this
    /// refuses any other key.
    pub(super) async fn pair_version(
        &self,
        key: &Arc<Key>,
        usage: KeyUsage,
    ) -> Result<(u32, MasterKeyVersion, String), StoreError> {
        if !key.record.key_spec.is_asymmetric() || key.record.key_usage != usage {
            return Err(StoreError::Internal(format!(
                "key {} is not a {} key pair",
                key.id(),
                usage.as_str()
            )));
        }
        let version = key.record.primary_version;
        let (key, handle) = self.version_handle(key, version).await?;
        let nonce = key
            .record
            .version(version)
            .map(|v| v.nonce.clone())
            .unwrap_or_default();
        Ok((version, handle, version_label(key.id(), version, &nonce)))
    }

    /// Signs a message or digest (the caller checked its length) on the
    /// token; ECDSA signatures come back DER-encoded, as AWS gives them.
    pub async fn sign(
        &self,
        key: &Arc<Key>,
        algorithm: SigningAlgorithm,
        message_type: MessageType,
        message: Zeroizing<Vec<u8>>,
    ) -> Result<(u32, Vec<u8>), StoreError> {
        let (version, handle, _) = self.pair_version(key, KeyUsage::SignVerify).await?;
        let message = Arc::new(message);
        let (scheme, hash, input) = (algorithm.scheme(), algorithm.hash(), message_type.input());
        let (_, signature) = self
            .with_version(key, version, handle, move |s, h| {
                keypair::sign(s, h, scheme, hash, input, &message)
            })
            .await?;
        let signature = match ecdsa_scalar_len(key.record.key_spec) {
            Some(_) => ecdsa_to_der(&signature)
                .map_err(|e| StoreError::Internal(format!("ECDSA signature: {e}")))?,
            None => signature,
        };
        Ok((version, signature))
    }

    /// Whether `signature` is a signature of the message or digest under
    /// the key's public key; the token verifies.
    pub async fn verify(
        &self,
        key: &Arc<Key>,
        algorithm: SigningAlgorithm,
        message_type: MessageType,
        message: Zeroizing<Vec<u8>>,
        signature: Vec<u8>,
    ) -> Result<(u32, bool), StoreError> {
        let (version, private, label) = self.pair_version(key, KeyUsage::SignVerify).await?;
        let signature = match ecdsa_scalar_len(key.record.key_spec) {
            Some(len) => match ecdsa_from_der(&signature, len) {
                Some(raw) => raw,
                None => return Ok((version, false)),
            },
            None => signature,
        };
        let (scheme, hash, input) = (algorithm.scheme(), algorithm.hash(), message_type.input());
        let valid = self
            .hsm
            .pool()
            .run(move |s| {
                keypair::verify(
                    s, &label, private, scheme, hash, input, &message, &signature,
                )
            })
            .await
            .map_err(token)?;
        Ok((version, valid))
    }

    /// The key's public key as DER SubjectPublicKeyInfo.
    pub async fn public_key(&self, key: &Arc<Key>) -> Result<Vec<u8>, StoreError> {
        let (_, _, label) = self.pair_version(key, key.record.key_usage).await?;
        let public = self
            .hsm
            .pool()
            .run(move |s| keypair::read_public_key(s, &label))
            .await
            .map_err(token)?;
        public_key_der(&public).map_err(|e| StoreError::Internal(format!("public key: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_fit_their_specs() {
        for a in SigningAlgorithm::ALL {
            assert_eq!(SigningAlgorithm::parse(a.as_str()), Some(a));
        }
        assert_eq!(KeySpec::Rsa3072.signing_algorithms().len(), 6);
        assert_eq!(
            KeySpec::EccNistP521.signing_algorithms(),
            &[SigningAlgorithm::EcdsaSha512]
        );
        assert!(KeySpec::Hmac256.signing_algorithms().is_empty());
        assert_eq!(SigningAlgorithm::RsassaPssSha384.digest_len(), 48);
        for spec in KeySpec::SUPPORTED {
            assert_eq!(pair_kind(spec).is_some(), spec.is_asymmetric());
            assert_eq!(spec.signing_algorithms().is_empty(), !spec.is_asymmetric());
        }
    }
}
