//! RSAES-OAEP (RFC 8017 7.1) with the RSA encryption keys' pairs: the
//! public key encrypts, the private key decrypts, both on the token.
//!
//! The token's own CKM_RSA_PKCS_OAEP is used whenever it takes the hash.
//! SoftHSM2 2.6 takes only SHA-1 (it answers CKR_ARGUMENTS_BAD to any
//! other hash), so for a hash the token refuses the padding is done here
//! and the RSA operation stays on the token (CKM_RSA_X_509). The same raw
//! path checks a block the token's OAEP refused with a bare
//! CKR_GENERAL_ERROR (SoftHSM2's answer to bad padding), so that a bad
//! ciphertext is InvalidCiphertextException and a fault stays a fault.
//! The private key never leaves the token, the seed comes from the token's RNG, and the
//! decoding below treats every malformed block alike, in constant time,
//! so that no caller learns which check failed.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use sha2::Digest;
use subtle::{ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

use super::keypair::public_key_handle;
use super::objects::MasterKeyVersion;
use super::{HsmError, TokenSession};

/// The hash of an RSAES-OAEP encryption (and of its MGF1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OaepHash {
    Sha1,
    Sha256,
}

impl OaepHash {
    fn params(self) -> PkcsOaepParams<'static> {
        let (hash, mgf) = match self {
            OaepHash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
            OaepHash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        };
        PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty())
    }

    fn len(self) -> usize {
        match self {
            OaepHash::Sha1 => 20,
            OaepHash::Sha256 => 32,
        }
    }

    fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            OaepHash::Sha1 => run::<sha1::Sha1>(parts),
            OaepHash::Sha256 => run::<sha2::Sha256>(parts),
        }
    }

    /// MGF1 (RFC 8017 B.2.1): `len` bytes of mask from `seed`.
    fn mgf1(self, seed: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
        let mut mask = Zeroizing::new(Vec::with_capacity(len + self.len()));
        let mut counter: u32 = 0;
        while mask.len() < len {
            mask.extend_from_slice(&self.digest(&[seed, &counter.to_be_bytes()]));
            counter += 1;
        }
        mask.truncate(len);
        mask
    }
}

/// Whether the token refused the OAEP parameters (rather than the data).
fn params_refused(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::ArgumentsBad | RvError::MechanismParamInvalid | RvError::MechanismInvalid,
            _
        )
    )
}

/// The modulus length in bytes of the RSA key `key`.
fn modulus_len(s: &TokenSession, key: ObjectHandle) -> Result<usize, HsmError> {
    let attrs = s.session.get_attributes(key, &[AttributeType::Modulus])?;
    match attrs.first() {
        Some(Attribute::Modulus(m)) => Ok(m.len() - m.iter().take_while(|b| **b == 0).count()),
        _ => Err(HsmError::Unexpected("no CKA_MODULUS on an RSA key")),
    }
}

/// Encrypts `data` (RSAES-OAEP, MGF1 with the same hash, no label) under
/// the public key with this label; the caller checked its length.
pub fn oaep_encrypt(
    s: &TokenSession,
    label: &str,
    hash: OaepHash,
    data: &[u8],
) -> Result<Vec<u8>, HsmError> {
    let h = public_key_handle(s, label)?;
    match s
        .session
        .encrypt(&Mechanism::RsaPkcsOaep(hash.params()), h, data)
    {
        Err(e) if params_refused(&e) => {
            let k = modulus_len(s, h)?;
            let mut seed = Zeroizing::new(vec![0u8; hash.len()]);
            s.random_into(&mut seed)?;
            let em = encode(hash, k, data, &seed)
                .ok_or(HsmError::Unexpected("plaintext too long for OAEP"))?;
            Ok(s.session.encrypt(&Mechanism::RsaX509, h, &em)?)
        }
        r => Ok(r?),
    }
}

/// Decrypts an RSAES-OAEP ciphertext with the private key `key`; `None`
/// when it is no ciphertext of this key and hash.
pub fn oaep_decrypt(
    s: &TokenSession,
    key: MasterKeyVersion,
    hash: OaepHash,
    ciphertext: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>, HsmError> {
    let h = key.handle(s)?;
    let no_ciphertext = |e: &CkError| {
        matches!(
            e,
            CkError::Pkcs11(
                RvError::EncryptedDataInvalid
                    | RvError::EncryptedDataLenRange
                    | RvError::DataInvalid
                    | RvError::DataLenRange,
                _
            )
        )
    };
    match s
        .session
        .decrypt(&Mechanism::RsaPkcsOaep(hash.params()), h, ciphertext)
    {
        Ok(p) => Ok(Some(Zeroizing::new(p))),
        Err(e) if no_ciphertext(&e) => Ok(None),
        // SoftHSM2 answers a block whose padding is wrong with
        // CKR_GENERAL_ERROR, which could also be a fault: the raw path
        // tells the two apart. A token without raw RSA keeps its answer.
        Err(e) if params_refused(&e) || opaque_failure(&e) => {
            let k = modulus_len(s, h)?;
            if ciphertext.len() != k {
                return Ok(None);
            }
            match s.session.decrypt(&Mechanism::RsaX509, h, ciphertext) {
                Ok(em) => {
                    let em = Zeroizing::new(em);
                    Ok(decode(hash, k, &em))
                }
                Err(raw) if no_ciphertext(&raw) => Ok(None),
                Err(raw) if params_refused(&raw) => Err(e.into()),
                Err(raw) => Err(raw.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// An error that says only that the operation failed.
fn opaque_failure(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(RvError::GeneralError | RvError::FunctionFailed, _)
    )
}

/// EME-OAEP encoding (RFC 8017 7.1.1 step 2) of `message` into a block of
/// `k` bytes; `None` when the message is too long.
fn encode(hash: OaepHash, k: usize, message: &[u8], seed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let h = hash.len();
    if seed.len() != h || k < 2 * h + 2 || message.len() > k - 2 * h - 2 {
        return None;
    }
    let mut db = Zeroizing::new(hash.digest(&[]));
    db.resize(k - message.len() - h - 2, 0);
    db.push(1);
    db.extend_from_slice(message);
    for (b, m) in db.iter_mut().zip(hash.mgf1(seed, k - h - 1).iter()) {
        *b ^= m;
    }
    let mut masked_seed = Zeroizing::new(seed.to_vec());
    for (b, m) in masked_seed.iter_mut().zip(hash.mgf1(&db, h).iter()) {
        *b ^= m;
    }
    let mut em = Zeroizing::new(Vec::with_capacity(k));
    em.push(0);
    em.extend_from_slice(&masked_seed);
    em.extend_from_slice(&db);
    Some(em)
}

/// EME-OAEP decoding (RFC 8017 7.1.2 step 3) of a block of `k` bytes. Every
/// check runs whatever the others found, and the answer is only "the
/// message" or `None`.
fn decode(hash: OaepHash, k: usize, em: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let h = hash.len();
    if em.len() != k || k < 2 * h + 2 {
        return None;
    }
    let (masked_seed, masked_db) = em[1..].split_at(h);
    let mut seed = Zeroizing::new(masked_seed.to_vec());
    for (b, m) in seed.iter_mut().zip(hash.mgf1(masked_db, h).iter()) {
        *b ^= m;
    }
    let mut db = Zeroizing::new(masked_db.to_vec());
    for (b, m) in db.iter_mut().zip(hash.mgf1(&seed, k - h - 1).iter()) {
        *b ^= m;
    }
    let mut good = em[0].ct_eq(&0) & db[..h].ct_eq(&hash.digest(&[])[..]);
    // Find the 0x01 after the zero padding without branching on the data.
    let mut looking = subtle::Choice::from(1u8);
    let mut index: u32 = 0;
    for (i, b) in db[h..].iter().enumerate() {
        let one = b.ct_eq(&1);
        let zero = b.ct_eq(&0);
        index.conditional_assign(&(i as u32), looking & one);
        good &= !(looking & !one & !zero);
        looking &= !one;
    }
    good &= !looking;
    if bool::from(good) {
        Some(Zeroizing::new(db[h + index as usize + 1..].to_vec()))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_is_refused_when_altered() {
        for hash in [OaepHash::Sha1, OaepHash::Sha256] {
            let k = 256;
            let seed = vec![0x5a; hash.len()];
            let max = k - 2 * hash.len() - 2;
            for len in [0, 1, max] {
                let m: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let em = encode(hash, k, &m, &seed).unwrap();
                assert_eq!(em.len(), k);
                assert_eq!(decode(hash, k, &em).unwrap().as_slice(), &m[..]);
                for at in [0, 1, hash.len() + 1, k - 1] {
                    let mut bad = em.clone();
                    bad[at] ^= 0x80;
                    assert!(decode(hash, k, &bad).is_none(), "{hash:?} {len} {at}");
                }
            }
            assert!(encode(hash, k, &vec![0; max + 1], &seed).is_none());
        }
        // A SHA-1 block does not decode as SHA-256.
        let em = encode(OaepHash::Sha1, 256, b"m", &[1; 20]).unwrap();
        assert!(decode(OaepHash::Sha256, 256, &em).is_none());
    }

    #[test]
    fn mgf1_matches_rfc_8017() {
        // MGF1-SHA1("foo", 3) = 1a c9 07 (the test vector of the PKCS#1 v2.1
        // test suite's mgf1 example).
        assert_eq!(
            OaepHash::Sha1.mgf1(b"foo", 3).as_slice(),
            &[0x1a, 0xc9, 0x07]
        );
        assert_eq!(OaepHash::Sha1.mgf1(b"foo", 50).len(), 50);
    }
}
