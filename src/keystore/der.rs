//! From the token's raw key material to the DER that AWS's clients expect,
//! and back: SubjectPublicKeyInfo (RFC 5280) from CKA_MODULUS and
//! CKA_PUBLIC_EXPONENT or CKA_EC_PARAMS and CKA_EC_POINT, and ECDSA
//! signatures as ECDSA-Sig-Value (RFC 3279) from and to r || s.

use der::asn1::{Any, BitString, ObjectIdentifier, OctetString, UintRef};
use der::{Decode, Encode, Sequence};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use crate::hsm::keypair::PublicKey;

pub(super) const RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
pub(super) const EC_PUBLIC_KEY: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// RSAPublicKey (RFC 8017, A.1.1).
#[derive(Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

/// ECDSA-Sig-Value (RFC 3279, 2.2.3).
#[derive(Sequence)]
struct EcdsaSignature<'a> {
    r: UintRef<'a>,
    s: UintRef<'a>,
}

/// The public key as DER SubjectPublicKeyInfo.
pub fn public_key_der(key: &PublicKey) -> der::Result<Vec<u8>> {
    let info = match key {
        PublicKey::Rsa { modulus, exponent } => {
            let inner = RsaPublicKey {
                modulus: UintRef::new(modulus)?,
                public_exponent: UintRef::new(exponent)?,
            }
            .to_der()?;
            SubjectPublicKeyInfoOwned {
                algorithm: AlgorithmIdentifierOwned {
                    oid: RSA_ENCRYPTION,
                    parameters: Some(Any::null()),
                },
                subject_public_key: BitString::from_bytes(&inner)?,
            }
        }
        PublicKey::Ec { params, point } => SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: EC_PUBLIC_KEY,
                parameters: Some(Any::from_der(params)?),
            },
            subject_public_key: BitString::from_bytes(bare_point(point))?,
        },
    };
    info.to_der()
}

/// CKA_EC_POINT is a DER OCTET STRING holding the point (PKCS#11 2.40);
/// some tokens give the bare point. The point itself is what SPKI wants.
pub(super) fn bare_point(point: &[u8]) -> &[u8] {
    match OctetString::from_der(point) {
        Ok(inner) => {
            let n = inner.as_bytes().len();
            &point[point.len() - n..]
        }
        _ => point,
    }
}

/// r || s (two halves of equal length) as ECDSA-Sig-Value.
pub fn ecdsa_to_der(raw: &[u8]) -> der::Result<Vec<u8>> {
    let (r, s) = raw.split_at(raw.len() / 2);
    EcdsaSignature {
        r: UintRef::new(r)?,
        s: UintRef::new(s)?,
    }
    .to_der()
}

/// ECDSA-Sig-Value as r || s, each `len` bytes; `None` for anything that is
/// not such a signature (then it is simply not valid).
pub fn ecdsa_from_der(signature: &[u8], len: usize) -> Option<Vec<u8>> {
    let sig = EcdsaSignature::from_der(signature).ok()?;
    let mut out = vec![0u8; 2 * len];
    for (i, n) in [sig.r, sig.s].into_iter().enumerate() {
        let bytes = n.as_bytes();
        if bytes.len() > len || bytes.iter().all(|b| *b == 0) {
            return None;
        }
        out[(i + 1) * len - bytes.len()..(i + 1) * len].copy_from_slice(bytes);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_signatures_round_trip_with_leading_zeros_and_high_bits() {
        let mut raw = vec![0u8; 64];
        raw[1] = 0x7f; // r starts with a zero byte
        raw[32] = 0x80; // s needs a sign byte in DER
        raw[63] = 1;
        let der = ecdsa_to_der(&raw).unwrap();
        assert_eq!(der[0], 0x30);
        assert_eq!(ecdsa_from_der(&der, 32), Some(raw.clone()));
        assert_eq!(ecdsa_from_der(&der, 16), None);
        assert_eq!(ecdsa_from_der(&raw, 32), None);
        let mut trailing = der.clone();
        trailing.push(0);
        assert_eq!(ecdsa_from_der(&trailing, 32), None);
    }

    #[test]
    fn ec_points_are_taken_out_of_their_octet_string() {
        let point: Vec<u8> = std::iter::once(4).chain(1..=64).collect();
        let wrapped = OctetString::new(point.clone()).unwrap().to_der().unwrap();
        assert_eq!(bare_point(&wrapped), point.as_slice());
        assert_eq!(bare_point(&point), point.as_slice());
        let spki = public_key_der(&PublicKey::Ec {
            params: vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            point: wrapped,
        })
        .unwrap();
        let parsed = SubjectPublicKeyInfoOwned::from_der(&spki).unwrap();
        assert_eq!(parsed.algorithm.oid, EC_PUBLIC_KEY);
        assert_eq!(parsed.subject_public_key.raw_bytes(), point.as_slice());
    }
}
