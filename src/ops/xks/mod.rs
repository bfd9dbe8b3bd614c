//! The XKS proxy API (AWS KMS external key stores, DESIGN.md decision 17):
//! its four operations on kmsgate's own symmetric keys, as the spec
//! (aws/aws-kms-xksproxy-api-spec v1.0.3) defines them.
//!
//! * [`store`]: the logical key stores of `[xks]`, the keys each exposes,
//!   and the routing of a path to a store and an operation;
//! * [`shapes`]: the requests and answers, and the validation of members;
//! * [`error`]: the spec's error table;
//! * one file per operation: [`metadata`], [`encrypt`], [`decrypt`],
//!   [`health`].
//!
//! The wire layer (`http::xks`) routes, reads the body and authenticates;
//! then [`parse`] validates the request (ValidationException), the wire
//! layer authorizes and throttles with the request's metadata, and
//! [`execute`] looks the key up (KeyNotFoundException), checks its state
//! and the store's usage for it, and runs the operation.

pub mod decrypt;
pub mod encrypt;
pub mod error;
pub mod health;
pub mod metadata;
pub mod shapes;
pub mod store;

use std::sync::Arc;

use uuid::Uuid;

use crate::config::XksUsage;
use crate::keystore::{Key, KeyStore};
pub use error::{XksError, XksErrorName};
pub use health::HealthCheck;
use shapes::{
    DecryptRequest, EncryptRequest, MetadataOnly, RequestMetadata, check_algorithm, check_metadata,
    decode, required,
};
pub use store::{Route, XksOperation, XksStore, XksStores};

/// What an operation needs besides its request.
pub struct XksCtx<'a> {
    pub keys: &'a KeyStore,
    pub store: &'a XksStore,
    pub health: &'a HealthCheck,
    /// `xksProxyFleetSize`: the gateway's worker processes.
    pub fleet_size: usize,
}

/// What a request's handling learned for its audit record.
#[derive(Debug, Default, Clone)]
pub struct XksTrail {
    pub key_id: Option<Uuid>,
    pub key_arn: Option<String>,
    pub key_version: Option<u32>,
}

/// A validated request.
pub struct XksRequest {
    pub metadata: RequestMetadata,
    body: Body,
}

enum Body {
    None,
    Encrypt(encrypt::Encrypt),
    Decrypt(decrypt::Decrypt),
}

/// The `requestMetadata` of a body, as far as it parses (for the audit
/// record of a request refused before or while it is validated).
pub fn metadata_of(body: &[u8]) -> Option<RequestMetadata> {
    serde_json::from_slice::<MetadataOnly>(body)
        .ok()?
        .request_metadata
}

/// Parses and validates the body of an `op` request.
pub fn parse(op: XksOperation, body: &[u8]) -> Result<XksRequest, XksError> {
    match op {
        XksOperation::Metadata | XksOperation::Health => {
            let req: MetadataOnly = shapes::parse(body)?;
            let health = op == XksOperation::Health;
            check_metadata(req.request_metadata.as_ref(), false, health)?;
            Ok(XksRequest {
                metadata: req.request_metadata.unwrap_or_default(),
                body: Body::None,
            })
        }
        XksOperation::Encrypt => {
            let mut req: EncryptRequest = shapes::parse(body)?;
            let plaintext = req.plaintext.take().map(zeroize::Zeroizing::new);
            check_metadata(req.request_metadata.as_ref(), true, false)?;
            let plaintext = required(plaintext.as_deref(), "plaintext")?;
            let plaintext = shapes::decode_secret(plaintext, "plaintext")?;
            check_algorithm(req.encryption_algorithm.as_deref())?;
            let integrity = match req.ciphertext_data_integrity_value_algorithm.as_deref() {
                None => false,
                Some("SHA_256") => true,
                Some(_) => {
                    return Err(XksError::validation(
                        "ciphertextDataIntegrityValueAlgorithm must be SHA_256.",
                    ));
                }
            };
            let aad = shapes::aad(req.additional_authenticated_data.as_deref())?;
            Ok(XksRequest {
                metadata: req.request_metadata.unwrap_or_default(),
                body: Body::Encrypt(encrypt::Encrypt {
                    plaintext,
                    aad,
                    integrity,
                }),
            })
        }
        XksOperation::Decrypt => {
            let req: DecryptRequest = shapes::parse(body)?;
            check_metadata(req.request_metadata.as_ref(), true, false)?;
            let ciphertext = decode(
                required(req.ciphertext.as_deref(), "ciphertext")?,
                "ciphertext",
            )?;
            check_algorithm(req.encryption_algorithm.as_deref())?;
            let iv = decode(
                required(req.initialization_vector.as_deref(), "initializationVector")?,
                "initializationVector",
            )?;
            if iv.len() != 12 && iv.len() != 16 {
                return Err(XksError::validation(
                    "initializationVector must be 12 or 16 bytes.",
                ));
            }
            let tag = decode(
                required(req.authentication_tag.as_deref(), "authenticationTag")?,
                "authenticationTag",
            )?;
            if tag.len() != 16 {
                return Err(XksError::validation("authenticationTag must be 16 bytes."));
            }
            let metadata = match req.ciphertext_metadata.as_deref() {
                Some(m) => Some(decode(m, "ciphertextMetadata")?),
                None => None,
            };
            if metadata
                .as_ref()
                .is_some_and(|m| m.len() > shapes::MAX_METADATA)
            {
                return Err(XksError::validation(
                    "ciphertextMetadata must be at most 20 bytes.",
                ));
            }
            let aad = shapes::aad(req.additional_authenticated_data.as_deref())?;
            Ok(XksRequest {
                metadata: req.request_metadata.unwrap_or_default(),
                body: Body::Decrypt(decrypt::Decrypt {
                    ciphertext,
                    metadata,
                    aad,
                    iv,
                    tag,
                }),
            })
        }
    }
}

/// Runs a validated request: the answer's body (zeroizing: a decrypt's
/// holds the plaintext).
pub async fn execute(
    ctx: &XksCtx<'_>,
    op: XksOperation,
    external_key_id: Option<&str>,
    request: XksRequest,
    trail: &mut XksTrail,
) -> Result<zeroize::Zeroizing<Vec<u8>>, XksError> {
    if op == XksOperation::Health {
        let answer = health::health(ctx.keys, ctx.health, ctx.fleet_size).await?;
        return json(&answer);
    }
    let (key, usage) = exposed_key(ctx, external_key_id, trail).await?;
    match (op, request.body) {
        (XksOperation::Metadata, _) => json(&metadata::metadata(&key, usage)?),
        (XksOperation::Encrypt, Body::Encrypt(req)) => {
            usable(ctx, &key)?;
            if !matches!(usage, XksUsage::EncryptDecrypt | XksUsage::Encrypt) {
                return Err(usage_refused("encrypt"));
            }
            let can_decrypt = usage == XksUsage::EncryptDecrypt;
            let (answer, version) = encrypt::encrypt(ctx.keys, &key, can_decrypt, req).await?;
            trail.key_version = Some(version);
            json(&answer)
        }
        (XksOperation::Decrypt, Body::Decrypt(req)) => {
            usable(ctx, &key)?;
            if !matches!(usage, XksUsage::EncryptDecrypt | XksUsage::Decrypt) {
                return Err(usage_refused("decrypt"));
            }
            let (body, version) = decrypt::decrypt(ctx.keys, &key, req).await?;
            trail.key_version = Some(version);
            Ok(body)
        }
        _ => Err(XksError::new(
            XksErrorName::Internal,
            "The request does not match its operation.",
        )),
    }
}

/// The key the store exposes as `external_key_id`: KeyNotFoundException
/// if the store exposes none by that id, or its kmsgate key is gone.
async fn exposed_key(
    ctx: &XksCtx<'_>,
    external_key_id: Option<&str>,
    trail: &mut XksTrail,
) -> Result<(Arc<Key>, XksUsage), XksError> {
    let not_found = || {
        XksError::new(
            XksErrorName::KeyNotFound,
            "The key store exposes no external key by this id.",
        )
    };
    let exposed = external_key_id
        .and_then(|id| ctx.store.exposed(id))
        .ok_or_else(not_found)?;
    let key = ctx.keys.xks_key(&exposed.key).await?;
    trail.key_id = Some(*key.id());
    trail.key_arn = Some(ctx.keys.realm().key_arn(key.id()));
    Ok((key, exposed.usage))
}

/// Encrypt and decrypt need the key Enabled: InvalidStateException
/// otherwise.
fn usable(ctx: &XksCtx<'_>, key: &Key) -> Result<(), XksError> {
    key.check_usable(ctx.keys.realm()).map_err(XksError::from)
}

fn usage_refused(what: &str) -> XksError {
    XksError::new(
        XksErrorName::InvalidKeyUsage,
        format!("The key store does not allow this external key to {what}."),
    )
}

fn json<T: serde::Serialize>(value: &T) -> Result<zeroize::Zeroizing<Vec<u8>>, XksError> {
    serde_json::to_vec(value)
        .map(zeroize::Zeroizing::new)
        .map_err(|_| XksError::new(XksErrorName::Internal, "The answer did not serialise."))
}
