//! What can go wrong in the key store.
//!
//! A [`StoreError`] says what happened, with the data a message needs (the
//! ARN of the key, the label of a record), never the message itself: the
//! exception name, status and text a client sees are decided in the
//! crate's `error` module, which converts a `StoreError` with `From`. Token
//! failures keep their [`HsmError`], and so its class
//! ([`crate::hsm::Fault`]), which decides how they are reported; they are
//! logged here, with their details, when the key store meets them
//! (`token`).

use crate::arn::KeyRefError;
use crate::hsm::{Fault, HsmError};

/// What can go wrong in the key store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A KeyId parameter that cannot name a key of this realm.
    #[error(transparent)]
    KeyRef(#[from] KeyRefError),
    /// A well-formed key id that no key has (a healthy listing says so).
    #[error("no key {arn}")]
    KeyNotFound { arn: String },
    /// An alias name that no alias has.
    #[error("no alias {arn}")]
    AliasNotFound { arn: String },
    /// Creating an alias whose name is taken.
    #[error("alias {arn} exists")]
    AliasExists { arn: String },
    /// The key is Disabled; cryptography and rotation settings need Enabled.
    #[error("key {arn} is disabled")]
    Disabled { arn: String },
    /// The key is PendingDeletion; cryptography and rotation settings need
    /// Enabled.
    #[error("key {arn} is pending deletion")]
    PendingDeletion { arn: String },
    /// The key is an EXTERNAL key with no key material.
    #[error("key {arn} is pending import")]
    PendingImport { arn: String },
    /// An import operation on a key whose origin does not allow it (or a
    /// generation-only operation on an EXTERNAL key).
    #[error("key {arn} has origin {origin}")]
    WrongOrigin { arn: String, origin: &'static str },
    /// An import token that is not the key's latest (forged, altered,
    /// another key's, superseded or used).
    #[error("invalid import token")]
    InvalidImportToken,
    /// The key's latest import token, past its validity.
    #[error("expired import token")]
    ExpiredImportToken,
    /// Imported material that is not the material first imported.
    #[error("not the key's material")]
    IncorrectKeyMaterial,
    /// Wrapped material that does not unwrap under the wrapping key.
    #[error("wrapped key material does not unwrap")]
    MaterialUndecryptable,
    /// Wrapped material whose size cannot fit the wrapping key.
    #[error("encrypted key material of the wrong size")]
    EncryptedKeySize,
    /// Unwrapped material of the wrong length for the key spec.
    #[error("key material of the wrong length for {key_spec}")]
    MaterialWrongLength { key_spec: &'static str },
    /// Unwrapped material that is not a private key of the key's type and
    /// size or curve.
    #[error("key material is no {key_spec} private key")]
    MaterialWrongKey { key_spec: &'static str },
    /// Import to a key that has material already.
    #[error("key {arn} already has key material")]
    MaterialPresent { arn: String },
    /// What the token (or kmsgate) lacks to import this material.
    #[error("import not supported: {0}")]
    ImportUnsupported(&'static str),
    /// An imported key's primary version has made as many GCM encryptions
    /// as the bound allows, and imported material is never replaced by
    /// material the token makes.
    #[error("key {arn} has reached its GCM usage bound")]
    UsageLimit { arn: String },
    /// The key has had all the on-demand rotations the policy allows.
    #[error("key {arn} has no on-demand rotations left")]
    OnDemandRotationLimit { arn: String },
    /// The key's primary version has no object on the token.
    #[error("key {arn}: primary version missing on the token")]
    PrimaryVersionMissing { arn: String },
    /// A ciphertext names a version its key has never had.
    #[error("the key has no version the ciphertext names")]
    NoSuchVersion,
    /// Only revisions that do not parse are on the token under this label:
    /// the record is unavailable, never "not found".
    #[error("only unreadable revisions of {label} are on the token")]
    Unreadable { label: String },
    /// The latest revision under `label` is a record this build does not
    /// fully understand ([`super::record::Foreign`]: a newer format, an
    /// unknown field or value): nothing reads its content and nothing
    /// rewrites it. Retryable: an upgraded gateway serves it.
    #[error("record {label} is of format {format} or holds what this build does not understand")]
    Foreign { label: String, format: u32 },
    /// Another gateway kept changing the record; every attempt yielded.
    #[error("concurrent changes by another gateway; gave up")]
    Conflict,
    /// GCM encryptions could not be reserved for the key (the budget was
    /// taken by others every time).
    #[error("could not reserve GCM encryptions")]
    UsageNotReserved,
    /// The token failed; its class decides what the client is told.
    #[error("token: {0}")]
    Token(#[source] HsmError),
    /// A lock of the cache was poisoned by a panic.
    #[error("a key store lock is poisoned")]
    LockPoisoned,
    /// A bug of ours (a record that does not serialise, an inconsistent
    /// record). The text is ours, not AWS's.
    #[error("{0}")]
    Internal(String),
}

/// A token failure met by the key store: logged here, by its class, with
/// its details (a client sees only the class), then carried up.
pub(crate) fn token(e: HsmError) -> StoreError {
    match e.fault() {
        Fault::Busy => {}
        Fault::Timeout => tracing::warn!(error = %e, "token deadline passed"),
        Fault::BadInput if matches!(e, HsmError::BadTag) => {}
        Fault::Retryable | Fault::Fatal | Fault::StaleHandle => {
            tracing::error!(error = %e, "token unavailable");
        }
        Fault::NotDurable => {
            tracing::error!(error = %e, "write not confirmed; nothing was changed");
        }
        Fault::BadInput | Fault::Setup => tracing::error!(error = %e, "token operation failed"),
    }
    StoreError::Token(e)
}

/// A record the token holds but that does not parse, with no valid revision
/// beside it.
pub(crate) fn unreadable(label: &str) -> StoreError {
    tracing::error!(%label, "only unreadable revisions of this record are on the token");
    StoreError::Unreadable {
        label: label.to_owned(),
    }
}

pub(crate) fn lock_poisoned<T>(_: T) -> StoreError {
    StoreError::LockPoisoned
}
