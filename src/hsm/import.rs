//! Key import (BYOK) on the token: RSA wrapping key pairs, and key material
//! unwrapped with C_UnwrapKey straight into a sensitive, non-extractable
//! token object, so the material never exists in the gateway's memory.
//!
//! A wrapping pair's private key can only unwrap (CKA_UNWRAP; not decrypt,
//! not sign) and is sensitive and non-extractable; its public key is a
//! token object that can do nothing, kept only to be read out as the
//! GetParametersForImport answer.
//!
//! RSA_AES_KEY_WRAP material is `RSA-OAEP(ephemeral AES key) ||
//! AES-KWP(material)` (RFC 5649). SoftHSM2 2.6.1 has no
//! CKM_RSA_AES_KEY_WRAP, so the two steps are done apart: the ephemeral key
//! is unwrapped into a session object that can only unwrap, which then
//! unwraps the material (CKM_AES_KEY_WRAP_PAD) and is destroyed.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use sha2::{Digest, Sha256};

use super::keypair::{self, PublicKey};
use super::objects::MasterKeyVersion;
use super::{HsmError, TokenSession};

/// How the material was wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwrapping {
    OaepSha1,
    OaepSha256,
    /// RSA-OAEP (SHA-1) of an AES key, then AES key wrap with padding.
    RsaAesSha1,
    /// RSA-OAEP (SHA-256) of an AES key, then AES key wrap with padding.
    RsaAesSha256,
}

/// What kind of secret the material is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// An AES-256 key that encrypts and decrypts (`wrap`: CKA_WRAP too,
    /// where data keys are made by C_WrapKey).
    Aes256 { wrap: bool },
    /// An HMAC key of this many bytes that signs and verifies.
    Hmac(usize),
}

/// Why the token refused the material: the client's fault, not the token's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The wrapped bytes do not unwrap under the wrapping key.
    Undecryptable,
    /// They unwrap, but not to material of the required length.
    WrongLength,
    /// The token lacks the mechanism (named) the wrapping algorithm needs.
    Unsupported(&'static str),
    /// They unwrap, but not to a private key of the key's type and size
    /// or curve.
    WrongKey,
}

/// An unwrapped key version and its check value: the SHA-256 of what the
/// key computes from a fixed input (an AES-ECB encryption of a fixed block,
/// or an HMAC of a fixed message). Equal material gives an equal check
/// value; the value reveals nothing of the key.
#[derive(Debug)]
pub struct Imported {
    pub key: MasterKeyVersion,
    pub check_value: [u8; 32],
}

/// The fixed input of a check value.
const CHECK_INPUT: &[u8; 16] = b"kmsgate KCV v1\0\0";

fn oaep(hash: MechanismType, mgf: PkcsMgfType) -> Mechanism<'static> {
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()))
}

impl Unwrapping {
    fn oaep(self) -> Mechanism<'static> {
        match self {
            Unwrapping::OaepSha1 | Unwrapping::RsaAesSha1 => {
                oaep(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1)
            }
            Unwrapping::OaepSha256 | Unwrapping::RsaAesSha256 => {
                oaep(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256)
            }
        }
    }

    fn oaep_name(self) -> &'static str {
        match self {
            Unwrapping::OaepSha1 | Unwrapping::RsaAesSha1 => "CKM_RSA_PKCS_OAEP with SHA-1",
            Unwrapping::OaepSha256 | Unwrapping::RsaAesSha256 => "CKM_RSA_PKCS_OAEP with SHA-256",
        }
    }
}

/// Generates an RSA wrapping pair of `bits` on the token, both halves
/// labelled `label`.
pub fn generate_wrapping_pair(s: &TokenSession, label: &str, bits: u64) -> Result<(), HsmError> {
    let common = |class| {
        vec![
            Attribute::Class(class),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(true),
            Attribute::Modifiable(false),
            Attribute::Label(label.as_bytes().to_vec()),
        ]
    };
    let mut public = common(ObjectClass::PUBLIC_KEY);
    public.extend([
        Attribute::Private(false),
        Attribute::Verify(false),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Derive(false),
        Attribute::ModulusBits(bits.into()),
        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
    ]);
    let mut private = common(ObjectClass::PRIVATE_KEY);
    private.extend([
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(false),
        Attribute::Decrypt(false),
        Attribute::Unwrap(true),
        Attribute::Derive(false),
    ]);
    s.session
        .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)?;
    Ok(())
}

/// The public half of the wrapping pair `label`.
pub fn wrapping_public_key(s: &TokenSession, label: &str) -> Result<PublicKey, HsmError> {
    keypair::read_public_key(s, label)
}

fn wrapping_private_key(s: &TokenSession, label: &str) -> Result<Option<ObjectHandle>, HsmError> {
    Ok(s.session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])?
        .first()
        .copied())
}

/// Destroys the wrapping pair `label` (both halves; nothing if gone).
pub fn destroy_wrapping_pair(s: &TokenSession, label: &str) -> Result<(), HsmError> {
    while let Some(h) = wrapping_private_key(s, label)? {
        s.session.destroy_object(h)?;
    }
    keypair::destroy_public_keys(s, label)
}

/// The template of an imported key version.
fn target_template(kind: SecretKind, label: &str, id: &[u8]) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        // Not CKA_MODIFIABLE false: SoftHSM2 2.6.1 sets attributes on the
        // unwrapped object after creating it and then refuses with
        // CKR_ATTRIBUTE_READ_ONLY. PKCS#11 forbids turning CKA_SENSITIVE
        // off or CKA_EXTRACTABLE on anyway.
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    match kind {
        SecretKind::Aes256 { wrap } => t.extend([
            Attribute::KeyType(KeyType::AES),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(wrap),
            Attribute::Sign(false),
            Attribute::Verify(false),
        ]),
        SecretKind::Hmac(_) => t.extend([
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Wrap(false),
            Attribute::Sign(true),
            Attribute::Verify(true),
        ]),
    }
    t
}

/// Return codes that mean "these bytes do not unwrap", not a token fault.
fn undecryptable(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::WrappedKeyInvalid
                | RvError::WrappedKeyLenRange
                | RvError::DataInvalid
                | RvError::DataLenRange
                | RvError::GeneralError,
            _
        )
    )
}

fn wrong_length(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::KeySizeRange | RvError::AttributeValueInvalid | RvError::TemplateInconsistent,
            _
        )
    )
}

fn unsupported(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::MechanismInvalid | RvError::MechanismParamInvalid | RvError::ArgumentsBad,
            _
        )
    )
}

/// The modulus length in bytes of the wrapping pair `wrapping_label`.
fn wrapping_modulus_len(s: &TokenSession, wrapping_label: &str) -> Result<usize, HsmError> {
    match keypair::read_public_key(s, wrapping_label)? {
        PublicKey::Rsa { modulus, .. } => Ok(modulus.len()),
        PublicKey::Ec { .. } => Err(HsmError::StaleGeneration),
    }
}

/// What a probe unwrap would make: a session AES key, sensitive and not
/// extractable (the probes of the unwrapping mechanisms below).
fn probe_target() -> [Attribute; 5] {
    [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
    ]
}

/// Whether the token can unwrap with `how`'s OAEP: `Some(mechanism)` when
/// it lacks it. A probe unwrap of a block of zeros, which a token that has
/// the mechanism refuses for the block (or, absurdly, unwraps into a
/// session object that is destroyed at once), and one that lacks it for the
/// mechanism's parameters (SoftHSM2 2.6: CKR_ARGUMENTS_BAD for SHA-256).
pub fn lacks_unwrapping(
    s: &TokenSession,
    wrapping_label: &str,
    how: Unwrapping,
) -> Result<Option<&'static str>, HsmError> {
    let Some(unwrapper) = wrapping_private_key(s, wrapping_label)? else {
        return Err(HsmError::StaleGeneration);
    };
    let modulus_len = wrapping_modulus_len(s, wrapping_label)?;
    match s.session.unwrap_key(
        &how.oaep(),
        unwrapper,
        &vec![0u8; modulus_len],
        &probe_target(),
    ) {
        Ok(h) => s.session.destroy_session_object(h)?,
        Err(e) if unsupported(&e) => return Ok(Some(how.oaep_name())),
        Err(_) => {}
    }
    if matches!(how, Unwrapping::RsaAesSha1 | Unwrapping::RsaAesSha256) && lacks_kwp(s)? {
        return Ok(Some("CKM_AES_KEY_WRAP_PAD"));
    }
    Ok(None)
}

/// Whether the token lacks CKM_AES_KEY_WRAP_PAD, the second step of
/// RSA_AES_KEY_WRAP (Kryoptic 1.5 names RFC 5649 CKM_AES_KEY_WRAP_KWP): a
/// probe unwrap of zeros under a session key of its own, refused for the
/// bytes by a token that has the mechanism.
fn lacks_kwp(s: &TokenSession) -> Result<bool, HsmError> {
    let kek = s.session.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(false),
            Attribute::Unwrap(true),
        ],
    )?;
    let probe = s
        .session
        .unwrap_key(&Mechanism::AesKeyWrapPad, kek, &[0u8; 40], &probe_target());
    let _ = s.session.destroy_session_object(kek);
    match probe {
        Ok(h) => {
            s.session.destroy_session_object(h)?;
            Ok(false)
        }
        Err(e) => Ok(unsupported(&e)),
    }
}

/// Unwraps `wrapped` with the wrapping pair `wrapping_label` into a new
/// object made from `template` (for RSA_AES_KEY_WRAP, through an
/// ephemeral AES session object that is destroyed again). Nothing is left
/// on the token when the token refuses the bytes.
///
/// SoftHSM2 2.6.1 sometimes fails to store a new token object when another
/// session lists objects at the same moment (SoftHSMv2 issue 573), with
/// CKR_GENERAL_ERROR or CKR_TEMPLATE_INCONSISTENT: the same answers it
/// gives for bytes that do not unwrap. So when a token object fails that
/// way, the same bytes are unwrapped once more into a session object
/// (which no other session sees): if that works, the bytes were fine and
/// the failure is the token's, a retryable fault (the write is tried
/// again); if not, the bytes are refused.
pub(super) fn unwrap_into(
    s: &TokenSession,
    wrapping_label: &str,
    how: Unwrapping,
    wrapped: &[u8],
    template: &[Attribute],
) -> Result<Result<ObjectHandle, Refusal>, HsmError> {
    let first = unwrap_once(s, wrapping_label, how, wrapped, template)?;
    let stored = template.iter().any(|a| matches!(a, Attribute::Token(true)));
    let e = match first {
        Err(Refused::Token(e)) if stored && race_symptom(&e) => e,
        other => return Ok(other.map_err(Refused::refusal)),
    };
    let in_session: Vec<Attribute> = template
        .iter()
        .map(|a| match a {
            Attribute::Token(_) => Attribute::Token(false),
            other => other.clone(),
        })
        .collect();
    match unwrap_once(s, wrapping_label, how, wrapped, &in_session)? {
        Ok(h) => {
            s.session.destroy_object(h)?;
            tracing::warn!(error = %e, "the token failed to store an unwrapped key the bytes make (SoftHSM2 race)");
            Err(HsmError::Unexpected(
                "the token failed to store an unwrapped key",
            ))
        }
        Err(_) => Ok(Err(Refused::Token(e).refusal())),
    }
}

/// Why one unwrap made nothing: a refusal already judged, or the token's
/// answer to the final unwrap.
enum Refused {
    Judged(Refusal),
    Token(CkError),
}

impl Refused {
    fn refusal(self) -> Refusal {
        match self {
            Refused::Judged(r) => r,
            Refused::Token(e) if unsupported(&e) => Refusal::Unsupported("the unwrap mechanism"),
            Refused::Token(e) if wrong_length(&e) => Refusal::WrongLength,
            Refused::Token(_) => Refusal::Undecryptable,
        }
    }
}

/// What SoftHSM2's object-store race answers (see [`unwrap_into`]).
fn race_symptom(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(RvError::GeneralError | RvError::TemplateInconsistent, _)
    )
}

/// One attempt of [`unwrap_into`]. Errors the token gives for the bytes
/// come back as [`Refused`]; others (a broken session) as `Err`.
fn unwrap_once(
    s: &TokenSession,
    wrapping_label: &str,
    how: Unwrapping,
    wrapped: &[u8],
    template: &[Attribute],
) -> Result<Result<ObjectHandle, Refused>, HsmError> {
    let Some(unwrapper) = wrapping_private_key(s, wrapping_label)? else {
        return Err(HsmError::StaleGeneration);
    };
    let made = match how {
        Unwrapping::OaepSha1 | Unwrapping::OaepSha256 => {
            s.session
                .unwrap_key(&how.oaep(), unwrapper, wrapped, template)
        }
        Unwrapping::RsaAesSha1 | Unwrapping::RsaAesSha256 => {
            let modulus_len = wrapping_modulus_len(s, wrapping_label)?;
            if wrapped.len() <= modulus_len {
                return Ok(Err(Refused::Judged(Refusal::Undecryptable)));
            }
            let (rsa_part, kw_part) = wrapped.split_at(modulus_len);
            let ephemeral_template = [
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
                Attribute::Unwrap(true),
            ];
            let ephemeral =
                match s
                    .session
                    .unwrap_key(&how.oaep(), unwrapper, rsa_part, &ephemeral_template)
                {
                    Ok(h) => h,
                    Err(e) if unsupported(&e) => {
                        return Ok(Err(Refused::Judged(Refusal::Unsupported(how.oaep_name()))));
                    }
                    Err(e) if undecryptable(&e) || wrong_length(&e) => {
                        return Ok(Err(Refused::Judged(Refusal::Undecryptable)));
                    }
                    Err(e) => return Err(e.into()),
                };
            let result =
                s.session
                    .unwrap_key(&Mechanism::AesKeyWrapPad, ephemeral, kw_part, template);
            let _ = s.session.destroy_object(ephemeral);
            if let Err(e) = &result
                && unsupported(e)
            {
                return Ok(Err(Refused::Judged(Refusal::Unsupported(
                    "CKM_AES_KEY_WRAP_PAD",
                ))));
            }
            result
        }
    };
    Ok(match made {
        Ok(h) => Ok(h),
        Err(e) if unsupported(&e) => Err(Refused::Judged(Refusal::Unsupported(how.oaep_name()))),
        Err(e) if wrong_length(&e) || undecryptable(&e) => Err(Refused::Token(e)),
        Err(e) => return Err(e.into()),
    })
}

/// Unwraps `wrapped` with the wrapping pair `wrapping_label` into a new
/// token object `label` / `id` of `kind`, and computes its check value.
/// Nothing is left on the token when the material is refused.
pub fn unwrap_material(
    s: &TokenSession,
    wrapping_label: &str,
    how: Unwrapping,
    wrapped: &[u8],
    kind: SecretKind,
    label: &str,
    id: &[u8],
) -> Result<Result<Imported, Refusal>, HsmError> {
    let template = target_template(kind, label, id);
    let handle = match unwrap_into(s, wrapping_label, how, wrapped, &template)? {
        Ok(h) => h,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let wanted = match kind {
        SecretKind::Aes256 { .. } => 32,
        SecretKind::Hmac(n) => n,
    };
    // Some tokens (SoftHSM2 2.6.1) do not set CKA_VALUE_LEN on unwrapped
    // keys and report 0: the length is then checked only as far as the
    // check value's mechanism refuses a key it cannot use (an AES key of
    // 128 or 192 bits passes there).
    let checked = value_len(s, handle).and_then(|len| {
        if len != 0 && len != wanted {
            return Ok(Err(Refusal::WrongLength));
        }
        match check_value(s, handle, kind) {
            Ok(v) => Ok(Ok(v)),
            // SoftHSM2 answers CKR_MECHANISM_INVALID for an AES key of a
            // length AES does not have.
            Err(HsmError::Pkcs11(e))
                if wrong_length(&e) || undecryptable(&e) || unsupported(&e) =>
            {
                Ok(Err(Refusal::WrongLength))
            }
            Err(e) => Err(e),
        }
    });
    match checked {
        Ok(Ok(check_value)) => Ok(Ok(Imported {
            key: MasterKeyVersion::new(handle, s.generation),
            check_value,
        })),
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

fn value_len(s: &TokenSession, h: ObjectHandle) -> Result<usize, HsmError> {
    let attrs = s.session.get_attributes(h, &[AttributeType::ValueLen])?;
    Ok(attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::ValueLen(n) => Some(u64::from(n) as usize),
            _ => None,
        })
        .unwrap_or(0))
}

fn check_value(s: &TokenSession, h: ObjectHandle, kind: SecretKind) -> Result<[u8; 32], HsmError> {
    let out = match kind {
        SecretKind::Aes256 { .. } => s.session.encrypt(&Mechanism::AesEcb, h, CHECK_INPUT)?,
        SecretKind::Hmac(_) => s.session.sign(&Mechanism::Sha256Hmac, h, CHECK_INPUT)?,
    };
    Ok(Sha256::digest(&out).into())
}
