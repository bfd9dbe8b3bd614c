//! Key pairs on the token: RSA and EC pairs made by C_GenerateKeyPair;
//! C_Sign with the private key and C_Verify with the public one, or
//! (RSA encryption keys, see [`super::oaep`]) C_Encrypt with the public key
//! and C_Decrypt with the private one.
//!
//! The private key is `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE`, not
//! `CKA_EXTRACTABLE` and can only sign or only decrypt; the public key is a
//! token object that can only verify or only encrypt. Both carry the key version's label and CKA_ID, so
//! the private key is found wherever a master key version is
//! ([`super::objects::find_master_key`]) and the public key by the same
//! label.

use cryptoki::error::RvError;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};

use super::objects::MasterKeyVersion;
use super::{HsmError, TokenSession};

/// What kind of pair to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPairKind {
    /// RSA with this modulus length in bits (public exponent 65537).
    Rsa(u64),
    /// EC on the named curve whose OID (DER, tag included) this is, as
    /// CKA_EC_PARAMS holds it.
    Ec(&'static [u8]),
}

/// What the private key of a pair does: sign (the public key verifies),
/// decrypt (the public key encrypts) or derive a shared secret (ECDH; the
/// public key does nothing on the token). Never two of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairPurpose {
    Sign,
    Decrypt,
    Derive,
}

/// The hash of a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignHash {
    Sha256,
    Sha384,
    Sha512,
}

/// The signature scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignScheme {
    /// RSASSA-PKCS1-v1_5.
    RsaPkcs1,
    /// RSASSA-PSS, MGF1 with the same hash, salt as long as the hash.
    RsaPss,
    /// ECDSA; the signature is r || s, each as long as the curve's order.
    Ecdsa,
}

/// What is signed: the message itself (the token hashes it) or its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInput {
    Message,
    Digest,
}

impl SignHash {
    pub fn output_len(self) -> usize {
        match self {
            SignHash::Sha256 => 32,
            SignHash::Sha384 => 48,
            SignHash::Sha512 => 64,
        }
    }

    fn mechanism_type(self) -> MechanismType {
        match self {
            SignHash::Sha256 => MechanismType::SHA256,
            SignHash::Sha384 => MechanismType::SHA384,
            SignHash::Sha512 => MechanismType::SHA512,
        }
    }

    fn mgf(self) -> PkcsMgfType {
        match self {
            SignHash::Sha256 => PkcsMgfType::MGF1_SHA256,
            SignHash::Sha384 => PkcsMgfType::MGF1_SHA384,
            SignHash::Sha512 => PkcsMgfType::MGF1_SHA512,
        }
    }

    /// The DER prefix of a PKCS#1 v1.5 DigestInfo (RFC 8017, 9.2 note 1).
    fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            SignHash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            SignHash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            SignHash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }

    fn digest(self, message: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            SignHash::Sha256 => sha2::Sha256::digest(message).to_vec(),
            SignHash::Sha384 => sha2::Sha384::digest(message).to_vec(),
            SignHash::Sha512 => sha2::Sha512::digest(message).to_vec(),
        }
    }
}

/// The mechanism and the bytes to pass to C_Sign / C_Verify.
///
/// RSA messages are hashed by the token (CKM_SHA*_RSA_PKCS[_PSS]); a digest
/// goes to CKM_RSA_PKCS behind its DigestInfo, or to CKM_RSA_PKCS_PSS.
/// ECDSA always signs a digest (CKM_ECDSA): SoftHSM2 2.6.1 has no
/// CKM_ECDSA_SHA*, so a message is hashed here first (the message is no
/// secret of the gateway's: the caller sent it).
fn mechanism(
    scheme: SignScheme,
    hash: SignHash,
    input: SignInput,
    data: &[u8],
) -> (Mechanism<'static>, Vec<u8>) {
    let pss = PkcsPssParams {
        hash_alg: hash.mechanism_type(),
        mgf: hash.mgf(),
        s_len: (hash.output_len() as u64).into(),
    };
    match (scheme, input) {
        (SignScheme::RsaPkcs1, SignInput::Message) => (
            match hash {
                SignHash::Sha256 => Mechanism::Sha256RsaPkcs,
                SignHash::Sha384 => Mechanism::Sha384RsaPkcs,
                SignHash::Sha512 => Mechanism::Sha512RsaPkcs,
            },
            data.to_vec(),
        ),
        (SignScheme::RsaPkcs1, SignInput::Digest) => {
            let mut block = hash.digest_info_prefix().to_vec();
            block.extend_from_slice(data);
            (Mechanism::RsaPkcs, block)
        }
        (SignScheme::RsaPss, SignInput::Message) => (
            match hash {
                SignHash::Sha256 => Mechanism::Sha256RsaPkcsPss(pss),
                SignHash::Sha384 => Mechanism::Sha384RsaPkcsPss(pss),
                SignHash::Sha512 => Mechanism::Sha512RsaPkcsPss(pss),
            },
            data.to_vec(),
        ),
        (SignScheme::RsaPss, SignInput::Digest) => (Mechanism::RsaPkcsPss(pss), data.to_vec()),
        (SignScheme::Ecdsa, SignInput::Message) => (Mechanism::Ecdsa, hash.digest(data)),
        (SignScheme::Ecdsa, SignInput::Digest) => (Mechanism::Ecdsa, data.to_vec()),
    }
}

/// Generates a key pair on the token; answers the private key.
/// Both objects get `label` and `id`.
pub fn generate_key_pair(
    s: &TokenSession,
    label: &str,
    id: &[u8],
    kind: KeyPairKind,
    purpose: PairPurpose,
) -> Result<MasterKeyVersion, HsmError> {
    let signs = purpose == PairPurpose::Sign;
    let decrypts = purpose == PairPurpose::Decrypt;
    let derives = purpose == PairPurpose::Derive;
    let common = |class| {
        vec![
            Attribute::Class(class),
            Attribute::Token(true),
            Attribute::Modifiable(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ]
    };
    let mut public = common(ObjectClass::PUBLIC_KEY);
    public.extend([
        Attribute::Private(false),
        Attribute::Verify(signs),
        Attribute::Encrypt(decrypts),
        Attribute::Wrap(false),
        Attribute::Derive(false),
    ]);
    let mut private = common(ObjectClass::PRIVATE_KEY);
    private.extend([
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(signs),
        Attribute::Decrypt(decrypts),
        Attribute::Unwrap(false),
        Attribute::Derive(derives),
    ]);
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
    let (_, private) = s.session.generate_key_pair(&mechanism, &public, &private)?;
    Ok(MasterKeyVersion::new(private, s.generation))
}

/// The public key objects with this label (normally one).
pub fn find_public_keys(s: &TokenSession, label: &str) -> Result<Vec<ObjectHandle>, HsmError> {
    Ok(s.session.find_objects(&[
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
    ])?)
}

/// Destroys the public key objects with this label.
pub fn destroy_public_keys(s: &TokenSession, label: &str) -> Result<(), HsmError> {
    for h in find_public_keys(s, label)? {
        s.session.destroy_object(h)?;
    }
    Ok(())
}

/// A public key as the token holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Big-endian modulus and public exponent.
    Rsa { modulus: Vec<u8>, exponent: Vec<u8> },
    /// CKA_EC_PARAMS (the curve OID, DER) and CKA_EC_POINT (the point, as
    /// the token gives it: a DER OCTET STRING or the bare point).
    Ec { params: Vec<u8>, point: Vec<u8> },
}

pub(super) fn public_key_handle(s: &TokenSession, label: &str) -> Result<ObjectHandle, HsmError> {
    find_public_keys(s, label)?
        .into_iter()
        .next()
        .ok_or(HsmError::StaleGeneration)
}

/// Reads the public key with this label.
pub fn read_public_key(s: &TokenSession, label: &str) -> Result<PublicKey, HsmError> {
    let h = public_key_handle(s, label)?;
    let attrs = s.session.get_attributes(
        h,
        &[
            AttributeType::KeyType,
            AttributeType::Modulus,
            AttributeType::PublicExponent,
            AttributeType::EcParams,
            AttributeType::EcPoint,
        ],
    )?;
    let (mut rsa, mut modulus, mut exponent, mut params, mut point) =
        (false, vec![], vec![], vec![], vec![]);
    for a in attrs {
        match a {
            Attribute::KeyType(t) => rsa = t == KeyType::RSA,
            Attribute::Modulus(v) => modulus = v,
            Attribute::PublicExponent(v) => exponent = v,
            Attribute::EcParams(v) => params = v,
            Attribute::EcPoint(v) => point = v,
            _ => {}
        }
    }
    Ok(if rsa {
        PublicKey::Rsa { modulus, exponent }
    } else {
        PublicKey::Ec { params, point }
    })
}

/// Signs `data` with the private key `key`.
pub fn sign(
    s: &TokenSession,
    key: MasterKeyVersion,
    scheme: SignScheme,
    hash: SignHash,
    input: SignInput,
    data: &[u8],
) -> Result<Vec<u8>, HsmError> {
    let (mechanism, data) = mechanism(scheme, hash, input, data);
    Ok(s.session.sign(&mechanism, key.handle(s)?, &data)?)
}

/// Whether `signature` is a valid signature of `data` under the public
/// key with this label; the token verifies (C_Verify).
///
/// Tokens report a signature that does not verify with
/// CKR_SIGNATURE_INVALID, but Kryoptic 1.5 reports it with
/// CKR_DEVICE_ERROR, the code of a device fault. So on a device or general
/// error the key pair must prove the token works: a signature made now
/// with `private` over a probe must verify. Only then is the failure the
/// signature's; otherwise the error stays a token fault (retryable, never
/// a wrong "invalid").
#[allow(clippy::too_many_arguments)]
pub fn verify(
    s: &TokenSession,
    label: &str,
    private: MasterKeyVersion,
    scheme: SignScheme,
    hash: SignHash,
    input: SignInput,
    data: &[u8],
    signature: &[u8],
) -> Result<bool, HsmError> {
    let h = public_key_handle(s, label)?;
    let (m, data) = mechanism(scheme, hash, input, data);
    match s.session.verify(&m, h, &data, signature) {
        Ok(()) => Ok(true),
        Err(cryptoki::error::Error::Pkcs11(
            RvError::SignatureInvalid | RvError::SignatureLenRange | RvError::DataLenRange,
            _,
        )) => Ok(false),
        Err(
            e @ cryptoki::error::Error::Pkcs11(RvError::DeviceError | RvError::GeneralError, _),
        ) => {
            let probe = match input {
                SignInput::Message => b"kmsgate verify probe".to_vec(),
                SignInput::Digest => hash.digest(b"kmsgate verify probe"),
            };
            let proven = sign(s, private, scheme, hash, input, &probe).and_then(|good| {
                let (m, probe) = mechanism(scheme, hash, input, &probe);
                Ok(s.session.verify(&m, h, &probe, &good)?)
            });
            match proven {
                Ok(()) => Ok(false),
                Err(_) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_info_prefixes_announce_the_digest_length() {
        for h in [SignHash::Sha256, SignHash::Sha384, SignHash::Sha512] {
            let p = h.digest_info_prefix();
            assert_eq!(p.len(), 19);
            assert_eq!(usize::from(p[1]), p.len() - 2 + h.output_len());
            assert_eq!(usize::from(p[18]), h.output_len());
            assert_eq!(h.digest(b"x").len(), h.output_len());
        }
    }
}
