//! Data key pairs (GenerateDataKeyPair): an RSA or EC key pair made by the
//! token's C_GenerateKeyPair, read out, and destroyed.
//!
//! Unlike every other key in kmsgate, the private half of a data key pair
//! is handed to the caller: that is what a data key pair is. So it is made
//! as a *session* object (`CKA_TOKEN=false`: never stored on the token),
//! `CKA_SENSITIVE=false` and `CKA_EXTRACTABLE=true` so that its components
//! can be read, with no usage at all (it never signs or decrypts on the
//! token), and both objects are destroyed before the session goes back to
//! the pool, whatever happened in between. The key material comes from the
//! token's key generation only, never from a software RNG.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use zeroize::Zeroizing;

use super::keypair::{KeyPairKind, PublicKey};
use super::{HsmError, TokenSession};

/// The private half of a data key pair, as the token holds it.
pub enum PrivateParts {
    /// RSA: big-endian private exponent, primes, CRT exponents and
    /// coefficient (the modulus and public exponent are in the public key).
    Rsa {
        private_exponent: Zeroizing<Vec<u8>>,
        prime1: Zeroizing<Vec<u8>>,
        prime2: Zeroizing<Vec<u8>>,
        exponent1: Zeroizing<Vec<u8>>,
        exponent2: Zeroizing<Vec<u8>>,
        coefficient: Zeroizing<Vec<u8>>,
    },
    /// EC: the big-endian private scalar (CKA_VALUE), possibly without its
    /// leading zero bytes.
    Ec { value: Zeroizing<Vec<u8>> },
}

/// A data key pair read out of the token.
pub struct DataKeyPairParts {
    pub public: PublicKey,
    pub private: PrivateParts,
}

impl std::fmt::Debug for DataKeyPairParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeyPairParts")
            .field("public", &self.public)
            .field("private", &"<redacted>")
            .finish()
    }
}

/// Generates a data key pair of `kind` as session objects, reads both
/// halves and destroys the objects.
pub fn generate_data_key_pair(
    s: &TokenSession,
    kind: KeyPairKind,
) -> Result<DataKeyPairParts, HsmError> {
    let mut public = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Verify(false),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Derive(false),
    ];
    let mut private = vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Token(false),
        Attribute::Private(true),
        // The caller gets this key: it must be readable.
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        Attribute::Sign(false),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ];
    let mechanism = match kind {
        KeyPairKind::Rsa(bits) => {
            public.extend([
                Attribute::KeyType(KeyType::RSA),
                Attribute::ModulusBits(bits.into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            ]);
            private.push(Attribute::KeyType(KeyType::RSA));
            Mechanism::RsaPkcsKeyPairGen
        }
        KeyPairKind::Ec(params) => {
            public.extend([
                Attribute::KeyType(KeyType::EC),
                Attribute::EcParams(params.to_vec()),
            ]);
            private.push(Attribute::KeyType(KeyType::EC));
            Mechanism::EccKeyPairGen
        }
    };
    let (public, private) = s.session.generate_key_pair(&mechanism, &public, &private)?;
    let parts = read_parts(s, kind, public, private);
    // Destroy both whatever the reading gave; a failure to destroy the
    // private key is a failure of the request (the session is then
    // discarded by the pool if the token is at fault).
    let destroyed_private = s.session.destroy_object(private);
    let destroyed_public = s.session.destroy_object(public);
    let parts = parts?;
    destroyed_private?;
    destroyed_public?;
    Ok(parts)
}

fn read_parts(
    s: &TokenSession,
    kind: KeyPairKind,
    public: ObjectHandle,
    private: ObjectHandle,
) -> Result<DataKeyPairParts, HsmError> {
    match kind {
        KeyPairKind::Rsa(_) => {
            let mut attrs = s.session.get_attributes(
                private,
                &[
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                    AttributeType::PrivateExponent,
                    AttributeType::Prime1,
                    AttributeType::Prime2,
                    AttributeType::Exponent1,
                    AttributeType::Exponent2,
                    AttributeType::Coefficient,
                ],
            )?;
            let mut take = |t: AttributeType| take_value(&mut attrs, t);
            let modulus = take(AttributeType::Modulus)?;
            let exponent = take(AttributeType::PublicExponent)?;
            let private = PrivateParts::Rsa {
                private_exponent: take(AttributeType::PrivateExponent)?,
                prime1: take(AttributeType::Prime1)?,
                prime2: take(AttributeType::Prime2)?,
                exponent1: take(AttributeType::Exponent1)?,
                exponent2: take(AttributeType::Exponent2)?,
                coefficient: take(AttributeType::Coefficient)?,
            };
            Ok(DataKeyPairParts {
                public: PublicKey::Rsa {
                    modulus: modulus.to_vec(),
                    exponent: exponent.to_vec(),
                },
                private,
            })
        }
        KeyPairKind::Ec(params) => {
            let mut attrs = s.session.get_attributes(private, &[AttributeType::Value])?;
            let value = take_value(&mut attrs, AttributeType::Value)?;
            let mut attrs = s
                .session
                .get_attributes(public, &[AttributeType::EcPoint])?;
            let point = take_value(&mut attrs, AttributeType::EcPoint)?;
            Ok(DataKeyPairParts {
                public: PublicKey::Ec {
                    params: params.to_vec(),
                    point: point.to_vec(),
                },
                private: PrivateParts::Ec { value },
            })
        }
    }
}

/// Moves the value of attribute `t` out of `attrs` into a zeroizing
/// buffer (the same allocation: nothing is left behind to wipe).
fn take_value(attrs: &mut [Attribute], t: AttributeType) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    for a in attrs.iter_mut() {
        let v = match a {
            Attribute::Modulus(v) if t == AttributeType::Modulus => v,
            Attribute::PublicExponent(v) if t == AttributeType::PublicExponent => v,
            Attribute::PrivateExponent(v) if t == AttributeType::PrivateExponent => v,
            Attribute::Prime1(v) if t == AttributeType::Prime1 => v,
            Attribute::Prime2(v) if t == AttributeType::Prime2 => v,
            Attribute::Exponent1(v) if t == AttributeType::Exponent1 => v,
            Attribute::Exponent2(v) if t == AttributeType::Exponent2 => v,
            Attribute::Coefficient(v) if t == AttributeType::Coefficient => v,
            Attribute::Value(v) if t == AttributeType::Value => v,
            Attribute::EcPoint(v) if t == AttributeType::EcPoint => v,
            _ => continue,
        };
        if v.is_empty() {
            break;
        }
        return Ok(Zeroizing::new(std::mem::take(v)));
    }
    // A token that will not reveal a component of an extractable,
    // non-sensitive session key cannot make data key pairs at all.
    Err(HsmError::Setup(format!(
        "the token did not reveal {t} of a generated data key pair"
    )))
}
