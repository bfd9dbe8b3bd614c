//! ECDH on the token: C_DeriveKey with CKM_ECDH1_DERIVE (no KDF) from a key
//! agreement key's private half and the peer's public point. The raw
//! shared secret (the x-coordinate, as long as the curve's field) lands in
//! a session object that is not sensitive, is read once, and is destroyed
//! before the session goes back to the pool: DeriveSharedSecret returns
//! exactly that secret, as AWS does. For the NIST curves the cofactor is 1,
//! so this is also the cofactor Diffie-Hellman primitive AWS names.

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use zeroize::Zeroizing;

use super::objects::MasterKeyVersion;
use super::{HsmError, TokenSession};

/// Derives the shared secret of the private key `key` and the peer's
/// uncompressed point `peer` (checked by the caller to be on the key's
/// curve); `len` is the curve's field length in bytes.
pub fn derive_shared_secret(
    s: &TokenSession,
    key: MasterKeyVersion,
    peer: &[u8],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    let params = Ecdh1DeriveParams::new(EcKdf::null(), peer);
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::ValueLen((len as u64).into()),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ];
    let secret =
        s.session
            .derive_key(&Mechanism::Ecdh1Derive(params), key.handle(s)?, &template)?;
    let value = s.session.get_attributes(secret, &[AttributeType::Value]);
    // The session object goes whatever the read gave.
    let destroyed = s.session.destroy_object(secret);
    let value = match value?.into_iter().next() {
        Some(Attribute::Value(v)) => Zeroizing::new(v),
        _ => return Err(HsmError::Unexpected("no CKA_VALUE on a derived secret")),
    };
    destroyed?;
    if value.len() != len {
        return Err(HsmError::Unexpected("derived secret of the wrong length"));
    }
    Ok(value)
}
