//! Key agreement keys (ECC_NIST_P256/P384/P521 with KEY_AGREEMENT): ECDH
//! between the key's private half, on the token, and a peer's public key.
//!
//! The peer's key arrives as a DER SubjectPublicKeyInfo. It is checked here
//! (an EC key on the key's own curve, a point on that curve) before the
//! token sees its uncompressed point, so a bad key is the caller's error
//! and never looks like a token fault.

use std::sync::Arc;

use p256::pkcs8::DecodePublicKey;
use zeroize::Zeroizing;

use super::error::StoreError;
use super::signing::ecdsa_scalar_len;
use super::spec::{KeySpec, KeyUsage};
use super::{Key, KeyStore};
use crate::hsm::ecdh;

/// A key agreement algorithm of DeriveSharedSecret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAgreementAlgorithm {
    Ecdh,
}

impl KeyAgreementAlgorithm {
    pub const ALL: [KeyAgreementAlgorithm; 1] = [KeyAgreementAlgorithm::Ecdh];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyAgreementAlgorithm::Ecdh => "ECDH",
        }
    }

    pub fn parse(s: &str) -> Option<KeyAgreementAlgorithm> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl KeySpec {
    /// The key agreement algorithms of a key spec (ECDH for the NIST
    /// curves); empty for the others.
    pub fn key_agreement_algorithms(self) -> &'static [KeyAgreementAlgorithm] {
        if self.usages().contains(&KeyUsage::KeyAgreement) {
            &KeyAgreementAlgorithm::ALL
        } else {
            &[]
        }
    }
}

/// The uncompressed point of `spki`, a DER SubjectPublicKeyInfo, when it is
/// a valid public key on the curve of `spec`; `None` otherwise.
pub fn peer_point(spec: KeySpec, spki: &[u8]) -> Option<Vec<u8>> {
    let point = match spec {
        KeySpec::EccNistP256 => p256::PublicKey::from_public_key_der(spki)
            .ok()?
            .to_sec1_bytes(),
        KeySpec::EccNistP384 => p384::PublicKey::from_public_key_der(spki)
            .ok()?
            .to_sec1_bytes(),
        KeySpec::EccNistP521 => p521::PublicKey::from_public_key_der(spki)
            .ok()?
            .to_sec1_bytes(),
        _ => return None,
    };
    Some(point.into_vec())
}

impl KeyStore {
    /// The ECDH shared secret of a key agreement key and a peer's point
    /// (from [`peer_point`]), derived on the token.
    pub async fn derive_shared_secret(
        &self,
        key: &Arc<Key>,
        peer: Vec<u8>,
    ) -> Result<(u32, Zeroizing<Vec<u8>>), StoreError> {
        let spec = key.record.key_spec;
        // The shared secret is an x-coordinate: as long as the curve's
        // field, which for these curves is the scalar length.
        let len = ecdsa_scalar_len(spec).ok_or_else(|| {
            StoreError::Internal(format!("{} is no key agreement spec", spec.as_str()))
        })?;
        let (version, handle, _) = self.pair_version(key, KeyUsage::KeyAgreement).await?;
        let (_, secret) = self
            .with_version(key, version, handle, move |s, h| {
                ecdh::derive_shared_secret(s, h, &peer, len)
            })
            .await?;
        Ok((version, secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nist_curves_agree_keys() {
        for spec in [
            KeySpec::EccNistP256,
            KeySpec::EccNistP384,
            KeySpec::EccNistP521,
        ] {
            assert_eq!(
                spec.key_agreement_algorithms(),
                &[KeyAgreementAlgorithm::Ecdh]
            );
        }
        for spec in [
            KeySpec::EccSecgP256k1,
            KeySpec::Rsa2048,
            KeySpec::SymmetricDefault,
        ] {
            assert!(spec.key_agreement_algorithms().is_empty());
        }
        assert_eq!(
            KeyAgreementAlgorithm::parse("ECDH"),
            Some(KeyAgreementAlgorithm::Ecdh)
        );
        assert_eq!(KeyAgreementAlgorithm::parse("ecdh"), None);
    }

    #[test]
    fn peer_keys_must_be_on_the_keys_curve() {
        // The P-256 generator, as an SPKI.
        let g = hex(concat!(
            "3059301306072a8648ce3d020106082a8648ce3d03010703420004",
            "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
            "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"
        ));
        let point = peer_point(KeySpec::EccNistP256, &g).unwrap();
        assert_eq!(point.len(), 65);
        assert_eq!(point[0], 4);
        assert_eq!(&point[1..], &g[g.len() - 64..]);
        // Another curve, and a point off the curve, are refused.
        assert!(peer_point(KeySpec::EccNistP384, &g).is_none());
        let mut off = g.clone();
        *off.last_mut().unwrap() ^= 1;
        assert!(peer_point(KeySpec::EccNistP256, &off).is_none());
        assert!(peer_point(KeySpec::EccNistP256, b"not der").is_none());
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
