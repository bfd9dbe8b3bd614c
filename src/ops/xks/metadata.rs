//! GetKeyMetadata: AES_256, the usage the store exposes the key with, and
//! ENABLED or DISABLED. A key pending deletion or import is
//! InvalidStateException; a deleted one KeyNotFoundException.

use std::sync::Arc;

use super::error::{XksError, XksErrorName};
use super::shapes::MetadataResponse;
use crate::config::XksUsage;
use crate::keystore::{Key, KeyState};

pub fn metadata(key: &Arc<Key>, usage: XksUsage) -> Result<MetadataResponse, XksError> {
    let key_status = match key.record.state {
        KeyState::Enabled => "ENABLED",
        KeyState::Disabled => "DISABLED",
        KeyState::PendingDeletion => {
            return Err(XksError::new(
                XksErrorName::InvalidState,
                "The key is pending deletion.",
            ));
        }
        KeyState::PendingImport => {
            return Err(XksError::new(
                XksErrorName::InvalidState,
                "The key is pending import.",
            ));
        }
    };
    let key_usage = match usage {
        XksUsage::EncryptDecrypt => vec!["ENCRYPT", "DECRYPT"],
        XksUsage::Encrypt => vec!["ENCRYPT"],
        XksUsage::Decrypt => vec!["DECRYPT"],
        XksUsage::None => vec![],
    };
    Ok(MetadataResponse {
        key_spec: "AES_256",
        key_usage,
        key_status,
    })
}
