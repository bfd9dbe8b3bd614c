//! AES-GCM, HMAC and random bytes, on the token.
//!
//! Every GCM operation here takes additional authenticated data from the
//! caller, and the callers always pass the blob header, so it is never empty
//! (SoftHSM2 aborts on empty AAD in assertion-enabled builds: SoftHSMv2 issue
//! 605). How the IV is made is the token's capability (DESIGN.md decision 5):
//! with [`IvSource::Caller`] the IV is 12 bytes from the token's RNG; with
//! [`IvSource::Token`] the token writes the IV it chose back into the
//! parameter block of C_Encrypt; with [`IvSource::Message`] the token
//! generates it in PKCS#11 3.0's C_EncryptMessage (CKG_GENERATE_RANDOM) and
//! writes it, and the tag, back into CK_GCM_MESSAGE_PARAMS. Whichever, the
//! IV returned is the one actually used, and the ciphertext is
//! ciphertext||tag.

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::MessageParam;
use cryptoki::mechanism::aead::{GcmMessageParams, GcmParams, GeneratorFunction};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use zeroize::Zeroizing;

use super::objects::MasterKeyVersion;
use super::{HsmError, IvSource, TokenSession};

pub const IV_LEN: usize = 12;
const TAG_BITS: u64 = 128;
pub const TAG_LEN: usize = 16;

/// The hash of an HMAC (CKM_SHA*_HMAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacHash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl MacHash {
    /// The length of the HMAC, in bytes.
    pub fn output_len(self) -> usize {
        match self {
            MacHash::Sha224 => 28,
            MacHash::Sha256 => 32,
            MacHash::Sha384 => 48,
            MacHash::Sha512 => 64,
        }
    }

    fn mechanism(self) -> Mechanism<'static> {
        match self {
            MacHash::Sha224 => Mechanism::Sha224Hmac,
            MacHash::Sha256 => Mechanism::Sha256Hmac,
            MacHash::Sha384 => Mechanism::Sha384Hmac,
            MacHash::Sha512 => Mechanism::Sha512Hmac,
        }
    }
}

/// The HMAC of `message` under `key` (C_Sign).
pub fn mac(
    s: &TokenSession,
    key: MasterKeyVersion,
    hash: MacHash,
    message: &[u8],
) -> Result<Vec<u8>, HsmError> {
    Ok(s.session.sign(&hash.mechanism(), key.handle(s)?, message)?)
}

/// Whether `mac` is the HMAC of `message` under `key`. The token compares
/// (C_Verify); a MAC of the wrong length is simply not valid, and is not
/// sent to the token (Kryoptic 1.5 leaves the verification active after
/// CKR_SIGNATURE_LEN_RANGE, so the session's next C_VerifyInit fails).
pub fn verify_mac(
    s: &TokenSession,
    key: MasterKeyVersion,
    hash: MacHash,
    message: &[u8],
    mac: &[u8],
) -> Result<bool, HsmError> {
    if mac.len() != hash.output_len() {
        return Ok(false);
    }
    match s
        .session
        .verify(&hash.mechanism(), key.handle(s)?, message, mac)
    {
        Ok(()) => Ok(true),
        Err(cryptoki::error::Error::Pkcs11(
            RvError::SignatureInvalid | RvError::SignatureLenRange,
            _,
        )) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Bytes from the token's RNG.
pub fn random(s: &TokenSession, len: usize) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    let mut out = Zeroizing::new(vec![0u8; len]);
    s.random_into(&mut out)?;
    Ok(out)
}

/// Encrypts `plaintext` under `key` with AES-GCM; returns (IV, ciphertext||tag).
pub fn encrypt(
    s: &TokenSession,
    key: MasterKeyVersion,
    iv_source: IvSource,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<([u8; IV_LEN], Vec<u8>), HsmError> {
    seal_fresh(s, key.handle(s)?, iv_source, aad, plaintext)
}

/// AES-GCM under the key object `key` with a fresh IV: 12 bytes from the
/// token's RNG where the caller makes it, else the IV the token makes.
fn seal_fresh(
    s: &TokenSession,
    key: ObjectHandle,
    iv_source: IvSource,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<([u8; IV_LEN], Vec<u8>), HsmError> {
    let mut iv = [0u8; IV_LEN];
    if iv_source == IvSource::Caller {
        s.random_into(&mut iv)?;
    }
    seal(s, key, iv_source, iv, aad, plaintext)
}

/// AES-GCM under the key object `key`, with `iv` where the caller makes
/// it, or the IV the token makes ([`IvSource`]).
fn seal(
    s: &TokenSession,
    key: ObjectHandle,
    iv_source: IvSource,
    iv: [u8; IV_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<([u8; IV_LEN], Vec<u8>), HsmError> {
    match iv_source {
        IvSource::Caller => encrypt_with_iv(s, key, iv, aad, plaintext),
        IvSource::Token => {
            let sealed = encrypt_with_iv(s, key, [0; IV_LEN], aad, plaintext)?;
            token_chose(&sealed.0)?;
            Ok(sealed)
        }
        IvSource::TokenAppended => {
            let (_, output) = encrypt_with_iv(s, key, [0; IV_LEN], aad, plaintext)?;
            let sealed = split_appended(output, plaintext.len())?;
            token_chose(&sealed.0)?;
            Ok(sealed)
        }
        IvSource::Message => encrypt_message(s, key, aad, plaintext),
    }
}

/// ciphertext || tag || IV, as a token returns it under
/// `iv_source = "token_appended"`, as (IV, ciphertext || tag).
fn split_appended(
    mut output: Vec<u8>,
    plaintext_len: usize,
) -> Result<([u8; IV_LEN], Vec<u8>), HsmError> {
    if output.len() != plaintext_len + TAG_LEN + IV_LEN {
        return Err(HsmError::Unexpected(
            "hsm.iv_source = \"token_appended\", but the token's output is not ciphertext, tag and a 12-byte IV",
        ));
    }
    let mut iv = [0u8; IV_LEN];
    iv.copy_from_slice(&output[output.len() - IV_LEN..]);
    output.truncate(output.len() - IV_LEN);
    Ok((iv, output))
}

/// With `iv_source = "token"` the token must write the IV it used into the
/// IV buffer kmsgate passed zeroed. One left all zero means it encrypted
/// under the zero IV it was given, so the ciphertext is never returned
/// (every such encryption would share that IV). The chance that a token's
/// random IV is all zero is 2^-96.
fn token_chose(iv: &[u8; IV_LEN]) -> Result<(), HsmError> {
    if *iv == [0; IV_LEN] {
        tracing::error!(
            "hsm.iv_source is \"token\", but the token left the GCM IV buffer zero: it does not generate IVs in C_Encrypt; set iv_source to \"caller\" or \"message\" (kmsgate doctor tells which the token offers)"
        );
        return Err(HsmError::Unexpected(
            "the token did not generate the GCM IV (hsm.iv_source = \"token\")",
        ));
    }
    Ok(())
}

/// AES-GCM through PKCS#11 3.0's message-based encryption, the token
/// generating the IV (CKG_GENERATE_RANDOM over all 96 bits).
fn encrypt_message(
    s: &TokenSession,
    key: ObjectHandle,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<([u8; IV_LEN], Vec<u8>), HsmError> {
    let (iv, mut ciphertext, tag) = {
        let _lock = super::token_lock::shared();
        message_encrypt(&s.session, key, aad, plaintext)?
    };
    if iv == [0; IV_LEN] {
        return Err(HsmError::Unexpected(
            "the token did not generate the GCM IV in C_EncryptMessage",
        ));
    }
    ciphertext.extend_from_slice(&tag);
    Ok((iv, ciphertext))
}

/// Message parameters that have the token generate the whole IV.
fn generated<'a>(
    iv: &'a mut [u8; IV_LEN],
    tag: &'a mut [u8; TAG_LEN],
) -> cryptoki::error::Result<GcmMessageParams<'a>> {
    GcmMessageParams::new(iv, 0.into(), GeneratorFunction::GenerateRandom, tag)
}

/// C_MessageEncryptInit, C_EncryptMessage with CKG_GENERATE_RANDOM and
/// C_MessageEncryptFinal under `key`: the IV the token wrote back, the
/// ciphertext and the tag. Also `kmsgate doctor`'s probe of the token.
pub(super) fn message_encrypt(
    session: &Session,
    key: ObjectHandle,
    aad: &[u8],
    plaintext: &[u8],
) -> cryptoki::error::Result<([u8; IV_LEN], Vec<u8>, [u8; TAG_LEN])> {
    let (mut iv, mut tag) = ([0u8; IV_LEN], [0u8; TAG_LEN]);
    {
        let (mut init_iv, mut init_tag) = ([0u8; IV_LEN], [0u8; TAG_LEN]);
        let init = generated(&mut init_iv, &mut init_tag)?;
        session.message_encrypt_init(&Mechanism::AesGcmMessage(init), key)?;
    }
    let sealed = generated(&mut iv, &mut tag)
        .and_then(|p| session.encrypt_message(&MessageParam::AesGcmMessage(p), aad, plaintext));
    let finished = session.message_encrypt_final();
    let ciphertext = sealed?;
    finished?;
    Ok((iv, ciphertext, tag))
}

fn encrypt_with_iv(
    s: &TokenSession,
    key: ObjectHandle,
    mut iv: [u8; IV_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<([u8; IV_LEN], Vec<u8>), HsmError> {
    let ciphertext = {
        let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
        s.session
            .encrypt(&Mechanism::AesGcm(params), key, plaintext)?
    };
    Ok((iv, ciphertext))
}

/// A data key made on the token: its plaintext (absent where the token
/// wrapped it without it ever leaving), the IV and ciphertext||tag.
pub struct DataKey {
    pub plaintext: Option<Zeroizing<Vec<u8>>>,
    pub iv: [u8; IV_LEN],
    pub ciphertext: Vec<u8>,
}

/// Generates `len` random bytes on the token and encrypts them under `key`.
/// With a caller-made IV, key and IV come from one C_GenerateRandom, which
/// is about 30% cheaper than two.
pub fn generate_data_key(
    s: &TokenSession,
    key: MasterKeyVersion,
    iv_source: IvSource,
    aad: &[u8],
    len: usize,
) -> Result<DataKey, HsmError> {
    let mut buf = Zeroizing::new(vec![0u8; len + IV_LEN]);
    let wanted = match iv_source {
        IvSource::Caller => len + IV_LEN,
        IvSource::Token | IvSource::TokenAppended | IvSource::Message => len,
    };
    s.random_into(&mut buf[..wanted])?;
    let mut iv = [0u8; IV_LEN];
    iv.copy_from_slice(&buf[len..]);
    let plaintext = Zeroizing::new(buf[..len].to_vec());
    let (iv, ciphertext) = seal(s, key.handle(s)?, iv_source, iv, aad, &plaintext)?;
    Ok(DataKey {
        plaintext: Some(plaintext),
        iv,
        ciphertext,
    })
}

/// Generates a data key as a session object and wraps it under `key` with
/// C_WrapKey/CKM_AES_GCM, so its plaintext never exists outside the token.
/// Only for tokens that advertise CKF_WRAP for CKM_AES_GCM.
pub fn generate_wrapped_data_key(
    s: &TokenSession,
    key: MasterKeyVersion,
    iv_source: IvSource,
    aad: &[u8],
    len: usize,
) -> Result<DataKey, HsmError> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::ValueLen((len as u64).into()),
        Attribute::Token(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
    ];
    let wrapping_key = key.handle(s)?;
    let data_key = s
        .session
        .generate_key(&Mechanism::GenericSecretKeyGen, &template)?;
    let mut iv = [0u8; IV_LEN];
    let wrapped = (|| {
        if iv_source == IvSource::Caller {
            s.session.generate_random_slice(&mut iv)?;
        }
        let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
        s.session
            .wrap_key(&Mechanism::AesGcm(params), wrapping_key, data_key)
    })();
    // A session object would vanish with the session anyway; destroy it now.
    let _ = s.session.destroy_session_object(data_key);
    if iv_source != IvSource::Caller && wrapped.is_ok() {
        token_chose(&iv)?;
    }
    Ok(DataKey {
        plaintext: None,
        iv,
        ciphertext: wrapped?,
    })
}

/// Decrypts and verifies ciphertext||tag. A tag that does not verify is
/// [`HsmError::BadTag`]; a device fault never is.
///
/// Tokens report a failed tag with CKR_ENCRYPTED_DATA_INVALID (or
/// _LEN_RANGE), but SoftHSM2 reports it with CKR_GENERAL_ERROR, the code
/// other tokens use for a device fault. So on CKR_GENERAL_ERROR the call is
/// tried once more (a passing fault then decrypts), and if it fails again
/// in C_Decrypt (the token took the key and the IV in C_DecryptInit) the
/// session must prove that the token's AES-GCM works ([`gcm_works`], with
/// IVs made as `iv_source` says): only then is it the ciphertext's fault.
/// Otherwise the error stays a token fault (retryable, never
/// InvalidCiphertextException).
pub fn decrypt(
    s: &TokenSession,
    key: MasterKeyVersion,
    iv_source: IvSource,
    iv: &[u8; IV_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    let first = match decrypt_once(s, key, iv, aad, ciphertext) {
        Ok(p) => return Ok(p),
        Err(e) => e,
    };
    match first.rv() {
        Some(RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange) => {
            Err(HsmError::BadTag)
        }
        Some(RvError::GeneralError) => match decrypt_once(s, key, iv, aad, ciphertext) {
            Ok(p) => Ok(p),
            Err(again) if failed_at_the_tag(&again) => {
                if gcm_works(s, iv_source) {
                    Err(HsmError::BadTag)
                } else {
                    Err(again)
                }
            }
            Err(again) => Err(again),
        },
        _ => Err(first),
    }
}

fn decrypt_once(
    s: &TokenSession,
    key: MasterKeyVersion,
    iv: &[u8; IV_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    decrypt_with(s, key.handle(s)?, iv, aad, ciphertext)
}

fn decrypt_with(
    s: &TokenSession,
    key: ObjectHandle,
    iv: &[u8; IV_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    let mut iv = *iv;
    let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
    Ok(Zeroizing::new(s.session.decrypt(
        &Mechanism::AesGcm(params),
        key,
        ciphertext,
    )?))
}

/// CKR_GENERAL_ERROR from C_Decrypt itself, where SoftHSM2 checks the tag;
/// from C_DecryptInit it is the key's or the token's fault.
fn failed_at_the_tag(e: &HsmError) -> bool {
    matches!(
        e,
        HsmError::Pkcs11(cryptoki::error::Error::Pkcs11(
            RvError::GeneralError,
            cryptoki::context::Function::Decrypt
        ))
    )
}

/// Whether the token's AES-GCM works in this session now: 16 random bytes
/// encrypted, with the IV made as `iv_source` says (as for every
/// encryption), and decrypted back. Under a session key the token makes
/// for the probe and destroys after it, never under a key version: a key
/// version's GCM encryptions are counted against the usage bound (DESIGN.md
/// decision 5), and the one that failed to decrypt may be past it.
/// The XKS health check's deep probe (and decrypt's self-test): [`gcm_works`]
/// under a session key made for it, never a customer key.
pub fn gcm_self_test(s: &TokenSession, iv_source: IvSource) -> bool {
    gcm_works(s, iv_source)
}

fn gcm_works(s: &TokenSession, iv_source: IvSource) -> bool {
    const AAD: &[u8] = b"kmsgate decrypt self-test";
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
    ];
    let Ok(key) = s.session.generate_key(&Mechanism::AesKeyGen, &template) else {
        return false;
    };
    let works = random(s, 16).is_ok_and(|plaintext| {
        seal_fresh(s, key, iv_source, AAD, &plaintext).is_ok_and(|(iv, sealed)| {
            matches!(decrypt_with(s, key, &iv, AAD, &sealed), Ok(back) if back == plaintext)
        })
    });
    // A session object would vanish with the session anyway; destroy it now.
    let _ = s.session.destroy_session_object(key);
    works
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_appended_iv_is_split_off_the_output() {
        let mut output = vec![1u8; 5 + TAG_LEN];
        output.extend_from_slice(&[9; IV_LEN]);
        let (iv, sealed) = split_appended(output, 5).unwrap();
        assert_eq!(iv, [9; IV_LEN]);
        assert_eq!(sealed, vec![1u8; 5 + TAG_LEN]);
        // A token that appends nothing (or another IV length) is refused.
        assert!(split_appended(vec![1u8; 5 + TAG_LEN], 5).is_err());
        assert!(split_appended(vec![1u8; 5 + TAG_LEN + 16], 5).is_err());
    }
}
