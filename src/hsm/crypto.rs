//! AES-GCM and random bytes, on the token.
//!
//! Every GCM operation here takes additional authenticated data from the
//! caller, and the callers always pass the blob header, so it is never empty
//! (SoftHSM2 aborts on empty AAD in assertion-enabled builds: SoftHSMv2 issue
//! 605). How the IV is made is the token's capability (DESIGN.md decision 5):
//! with [`IvSource::Caller`] the IV is 12 bytes from the token's RNG; with
//! [`IvSource::Token`] the token writes the IV it chose back into the
//! parameter block. Either way the IV returned is the one actually used.

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::Session;
use zeroize::Zeroizing;

use super::HsmError;
use super::objects::MasterKeyVersion;
use crate::config::IvSource;

pub const IV_LEN: usize = 12;
const TAG_BITS: u64 = 128;

/// Bytes from the token's RNG.
pub fn random(session: &Session, len: usize) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    let mut out = Zeroizing::new(vec![0u8; len]);
    session.generate_random_slice(&mut out)?;
    Ok(out)
}

/// Encrypts `plaintext` under `key` with AES-GCM; returns (IV, ciphertext||tag).
pub fn encrypt(
    session: &Session,
    key: MasterKeyVersion,
    iv_source: IvSource,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<([u8; IV_LEN], Vec<u8>), HsmError> {
    let mut iv = [0u8; IV_LEN];
    if iv_source == IvSource::Caller {
        session.generate_random_slice(&mut iv)?;
    }
    encrypt_with_iv(session, key, iv, aad, plaintext)
}

fn encrypt_with_iv(
    session: &Session,
    key: MasterKeyVersion,
    mut iv: [u8; IV_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<([u8; IV_LEN], Vec<u8>), HsmError> {
    let ciphertext = {
        let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
        session.encrypt(&Mechanism::AesGcm(params), key.handle(), plaintext)?
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
    session: &Session,
    key: MasterKeyVersion,
    iv_source: IvSource,
    aad: &[u8],
    len: usize,
) -> Result<DataKey, HsmError> {
    let mut buf = Zeroizing::new(vec![0u8; len + IV_LEN]);
    let wanted = match iv_source {
        IvSource::Caller => len + IV_LEN,
        IvSource::Token => len,
    };
    session.generate_random_slice(&mut buf[..wanted])?;
    let mut iv = [0u8; IV_LEN];
    iv.copy_from_slice(&buf[len..]);
    let plaintext = Zeroizing::new(buf[..len].to_vec());
    let (iv, ciphertext) = encrypt_with_iv(session, key, iv, aad, &plaintext)?;
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
    session: &Session,
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
    let data_key = session.generate_key(&Mechanism::GenericSecretKeyGen, &template)?;
    let mut iv = [0u8; IV_LEN];
    let wrapped = (|| {
        if iv_source == IvSource::Caller {
            session.generate_random_slice(&mut iv)?;
        }
        let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
        session.wrap_key(&Mechanism::AesGcm(params), key.handle(), data_key)
    })();
    // A session object would vanish with the session anyway; destroy it now.
    let _ = session.destroy_object(data_key);
    Ok(DataKey {
        plaintext: None,
        iv,
        ciphertext: wrapped?,
    })
}

/// Decrypts and verifies ciphertext||tag. A tag that does not verify is
/// [`HsmError::BadTag`], whatever code the token chose to report it with.
pub fn decrypt(
    session: &Session,
    key: MasterKeyVersion,
    iv: &[u8; IV_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    let mut iv = *iv;
    let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
    match session.decrypt(&Mechanism::AesGcm(params), key.handle(), ciphertext) {
        Ok(p) => Ok(Zeroizing::new(p)),
        Err(e) => {
            let e = HsmError::from(e);
            match e.rv() {
                // SoftHSM2 reports a failed tag check as CKR_GENERAL_ERROR at
                // C_Decrypt; other tokens use the ENCRYPTED_DATA codes.
                Some(
                    RvError::EncryptedDataInvalid
                    | RvError::EncryptedDataLenRange
                    | RvError::GeneralError,
                ) => Err(HsmError::BadTag),
                _ => Err(e),
            }
        }
    }
}
