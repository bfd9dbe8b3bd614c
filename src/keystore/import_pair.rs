//! Imported asymmetric key material ([`super::import`] for the flow): a
//! PKCS#8 private key unwrapped on the token into a key version's private
//! half ([`crate::hsm::import_pair`]), and its public half made beside it
//! so that Sign, Verify, GetPublicKey, Encrypt, Decrypt and
//! DeriveSharedSecret find the pair as they find a generated one.
//!
//! An RSA key's public key is read off the private key, and the private
//! key then proves on the token that it is that public key's other half
//! (a probe signed and verified, or encrypted and decrypted): n and e
//! alone say nothing of the private exponent and CRT parts beside them.
//! An EC key's public
//! point is found from its x-coordinate (ECDH on the token with the curve's
//! generator as the peer): of the two points with that x, the one under
//! which the token's ECDSA signature of a fixed digest verifies. The check
//! value of asymmetric material is the SHA-256 of its public key (DER
//! SubjectPublicKeyInfo).

use p256::elliptic_curve::sec1::ToSec1Point;
use sha2::{Digest, Sha256};

use super::{KeySpec, KeyUsage};
use crate::hsm::import::{Refusal, Unwrapping};
use crate::hsm::import_pair::{self, EcProbe, PublicPart};
use crate::hsm::keypair::{
    self, KeyPairKind, PairPurpose, PublicKey, SignHash, SignInput, SignScheme,
};
use crate::hsm::oaep::{self, OaepHash};
use crate::hsm::objects::{self, MasterKeyVersion};
use crate::hsm::{HsmError, TokenSession};

/// What the temporary EC object signs to tell the two candidate points
/// apart.
const PROBE_MESSAGE: &[u8] = b"kmsgate imported EC key public point probe v1";

/// What an imported RSA private key signs or decrypts to prove that it is
/// the private half of its public key.
const RSA_PROBE: &[u8] = b"kmsgate imported RSA key private half probe v1";

/// What a key pair's private half does for a key of `usage`.
pub(super) fn pair_purpose(usage: KeyUsage) -> PairPurpose {
    match usage {
        KeyUsage::EncryptDecrypt => PairPurpose::Decrypt,
        KeyUsage::KeyAgreement => PairPurpose::Derive,
        _ => PairPurpose::Sign,
    }
}

/// The uncompressed point of the SEC1 encoding `sec1` (compressed or not)
/// on the curve of `spec`, when it is a valid public key there.
fn uncompressed(spec: KeySpec, sec1: &[u8]) -> Option<Vec<u8>> {
    let point = match spec {
        KeySpec::EccNistP256 => p256::PublicKey::from_sec1_bytes(sec1)
            .ok()?
            .to_sec1_point(false)
            .as_bytes()
            .to_vec(),
        KeySpec::EccNistP384 => p384::PublicKey::from_sec1_bytes(sec1)
            .ok()?
            .to_sec1_point(false)
            .as_bytes()
            .to_vec(),
        KeySpec::EccNistP521 => p521::PublicKey::from_sec1_bytes(sec1)
            .ok()?
            .to_sec1_point(false)
            .as_bytes()
            .to_vec(),
        KeySpec::EccSecgP256k1 => k256::PublicKey::from_sec1_bytes(sec1)
            .ok()?
            .to_sec1_point(false)
            .as_bytes()
            .to_vec(),
        _ => return None,
    };
    Some(point)
}

/// The generator of the curve of `spec`, uncompressed.
fn generator(spec: KeySpec) -> Option<Vec<u8>> {
    let point = match spec {
        KeySpec::EccNistP256 => p256::PublicKey::from_affine(p256::AffinePoint::GENERATOR)
            .ok()?
            .to_sec1_point(false)
            .as_bytes()
            .to_vec(),
        KeySpec::EccNistP384 => p384::PublicKey::from_affine(p384::AffinePoint::GENERATOR)
            .ok()?
            .to_sec1_point(false)
            .as_bytes()
            .to_vec(),
        KeySpec::EccNistP521 => p521::PublicKey::from_affine(p521::AffinePoint::GENERATOR)
            .ok()?
            .to_sec1_point(false)
            .as_bytes()
            .to_vec(),
        KeySpec::EccSecgP256k1 => k256::PublicKey::from_affine(k256::AffinePoint::GENERATOR)
            .ok()?
            .to_sec1_point(false)
            .as_bytes()
            .to_vec(),
        _ => return None,
    };
    Some(point)
}

/// The two points with x-coordinate `x` on the curve of `spec`.
fn candidates(spec: KeySpec, x: &[u8]) -> Vec<Vec<u8>> {
    [0x02u8, 0x03]
        .into_iter()
        .filter_map(|tag| {
            let mut compressed = vec![tag];
            compressed.extend_from_slice(x);
            uncompressed(spec, &compressed)
        })
        .collect()
}

/// CKA_EC_POINT of `point`: a DER OCTET STRING.
fn ec_point_attribute(point: &[u8]) -> Result<Vec<u8>, HsmError> {
    use der::Encode;
    der::asn1::OctetStringRef::new(point)
        .and_then(|o| o.to_der())
        .map_err(|_| HsmError::Unexpected("EC point does not encode"))
}

/// Unwraps the wrapped PKCS#8 `wrapped` into the private half of a key
/// version `label` / `id` of `(spec, usage)`, makes its public half, and
/// answers the private key and the check value (the SHA-256 of the public
/// key's SubjectPublicKeyInfo). Nothing is left on the token when the
/// material is refused or anything fails.
#[allow(clippy::too_many_arguments)]
pub(super) fn unwrap_pair(
    s: &TokenSession,
    wrapping_label: &str,
    how: Unwrapping,
    wrapped: &[u8],
    (spec, usage): (KeySpec, KeyUsage),
    label: &str,
    id: &[u8],
) -> Result<Result<(MasterKeyVersion, [u8; 32]), Refusal>, HsmError> {
    let Some(kind) = super::signing::pair_kind(spec) else {
        return Err(HsmError::Unexpected("not an asymmetric key spec"));
    };
    let purpose = pair_purpose(usage);
    let generator = generator(spec);
    let digest = Sha256::digest(PROBE_MESSAGE);
    let probe = generator.as_ref().map(|g| EcProbe {
        generator: g,
        field_len: (g.len() - 1) / 2,
        digest: &digest,
    });
    let (key, part) = match import_pair::unwrap_private_key(
        s,
        wrapping_label,
        how,
        wrapped,
        kind,
        purpose,
        label,
        id,
        probe,
    )? {
        Ok(made) => made,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let stored = public_half(s, spec, kind, part, &digest).and_then(|public| {
        import_pair::store_public_key(s, label, id, &public, purpose)?;
        let spki = super::der::public_key_der(&public)
            .map_err(|_| HsmError::Unexpected("imported public key does not encode"))?;
        Ok(<[u8; 32]>::from(Sha256::digest(&spki)))
    });
    let proven = stored.and_then(|check| {
        let matches = match kind {
            KeyPairKind::Rsa(_) => rsa_private_half_matches(s, key, label, purpose)?,
            // The EC point was found by a signature of this material.
            KeyPairKind::Ec(_) => true,
        };
        Ok(matches.then_some(check))
    });
    match proven {
        Ok(Some(check)) => Ok(Ok((key, check))),
        Ok(None) => {
            let _ = objects::destroy_master_key(s, key);
            Ok(Err(Refusal::WrongKey))
        }
        Err(e) => {
            // Takes a public key already made along.
            let _ = objects::destroy_master_key(s, key);
            Err(e)
        }
    }
}

/// Whether an imported RSA private key is the private half of the public
/// key stored beside it as `label`. The token tells the modulus and
/// exponent of what it unwrapped, but a PKCS#8 can carry the published n
/// and e with any private exponent and CRT parts; so the private key works
/// a probe on the token and the public key checks the result: a signature
/// that must verify, or an OAEP ciphertext that must decrypt to the probe.
fn rsa_private_half_matches(
    s: &TokenSession,
    key: MasterKeyVersion,
    label: &str,
    purpose: PairPurpose,
) -> Result<bool, HsmError> {
    match purpose {
        PairPurpose::Sign => {
            let (scheme, hash, input) =
                (SignScheme::RsaPkcs1, SignHash::Sha256, SignInput::Message);
            let signature = keypair::sign(s, key, scheme, hash, input, RSA_PROBE)?;
            keypair::verify(s, label, key, scheme, hash, input, RSA_PROBE, &signature)
        }
        PairPurpose::Decrypt => {
            let ciphertext = oaep::oaep_encrypt(s, label, OaepHash::Sha256, RSA_PROBE)?;
            let plaintext = oaep::oaep_decrypt(s, key, OaepHash::Sha256, &ciphertext)?;
            Ok(plaintext.is_some_and(|p| p.as_slice() == RSA_PROBE))
        }
        PairPurpose::Derive => Err(HsmError::Unexpected("an RSA key that derives")),
    }
}

/// The public key of an imported private key, from what the token told.
fn public_half(
    s: &TokenSession,
    spec: KeySpec,
    kind: KeyPairKind,
    part: PublicPart,
    digest: &[u8],
) -> Result<PublicKey, HsmError> {
    let (x, signature, params) = match (part, kind) {
        (PublicPart::Rsa(public), _) => return Ok(public),
        (PublicPart::Ec { x, signature }, KeyPairKind::Ec(params)) => (x, signature, params),
        _ => return Err(HsmError::Unexpected("EC public part of an RSA key")),
    };
    // Kryoptic answers the candidate that does not verify with
    // CKR_DEVICE_ERROR, not CKR_SIGNATURE_INVALID: an error is a fault only
    // when no candidate verifies (a fault never makes a wrong point verify).
    let mut fault = None;
    for point in candidates(spec, &x) {
        let public = PublicKey::Ec {
            params: params.to_vec(),
            point: ec_point_attribute(&point)?,
        };
        match import_pair::verifies(s, &public, digest, &signature) {
            Ok(true) => return Ok(public),
            Ok(false) => {}
            Err(e) => fault = fault.or(Some(e)),
        }
    }
    Err(fault.unwrap_or(HsmError::Unexpected(
        "no point of the imported EC key verifies its signature",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_candidates_are_a_point_and_its_negation() {
        for spec in [
            KeySpec::EccNistP256,
            KeySpec::EccNistP384,
            KeySpec::EccNistP521,
            KeySpec::EccSecgP256k1,
        ] {
            let g = generator(spec).unwrap();
            let field = (g.len() - 1) / 2;
            let c = candidates(spec, &g[1..=field]);
            assert_eq!(c.len(), 2, "{}", spec.as_str());
            assert!(c.contains(&g), "{}", spec.as_str());
            assert_eq!(c[0][..=field], c[1][..=field]);
            assert_ne!(c[0], c[1]);
        }
    }

    #[test]
    fn only_ec_specs_have_candidates() {
        let g = generator(KeySpec::EccNistP256).unwrap();
        assert!(candidates(KeySpec::Rsa2048, &g[1..33]).is_empty());
        assert!(generator(KeySpec::Rsa2048).is_none());
        // A P-256 x-coordinate is no P-384 one (wrong length).
        assert!(candidates(KeySpec::EccNistP384, &g[1..33]).is_empty());
    }
}
