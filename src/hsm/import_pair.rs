//! Import of asymmetric key material (BYOK for RSA and EC keys) on the
//! token: a PKCS#8 PrivateKeyInfo is unwrapped with C_UnwrapKey straight
//! into a sensitive, non-extractable private key object that can only
//! sign, only decrypt or only derive, as a generated key version's private
//! half. The material never exists in the gateway's memory.
//!
//! The public half is made from what the token tells of the private key:
//! an RSA private key's CKA_MODULUS and CKA_PUBLIC_EXPONENT are public
//! attributes. An EC private key on the token holds no public point
//! (SoftHSM2 2.6.1 keeps only the scalar), so the material is unwrapped a
//! second time into a temporary session object that can sign and derive,
//! and with it the token computes ECDH against the curve's generator (the
//! x-coordinate of the public point) and an ECDSA signature of a fixed
//! digest; the temporary object is destroyed before the session goes back.
//! The caller finds the point from these ([`store_public_key`],
//! [`verifies`]).

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};

use super::ecdh;
use super::import::{Refusal, Unwrapping, unwrap_into};
use super::keypair::{KeyPairKind, PairPurpose, PublicKey};
use super::objects::MasterKeyVersion;
use super::{HsmError, TokenSession};

/// What the token tells of an imported private key's public half.
#[derive(Debug)]
pub enum PublicPart {
    /// The public key itself.
    Rsa(PublicKey),
    /// The x-coordinate of the public point (as long as the field) and an
    /// ECDSA signature (r || s) of the probe digest: the point is the one
    /// of the two with this x under which the signature verifies.
    Ec { x: Vec<u8>, signature: Vec<u8> },
}

/// The curve's facts the EC public point is found with.
#[derive(Debug, Clone, Copy)]
pub struct EcProbe<'a> {
    /// The curve's generator, uncompressed.
    pub generator: &'a [u8],
    /// The field length in bytes.
    pub field_len: usize,
    /// The digest the temporary object signs.
    pub digest: &'a [u8],
}

fn key_type(kind: KeyPairKind) -> KeyType {
    match kind {
        KeyPairKind::Rsa(_) => KeyType::RSA,
        KeyPairKind::Ec(_) => KeyType::EC,
    }
}

/// The template of an imported private key: a key version's (`token`)
/// or the temporary EC object that signs and derives (a session object).
fn private_template(
    kind: KeyPairKind,
    purpose: Option<PairPurpose>,
    label: &str,
    id: &[u8],
) -> Vec<Attribute> {
    let token = purpose.is_some();
    let mut t = vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(key_type(kind)),
        Attribute::Token(token),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        // Not CKA_MODIFIABLE false: see the secret key template in
        // super::import.
        Attribute::Sign(purpose.is_none_or(|p| p == PairPurpose::Sign)),
        Attribute::Decrypt(purpose == Some(PairPurpose::Decrypt)),
        Attribute::Derive(purpose.is_none_or(|p| p == PairPurpose::Derive)),
        Attribute::Unwrap(false),
    ];
    if token {
        t.extend([
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ]);
    }
    t
}

/// Whether the object is a private key of `kind` (key type; RSA modulus
/// length or EC curve), and for RSA its public key.
fn fits(
    s: &TokenSession,
    h: ObjectHandle,
    kind: KeyPairKind,
) -> Result<Option<Option<PublicKey>>, HsmError> {
    let attrs = s.session.get_attributes(
        h,
        &[
            AttributeType::KeyType,
            AttributeType::Modulus,
            AttributeType::PublicExponent,
            AttributeType::EcParams,
        ],
    )?;
    let (mut ty, mut modulus, mut exponent, mut params) = (None, vec![], vec![], vec![]);
    for a in attrs {
        match a {
            Attribute::KeyType(t) => ty = Some(t),
            Attribute::Modulus(v) => modulus = v,
            Attribute::PublicExponent(v) => exponent = v,
            Attribute::EcParams(v) => params = v,
            _ => {}
        }
    }
    Ok(match kind {
        KeyPairKind::Rsa(bits) => {
            let first = modulus
                .iter()
                .position(|b| *b != 0)
                .unwrap_or(modulus.len());
            let m = &modulus[first..];
            let len = m.first().map_or(0, |b| {
                (m.len() as u64 - 1) * 8 + u64::from(8 - b.leading_zeros())
            });
            (ty == Some(KeyType::RSA) && len == bits).then(|| {
                Some(PublicKey::Rsa {
                    modulus: m.to_vec(),
                    exponent,
                })
            })
        }
        KeyPairKind::Ec(wanted) => (ty == Some(KeyType::EC) && params == wanted).then_some(None),
    })
}

/// Unwraps `wrapped` (a wrapped PKCS#8 PrivateKeyInfo) with the wrapping
/// pair `wrapping_label` into a new private key object `label` / `id` of
/// `kind` that can do `purpose`, and tells its public half (`probe`: for
/// EC keys). Nothing is left on the token when the material is refused or
/// anything fails.
#[allow(clippy::too_many_arguments)]
pub fn unwrap_private_key(
    s: &TokenSession,
    wrapping_label: &str,
    how: Unwrapping,
    wrapped: &[u8],
    kind: KeyPairKind,
    purpose: PairPurpose,
    label: &str,
    id: &[u8],
    probe: Option<EcProbe<'_>>,
) -> Result<Result<(MasterKeyVersion, PublicPart), Refusal>, HsmError> {
    let template = private_template(kind, Some(purpose), label, id);
    let handle = match unwrap_into(s, wrapping_label, how, wrapped, &template) {
        Ok(Ok(h)) => h,
        Ok(Err(refusal)) => return Ok(Err(refusal)),
        // SoftHSM2 2.6.1 answers CKR_FUNCTION_FAILED (and keeps nothing)
        // when the unwrapped bytes are no PKCS#8 key of the template's key
        // type: the client's material, not the token, is at fault.
        Err(HsmError::Pkcs11(CkError::Pkcs11(RvError::FunctionFailed, _))) => {
            return Ok(Err(Refusal::WrongKey));
        }
        Err(e) => return Err(e),
    };
    let public = fits(s, handle, kind).and_then(|fit| match (fit, kind, probe) {
        (None, ..) => Ok(Err(Refusal::WrongKey)),
        (Some(Some(rsa)), KeyPairKind::Rsa(_), _) => Ok(Ok(PublicPart::Rsa(rsa))),
        (Some(_), KeyPairKind::Ec(_), Some(probe)) => {
            ec_public_part(s, wrapping_label, how, wrapped, kind, probe)
        }
        _ => Err(HsmError::Unexpected("no public half for an imported key")),
    });
    match public {
        Ok(Ok(p)) => Ok(Ok((MasterKeyVersion::new(handle, s.generation), p))),
        Ok(Err(refusal)) => {
            let _ = s.session.destroy_object(handle);
            Ok(Err(refusal))
        }
        Err(e) => {
            let _ = s.session.destroy_object(handle);
            Err(e)
        }
    }
}

/// The EC public point's x-coordinate and a probe signature, made with a
/// temporary session object unwrapped from the same material.
fn ec_public_part(
    s: &TokenSession,
    wrapping_label: &str,
    how: Unwrapping,
    wrapped: &[u8],
    kind: KeyPairKind,
    probe: EcProbe<'_>,
) -> Result<Result<PublicPart, Refusal>, HsmError> {
    let template = private_template(kind, None, "", &[]);
    let temporary = match unwrap_into(s, wrapping_label, how, wrapped, &template)? {
        Ok(h) => h,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let key = MasterKeyVersion::new(temporary, s.generation);
    let made = ecdh::derive_shared_secret(s, key, probe.generator, probe.field_len).and_then(|x| {
        let signature = s.session.sign(&Mechanism::Ecdsa, temporary, probe.digest)?;
        Ok(PublicPart::Ec {
            x: x.to_vec(),
            signature,
        })
    });
    let destroyed = s.session.destroy_object(temporary);
    let part = made?;
    destroyed?;
    Ok(Ok(part))
}

/// Creates the public key object `label` / `id` of an imported private
/// key; it can verify (`Sign`) or encrypt (`Decrypt`) or nothing.
pub fn store_public_key(
    s: &TokenSession,
    label: &str,
    id: &[u8],
    public: &PublicKey,
    purpose: PairPurpose,
) -> Result<ObjectHandle, HsmError> {
    let mut t = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Modifiable(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Verify(purpose == PairPurpose::Sign),
        Attribute::Encrypt(purpose == PairPurpose::Decrypt),
        Attribute::Wrap(false),
        Attribute::Derive(false),
    ];
    match public {
        PublicKey::Rsa { modulus, exponent } => t.extend([
            Attribute::KeyType(KeyType::RSA),
            Attribute::Modulus(modulus.clone()),
            Attribute::PublicExponent(exponent.clone()),
        ]),
        PublicKey::Ec { params, point } => t.extend([
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(params.clone()),
            Attribute::EcPoint(point.clone()),
        ]),
    }
    Ok(s.session.create_object(&t)?)
}

/// Whether `signature` (r || s) of `digest` verifies under the EC public
/// key `public` (C_Verify with CKM_ECDSA, under a session object made for
/// it and destroyed again).
pub fn verifies(
    s: &TokenSession,
    public: &PublicKey,
    digest: &[u8],
    signature: &[u8],
) -> Result<bool, HsmError> {
    let PublicKey::Ec { params, point } = public else {
        return Err(HsmError::Unexpected("not an EC public key"));
    };
    let h = s.session.create_object(&[
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(params.clone()),
        Attribute::EcPoint(point.clone()),
    ])?;
    let verified = match s.session.verify(&Mechanism::Ecdsa, h, digest, signature) {
        Ok(()) => Ok(true),
        Err(CkError::Pkcs11(RvError::SignatureInvalid | RvError::SignatureLenRange, _)) => {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    };
    s.session.destroy_object(h)?;
    verified
}
