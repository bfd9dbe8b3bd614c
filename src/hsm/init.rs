//! Token initialisation (`kmsgate init-token`): what `softhsm2-util
//! --init-token` does, with the PINs handed over in memory instead of on a
//! command line, where every user of the machine can read them in /proc.
//!
//! The library is loaded and initialised (with `CKF_OS_LOCKING_OK`) for this
//! one job and finalised before [`init_token`] returns, on every path.
//! A token that already carries the label is never touched: it may hold keys,
//! and C_InitToken would destroy them.

use std::path::Path;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::UserType;
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use secrecy::{ExposeSecret, SecretString};

use super::HsmError;

/// PKCS#11 token labels are 32 bytes, padded with spaces.
const MAX_LABEL_BYTES: usize = 32;

/// The token [`init_token`] initialised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitializedToken {
    pub label: String,
    /// Tokens are found by label; the serial number tells two tokens with
    /// one label apart. (The slot id is no use to anyone else: SoftHSM2
    /// gives an initialised token a new slot id in the next process.)
    pub serial_number: String,
}

/// Initialises a free token of the PKCS#11 module at `module` with `label`
/// and the security officer's PIN `so_pin`, then sets its user PIN to
/// `user_pin`. Refuses if a token labelled `label` exists already.
pub fn init_token(
    module: &Path,
    label: &str,
    so_pin: &SecretString,
    user_pin: &SecretString,
) -> Result<InitializedToken, HsmError> {
    check_label(label)?;
    if so_pin.expose_secret().is_empty() || user_pin.expose_secret().is_empty() {
        return Err(HsmError::Setup("a PIN must not be empty".into()));
    }
    let pkcs11 = Pkcs11::new(module).map_err(|e| {
        HsmError::Setup(format!(
            "cannot load the PKCS#11 module {}: {e}",
            module.display()
        ))
    })?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(e.into()),
    }
    // Every session `initialize` opens is closed when it returns; only then
    // is the library finalised.
    let result = initialize(&pkcs11, label, so_pin, user_pin);
    if let Err(e) = pkcs11.finalize() {
        tracing::warn!(error = %e, "C_Finalize failed");
    }
    result
}

fn check_label(label: &str) -> Result<(), HsmError> {
    if label.is_empty() || label.len() > MAX_LABEL_BYTES {
        return Err(HsmError::Setup(format!(
            "a token label is 1-{MAX_LABEL_BYTES} bytes, got {} bytes",
            label.len()
        )));
    }
    // Labels are space-padded on the token: outer spaces would not survive.
    if label.trim() != label || label.chars().any(char::is_control) {
        return Err(HsmError::Setup(
            "a token label must not start or end with spaces or hold control characters".into(),
        ));
    }
    Ok(())
}

fn initialize(
    pkcs11: &Pkcs11,
    label: &str,
    so_pin: &SecretString,
    user_pin: &SecretString,
) -> Result<InitializedToken, HsmError> {
    // Look at every slot with a token: refuse if the label is taken, and
    // take the first token that is not initialised yet.
    let mut free = None;
    for slot in pkcs11.get_slots_with_token()? {
        let info = pkcs11.get_token_info(slot)?;
        if info.token_initialized() {
            if info.label().trim_end() == label {
                return Err(HsmError::Setup(format!(
                    "a token labelled '{label}' exists already (slot {}, serial {}); \
                     refusing to initialise it again, which would destroy its keys",
                    slot.id(),
                    info.serial_number().trim()
                )));
            }
        } else if free.is_none() {
            free = Some((slot, info));
        }
    }
    let Some((slot, info)) = free else {
        return Err(HsmError::Setup(
            "no slot holds an uninitialised token (SoftHSM2 always offers one: check \
             SOFTHSM2_CONF and its token directory)"
                .into(),
        ));
    };
    check_pin_length("security officer", so_pin, &info)?;
    check_pin_length("user", user_pin, &info)?;

    let so_pin = AuthPin::new(so_pin.expose_secret().into());
    let user_pin = AuthPin::new(user_pin.expose_secret().into());
    pkcs11.init_token(slot, &so_pin, label)?;
    tracing::info!(slot = slot.id(), label, "token initialised");

    let (slot, serial_number) = find_initialized(pkcs11, label)?;
    set_user_pin(pkcs11, slot, &so_pin, &user_pin).map_err(|e| {
        HsmError::Setup(format!(
            "token '{label}' (serial {serial_number}) was initialised, but setting its user \
             PIN failed: {e}. It holds no keys: delete it (softhsm2-util --delete-token \
             --token '{label}') and run init-token again"
        ))
    })?;
    tracing::info!(slot = slot.id(), label, "user PIN set");
    Ok(InitializedToken {
        label: label.to_owned(),
        serial_number,
    })
}

fn check_pin_length(
    whose: &str,
    pin: &SecretString,
    info: &cryptoki::slot::TokenInfo,
) -> Result<(), HsmError> {
    let (min, max) = (info.min_pin_length(), info.max_pin_length());
    let len = pin.expose_secret().len();
    // Some tokens report 0 for "no limit".
    if len < min || (max > 0 && len > max) {
        return Err(HsmError::Setup(format!(
            "the {whose} PIN is {len} bytes; this token takes {min}-{max}"
        )));
    }
    Ok(())
}

/// The slot and serial number of the one initialised token labelled
/// `label`. SoftHSM2 gives a token a new slot id when it is initialised,
/// so the slot C_InitToken was called on is not where it is now.
fn find_initialized(pkcs11: &Pkcs11, label: &str) -> Result<(Slot, String), HsmError> {
    let mut found = Vec::new();
    for slot in pkcs11.get_slots_with_initialized_token()? {
        let info = pkcs11.get_token_info(slot)?;
        if info.label().trim_end() == label {
            found.push((slot, info.serial_number().trim().to_owned()));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(HsmError::Setup(format!(
            "token '{label}' is not found after C_InitToken"
        ))),
        n => Err(HsmError::Setup(format!(
            "{n} tokens labelled '{label}' exist after C_InitToken (another process \
             initialised one at the same time?); their user PINs are not set"
        ))),
    }
}

/// Logs in as the security officer, sets the user PIN, logs out. The session
/// is closed when this returns.
fn set_user_pin(
    pkcs11: &Pkcs11,
    slot: Slot,
    so_pin: &AuthPin,
    user_pin: &AuthPin,
) -> Result<(), HsmError> {
    let session = pkcs11.open_rw_session(slot)?;
    session.login(UserType::So, Some(so_pin))?;
    let result = session.init_pin(user_pin);
    let logout = session.logout();
    session.close()?;
    result?;
    logout?;
    Ok(())
}
