//! Token objects: master key versions and kmsgate's data objects.
//!
//! A master key version is an AES-256 secret key (or, for an HMAC key, a
//! generic secret that can only sign and verify) generated on the token as
//! `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE` and not `CKA_EXTRACTABLE`:
//! nothing, kmsgate included, can read its value or wrap it out. Everything
//! else kmsgate keeps (key metadata, aliases) is a private `CKO_DATA` object
//! whose `CKA_APPLICATION` is [`APPLICATION`], so the token is the only state
//! and a backup of the token is a backup of everything (DESIGN.md decision 3).

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};

use super::{HsmError, TokenSession};

/// `CKA_APPLICATION` of every data object kmsgate owns.
pub const APPLICATION: &[u8] = b"kmsgate";

/// A handle to one master key version on the token. Only this module makes
/// them, so a data object's handle can never be passed where a key belongs.
///
/// Handles carry the generation of the library initialisation they were
/// found in ([`super::pool`]): after a re-initialisation the same number may
/// name another object, so a handle is refused in any other generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasterKeyVersion(ObjectHandle, u64);

impl MasterKeyVersion {
    /// A key object found or made in `generation` ([`super::keypair`]).
    pub(super) fn new(handle: ObjectHandle, generation: u64) -> MasterKeyVersion {
        MasterKeyVersion(handle, generation)
    }

    /// The handle, if it belongs to `s`'s generation.
    pub(super) fn handle(self, s: &TokenSession) -> Result<ObjectHandle, HsmError> {
        s.check(self.1)?;
        Ok(self.0)
    }
}

/// A handle to one of kmsgate's data objects.
/// Like [`MasterKeyVersion`], it carries its generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHandle(ObjectHandle, u64);

impl DataHandle {
    fn handle(self, s: &TokenSession) -> Result<ObjectHandle, HsmError> {
        s.check(self.1)?;
        Ok(self.0)
    }

    /// Whether it was found or made in `s`'s generation: only then can it
    /// be compared with the handles a listing through `s` gives.
    pub fn is_current(self, s: &TokenSession) -> bool {
        self.1 == s.generation
    }
}

impl std::hash::Hash for DataHandle {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.handle().hash(state);
        self.1.hash(state);
    }
}

/// A data object as read from the token.
#[derive(Debug, Clone)]
pub struct DataObject {
    pub handle: DataHandle,
    pub label: String,
    pub value: Vec<u8>,
}

/// Generates a new AES-256 master key version on the token.
/// `wrap` sets CKA_WRAP, needed only where data keys are made by C_WrapKey.
pub fn generate_master_key(
    s: &TokenSession,
    label: &str,
    id: &[u8],
    wrap: bool,
) -> Result<MasterKeyVersion, HsmError> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(wrap),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    let handle = s.session.generate_key(&Mechanism::AesKeyGen, &template)?;
    Ok(MasterKeyVersion(handle, s.generation))
}

/// Generates an HMAC key of `len` bytes on the token: a generic secret
/// that can sign and verify (CKM_SHA*_HMAC) and do nothing else.
pub fn generate_hmac_key(
    s: &TokenSession,
    label: &str,
    id: &[u8],
    len: usize,
) -> Result<MasterKeyVersion, HsmError> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::ValueLen((len as u64).into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(true),
        Attribute::Verify(true),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    let handle = s
        .session
        .generate_key(&Mechanism::GenericSecretKeyGen, &template)?;
    Ok(MasterKeyVersion(handle, s.generation))
}

/// The classes of the objects that are key versions: secret keys (AES,
/// HMAC) and the private halves of signing key pairs ([`super::keypair`]).
const KEY_CLASSES: [ObjectClass; 2] = [ObjectClass::SECRET_KEY, ObjectClass::PRIVATE_KEY];

/// Finds a master key version by its label.
pub fn find_master_key(
    s: &TokenSession,
    label: &str,
) -> Result<Option<MasterKeyVersion>, HsmError> {
    for class in KEY_CLASSES {
        let template = [
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        if let Some(h) = s.session.find_objects(&template)?.first() {
            return Ok(Some(MasterKeyVersion(*h, s.generation)));
        }
    }
    Ok(None)
}

/// The protection attributes of a master key version, as the token reports
/// them: (CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_NEVER_EXTRACTABLE).
pub fn key_protection(
    s: &TokenSession,
    key: MasterKeyVersion,
) -> Result<(bool, bool, bool), HsmError> {
    let attrs = s.session.get_attributes(
        key.handle(s)?,
        &[
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::NeverExtractable,
        ],
    )?;
    let (mut sensitive, mut extractable, mut never) = (false, true, false);
    for a in attrs {
        match a {
            Attribute::Sensitive(v) => sensitive = v,
            Attribute::Extractable(v) => extractable = v,
            Attribute::NeverExtractable(v) => never = v,
            _ => {}
        }
    }
    Ok((sensitive, extractable, never))
}

/// Tries to read CKA_VALUE of a master key version. On a correctly made key
/// this always fails (CKR_ATTRIBUTE_SENSITIVE, or the attribute missing);
/// it exists so that a test can prove it.
pub fn try_read_key_value(
    s: &TokenSession,
    key: MasterKeyVersion,
) -> Result<Option<Vec<u8>>, HsmError> {
    // CKA_VALUE is a secret key's value and an EC private key's scalar;
    // CKA_PRIVATE_EXPONENT is an RSA private key's secret.
    let attrs = s.session.get_attributes(
        key.handle(s)?,
        &[AttributeType::Value, AttributeType::PrivateExponent],
    )?;
    Ok(attrs.into_iter().find_map(|a| match a {
        Attribute::Value(v) | Attribute::PrivateExponent(v) => Some(v),
        _ => None,
    }))
}

/// Destroys a master key version: its ciphertexts are gone for good. The
/// private key of a signing pair takes its public key (same label) along.
pub fn destroy_master_key(s: &TokenSession, key: MasterKeyVersion) -> Result<(), HsmError> {
    let handle = key.handle(s)?;
    let attrs = s
        .session
        .get_attributes(handle, &[AttributeType::Class, AttributeType::Label])?;
    let (mut private, mut label) = (false, None);
    for a in attrs {
        match a {
            Attribute::Class(c) => private = c == ObjectClass::PRIVATE_KEY,
            Attribute::Label(l) => label = Some(String::from_utf8_lossy(&l).into_owned()),
            _ => {}
        }
    }
    s.session.destroy_object(handle)?;
    if private && let Some(label) = label {
        super::keypair::destroy_public_keys(s, &label)?;
    }
    Ok(())
}

fn data_template(label: Option<&str>) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Application(APPLICATION.to_vec()),
    ];
    if let Some(label) = label {
        t.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    t
}

/// Creates a private data object owned by kmsgate.
pub fn create_data(s: &TokenSession, label: &str, value: &[u8]) -> Result<DataHandle, HsmError> {
    let mut template = data_template(Some(label));
    template.extend([
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Modifiable(true),
        Attribute::Value(value.to_vec()),
    ]);
    Ok(DataHandle(
        s.session.create_object(&template)?,
        s.generation,
    ))
}

/// Replaces a data object: creates the new one, then destroys the old.
///
/// Tokens need not let CKA_VALUE change (SoftHSM2 answers
/// CKR_ATTRIBUTE_READ_ONLY), so a record is never modified in place. The
/// caller's records carry a revision number: a crash between the two steps
/// leaves both objects, and readers take the higher revision.
pub fn replace_data(
    s: &TokenSession,
    old: DataHandle,
    label: &str,
    value: &[u8],
) -> Result<DataHandle, HsmError> {
    let new = create_data(s, label, value)?;
    if let Err(e) = s.session.destroy_object(old.handle(s)?) {
        tracing::warn!(label, error = %e, "superseded data object not destroyed; readers skip it");
    }
    Ok(new)
}

pub fn destroy_data(s: &TokenSession, handle: DataHandle) -> Result<(), HsmError> {
    Ok(s.session.destroy_object(handle.handle(s)?)?)
}

/// Reads kmsgate's data objects: all of them, or those with one label.
pub fn read_data(s: &TokenSession, label: Option<&str>) -> Result<Vec<DataObject>, HsmError> {
    let handles = s.session.find_objects(&data_template(label))?;
    read_data_objects(
        s,
        &handles
            .into_iter()
            .map(|h| DataHandle(h, s.generation))
            .collect::<Vec<_>>(),
    )
}

/// The handles of all of kmsgate's data objects, without reading them: one
/// C_FindObjects, cheap enough to poll for changes made by other gateways.
pub fn data_handles(s: &TokenSession) -> Result<Vec<DataHandle>, HsmError> {
    Ok(s.session
        .find_objects(&data_template(None))?
        .into_iter()
        .map(|h| DataHandle(h, s.generation))
        .collect())
}

/// The answer of a read of an object listed a moment ago: `None` if the
/// object was destroyed since (another gateway replaced or deleted it).
fn unless_destroyed<T>(read: cryptoki::error::Result<T>) -> Result<Option<T>, HsmError> {
    match read {
        Ok(v) => Ok(Some(v)),
        Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::ObjectHandleInvalid, _)) => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads the label and value of data objects. One that vanished meanwhile
/// (another gateway replaced it) is skipped.
pub fn read_data_objects(
    s: &TokenSession,
    handles: &[DataHandle],
) -> Result<Vec<DataObject>, HsmError> {
    let mut out = Vec::with_capacity(handles.len());
    for &handle in handles {
        let Some(attrs) = unless_destroyed(s.session.get_attributes(
            handle.handle(s)?,
            &[AttributeType::Label, AttributeType::Value],
        ))?
        else {
            continue;
        };
        let mut label = String::new();
        let mut value = Vec::new();
        for a in attrs {
            match a {
                Attribute::Label(l) => label = String::from_utf8_lossy(&l).into_owned(),
                Attribute::Value(v) => value = v,
                _ => {}
            }
        }
        out.push(DataObject {
            handle,
            label,
            value,
        });
    }
    Ok(out)
}

/// Every secret and private key on the token with its label, read in one
/// search per class: one C_FindObjects for all keys beats one per key when
/// thousands exist. `prove` runs right after each search: a search that
/// cannot prove itself (the caller's proof fails) fails the listing.
pub fn list_master_keys(
    s: &TokenSession,
    prove: impl Fn(&TokenSession) -> Result<(), HsmError>,
) -> Result<Vec<(String, MasterKeyVersion)>, HsmError> {
    let mut handles = Vec::new();
    for class in KEY_CLASSES {
        handles.extend(s.session.find_objects(&[Attribute::Class(class)])?);
        prove(s)?;
    }
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        let Some(attrs) =
            unless_destroyed(s.session.get_attributes(handle, &[AttributeType::Label]))?
        else {
            continue;
        };
        for a in attrs {
            if let Attribute::Label(l) = a {
                out.push((
                    String::from_utf8_lossy(&l).into_owned(),
                    MasterKeyVersion(handle, s.generation),
                ));
            }
        }
    }
    Ok(out)
}

/// Tries to wrap a master key version out of the token under a fresh
/// session key (CKM_AES_KEY_WRAP). Answers `Ok(true)` if the token let it
/// out, which must never happen; the refusal is what the custody check
/// wants to see.
pub fn try_wrap_out(s: &TokenSession, key: MasterKeyVersion) -> Result<bool, HsmError> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(false),
        Attribute::Wrap(true),
    ];
    let kek = s.session.generate_key(&Mechanism::AesKeyGen, &template)?;
    let result = s
        .session
        .wrap_key(&Mechanism::AesKeyWrap, kek, key.handle(s)?);
    let _ = s.session.destroy_session_object(kek);
    match result {
        Ok(_) => Ok(true),
        Err(cryptoki::error::Error::Pkcs11(
            // SoftHSM2 answers the first; Kryoptic 1.5 the last.
            cryptoki::error::RvError::KeyUnextractable
            | cryptoki::error::RvError::KeyNotWrappable
            | cryptoki::error::RvError::KeyFunctionNotPermitted,
            _,
        )) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// `CKA_APPLICATION` of the change marker: a data object whose label every
/// gateway changes after each write, so that the others can notice changes
/// by reading one attribute instead of listing every object.
pub const MARKER_APPLICATION: &[u8] = b"kmsgate/changes";

fn marker_template() -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Application(MARKER_APPLICATION.to_vec()),
    ]
}

/// The change markers on the token (normally one).
pub fn find_markers(s: &TokenSession) -> Result<Vec<DataHandle>, HsmError> {
    Ok(s.session
        .find_objects(&marker_template())?
        .into_iter()
        .map(|h| DataHandle(h, s.generation))
        .collect())
}

pub fn create_marker(s: &TokenSession, label: &str) -> Result<DataHandle, HsmError> {
    let mut template = marker_template();
    template.extend([
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Modifiable(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Value(b"kmsgate change marker".to_vec()),
    ]);
    Ok(DataHandle(
        s.session.create_object(&template)?,
        s.generation,
    ))
}

/// A data object's label; `None` if the object is gone.
pub fn read_label(s: &TokenSession, handle: DataHandle) -> Result<Option<String>, HsmError> {
    match s
        .session
        .get_attributes(handle.handle(s)?, &[AttributeType::Label])
    {
        Ok(attrs) => Ok(attrs.into_iter().find_map(|a| match a {
            Attribute::Label(l) => Some(String::from_utf8_lossy(&l).into_owned()),
            _ => None,
        })),
        Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::ObjectHandleInvalid, _)) => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Changes a data object's label in place (CKA_LABEL is modifiable where
/// CKA_VALUE is not).
pub fn set_label(s: &TokenSession, handle: DataHandle, label: &str) -> Result<(), HsmError> {
    Ok(s.session.update_attributes(
        handle.handle(s)?,
        &[Attribute::Label(label.as_bytes().to_vec())],
    )?)
}
