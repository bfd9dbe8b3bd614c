//! The private key of a data key pair as AWS returns it: PKCS#8
//! PrivateKeyInfo (RFC 5208) in DER, holding an RSAPrivateKey (RFC 8017,
//! A.1.2) or an ECPrivateKey (RFC 5915) built from the components the token
//! gave.
//!
//! An ECPrivateKey carries its public key and leaves its curve to the
//! outer AlgorithmIdentifier, as OpenSSL writes PKCS#8. Every buffer that
//! holds private key bytes is zeroed when dropped.

use der::asn1::{Any, BitStringRef, OctetStringRef, UintRef};
use der::{Decode, Encode, Sequence};
use spki::AlgorithmIdentifierRef;
use zeroize::Zeroizing;

use super::der::{EC_PUBLIC_KEY, RSA_ENCRYPTION, bare_point};
use crate::hsm::data_key_pair::{DataKeyPairParts, PrivateParts};
use crate::hsm::keypair::PublicKey;

/// RSAPrivateKey, two-prime (version 0).
#[derive(Sequence)]
struct RsaPrivateKey<'a> {
    version: u8,
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
    private_exponent: UintRef<'a>,
    prime1: UintRef<'a>,
    prime2: UintRef<'a>,
    exponent1: UintRef<'a>,
    exponent2: UintRef<'a>,
    coefficient: UintRef<'a>,
}

/// ECPrivateKey (version 1), without the optional parameters.
#[derive(Sequence)]
struct EcPrivateKey<'a> {
    version: u8,
    private_key: &'a OctetStringRef,
    #[asn1(context_specific = "1", optional = "true")]
    public_key: Option<BitStringRef<'a>>,
}

/// PrivateKeyInfo, version 0 (no attributes, no public key).
#[derive(Sequence)]
struct PrivateKeyInfo<'a> {
    version: u8,
    algorithm: AlgorithmIdentifierRef<'a>,
    private_key: &'a OctetStringRef,
}

/// The data key pair's private key as PKCS#8 DER. `scalar_len` is the
/// length in bytes of the curve order (EC keys only): the private scalar
/// is written with exactly that many bytes, as RFC 5915 asks.
pub fn private_key_der(
    pair: &DataKeyPairParts,
    scalar_len: usize,
) -> der::Result<Zeroizing<Vec<u8>>> {
    let null = Any::null();
    match (&pair.public, &pair.private) {
        (
            PublicKey::Rsa { modulus, exponent },
            PrivateParts::Rsa {
                private_exponent,
                prime1,
                prime2,
                exponent1,
                exponent2,
                coefficient,
            },
        ) => {
            let inner = Zeroizing::new(
                RsaPrivateKey {
                    version: 0,
                    modulus: UintRef::new(modulus)?,
                    public_exponent: UintRef::new(exponent)?,
                    private_exponent: UintRef::new(private_exponent)?,
                    prime1: UintRef::new(prime1)?,
                    prime2: UintRef::new(prime2)?,
                    exponent1: UintRef::new(exponent1)?,
                    exponent2: UintRef::new(exponent2)?,
                    coefficient: UintRef::new(coefficient)?,
                }
                .to_der()?,
            );
            let algorithm = AlgorithmIdentifierRef {
                oid: RSA_ENCRYPTION,
                parameters: Some((&null).into()),
            };
            wrap(algorithm, &inner)
        }
        (PublicKey::Ec { params, point }, PrivateParts::Ec { value }) => {
            let value = value.as_slice();
            let significant = &value[value.iter().take_while(|b| **b == 0).count()..];
            if significant.len() > scalar_len {
                return Err(der::ErrorKind::Length {
                    tag: der::Tag::OctetString,
                }
                .into());
            }
            let mut scalar = Zeroizing::new(vec![0u8; scalar_len]);
            scalar[scalar_len - significant.len()..].copy_from_slice(significant);
            let inner = Zeroizing::new(
                EcPrivateKey {
                    version: 1,
                    private_key: OctetStringRef::new(&scalar)?,
                    public_key: Some(BitStringRef::from_bytes(bare_point(point))?),
                }
                .to_der()?,
            );
            let curve = Any::from_der(params)?;
            let algorithm = AlgorithmIdentifierRef {
                oid: EC_PUBLIC_KEY,
                parameters: Some((&curve).into()),
            };
            wrap(algorithm, &inner)
        }
        _ => Err(der::Tag::Sequence.value_error().into()),
    }
}

fn wrap(algorithm: AlgorithmIdentifierRef<'_>, inner: &[u8]) -> der::Result<Zeroizing<Vec<u8>>> {
    Ok(Zeroizing::new(
        PrivateKeyInfo {
            version: 0,
            algorithm,
            private_key: OctetStringRef::new(inner)?,
        }
        .to_der()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::sec1::ToSec1Point;
    use p256::pkcs8::DecodePrivateKey;

    const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

    fn ec_pair(value: &[u8], point: Vec<u8>) -> DataKeyPairParts {
        DataKeyPairParts {
            public: PublicKey::Ec {
                params: P256.to_vec(),
                point: OctetStringRef::new(&point).unwrap().to_der().unwrap(),
            },
            private: PrivateParts::Ec {
                value: Zeroizing::new(value.to_vec()),
            },
        }
    }

    #[test]
    fn an_ec_key_with_a_short_scalar_is_padded_and_parses_with_its_public_key() {
        let mut one = [0u8; 32];
        one[31] = 1;
        let secret = p256::SecretKey::from_slice(&one).unwrap();
        let point = secret.public_key().to_sec1_point(false).as_bytes().to_vec();
        // The token may drop leading zero bytes of CKA_VALUE.
        let der = private_key_der(&ec_pair(&[1], point.clone()), 32).unwrap();
        let parsed = p256::SecretKey::from_pkcs8_der(&der).unwrap();
        assert_eq!(parsed.to_bytes().as_slice(), one.as_slice());
        let info = PrivateKeyInfo::from_der(&der).unwrap();
        let inner = EcPrivateKey::from_der(info.private_key.as_bytes()).unwrap();
        assert_eq!(inner.private_key.as_bytes().len(), 32);
        assert_eq!(inner.public_key.unwrap().raw_bytes(), point.as_slice());
        assert!(private_key_der(&ec_pair(&[1; 33], point), 32).is_err());
    }

    #[test]
    fn an_rsa_key_holds_every_component_in_order() {
        let b = |n: u8| Zeroizing::new(vec![n, 0xff]);
        let pair = DataKeyPairParts {
            public: PublicKey::Rsa {
                modulus: vec![0x00, 0xc1, 0x01],
                exponent: vec![0x01, 0x00, 0x01],
            },
            private: PrivateParts::Rsa {
                private_exponent: b(2),
                prime1: b(3),
                prime2: b(4),
                exponent1: b(5),
                exponent2: b(6),
                coefficient: b(7),
            },
        };
        let der = private_key_der(&pair, 0).unwrap();
        let info = PrivateKeyInfo::from_der(&der).unwrap();
        assert_eq!((info.version, info.algorithm.oid), (0, RSA_ENCRYPTION));
        let key = RsaPrivateKey::from_der(info.private_key.as_bytes()).unwrap();
        assert_eq!(key.version, 0);
        assert_eq!(key.modulus.as_bytes(), &[0xc1, 0x01]);
        let rest = [
            key.private_exponent,
            key.prime1,
            key.prime2,
            key.exponent1,
            key.exponent2,
            key.coefficient,
        ];
        for (i, n) in rest.iter().enumerate() {
            assert_eq!(n.as_bytes(), &[i as u8 + 2, 0xff]);
        }
        let mismatched = DataKeyPairParts {
            public: pair.public.clone(),
            private: PrivateParts::Ec { value: b(1) },
        };
        assert!(private_key_der(&mismatched, 32).is_err());
    }
}
