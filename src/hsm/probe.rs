//! The token checks of `kmsgate doctor`: each step of reaching the token
//! on its own, so that a failure names the step that failed. Nothing here
//! writes to the token.

use std::path::Path;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use secrecy::{ExposeSecret, SecretString};

use super::IvSource;
use super::select::TokenSelector;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Works, but something the operator should know or fix.
    Warn,
    Fail,
}

/// One check: what was checked, what was found, and what to do if it did
/// not pass.
#[derive(Debug, Clone)]
pub struct Finding {
    pub check: &'static str,
    pub verdict: Verdict,
    pub detail: String,
    pub remedy: Option<String>,
}

impl Finding {
    pub fn pass(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            check,
            verdict: Verdict::Pass,
            detail: detail.into(),
            remedy: None,
        }
    }

    pub fn warn(
        check: &'static str,
        detail: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Finding {
        Finding {
            check,
            verdict: Verdict::Warn,
            detail: detail.into(),
            remedy: Some(remedy.into()),
        }
    }

    pub fn fail(
        check: &'static str,
        detail: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Finding {
        Finding {
            check,
            verdict: Verdict::Fail,
            detail: detail.into(),
            remedy: Some(remedy.into()),
        }
    }
}

/// Mechanisms that features beyond symmetric keys need: missing ones are
/// warnings (those features answer UnsupportedOperationException).
const OPTIONAL: &[(MechanismType, &str)] = &[
    (MechanismType::GENERIC_SECRET_KEY_GEN, "HMAC keys"),
    (MechanismType::SHA256_HMAC, "GenerateMac / VerifyMac"),
    (MechanismType::RSA_PKCS_KEY_PAIR_GEN, "RSA keys"),
    (MechanismType::RSA_PKCS_PSS, "RSASSA_PSS signing"),
    (
        MechanismType::RSA_PKCS_OAEP,
        "RSA encryption and key import",
    ),
    (
        MechanismType::RSA_X_509,
        "RSAES_OAEP_SHA_256 where the token's OAEP is SHA-1 only",
    ),
    (MechanismType::ECC_KEY_PAIR_GEN, "ECC keys"),
    (MechanismType::ECDSA, "ECDSA signing"),
    (MechanismType::ECDH1_DERIVE, "DeriveSharedSecret"),
];

/// Loads `module`, finds the token `token` names, logs in with `pin`,
/// and checks the mechanisms kmsgate needs; stops at the first step that
/// the next ones depend on. The library is finalised at the end.
pub fn probe(
    module: &Path,
    token: &TokenSelector,
    pin: &SecretString,
    iv_source: IvSource,
    use_wrap: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let pkcs11 = match Pkcs11::new(module) {
        Ok(p) => p,
        Err(e) => {
            out.push(Finding::fail(
                "module loads",
                format!("{}: {e}", module.display()),
                "set hsm.module to the vendor's PKCS#11 library (for SoftHSM2 on Debian: /usr/lib/softhsm/libsofthsm2.so, package softhsm2)",
            ));
            return out;
        }
    };
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            out.push(Finding::fail(
                "module loads",
                format!("{}: C_Initialize: {e}", module.display()),
                "the module loaded but does not initialise: check its own configuration (SoftHSM2: SOFTHSM2_CONF and its tokendir)",
            ));
            return out;
        }
    }
    let info = pkcs11.get_library_info().ok();
    out.push(Finding::pass(
        "module loads",
        match info {
            Some(i) => format!(
                "{} ({} {}.{})",
                module.display(),
                i.manufacturer_id().trim(),
                i.library_version().major(),
                i.library_version().minor()
            ),
            None => module.display().to_string(),
        },
    ));
    out.extend(on_token(&pkcs11, token, pin, iv_source, use_wrap));
    let _ = pkcs11.finalize();
    out
}

fn on_token(
    pkcs11: &Pkcs11,
    token: &TokenSelector,
    pin: &SecretString,
    iv_source: IvSource,
    use_wrap: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let slot = match super::select::find_token(pkcs11, token) {
        Ok(slot) => {
            let model = pkcs11
                .get_token_info(slot)
                .map(|t| format!(", {} {}", t.manufacturer_id().trim(), t.model().trim()))
                .unwrap_or_default();
            out.push(Finding::pass(
                "token found",
                format!("{} in slot {}{model}", token.describe(), slot.id()),
            ));
            slot
        }
        Err(e) => {
            let labels: Vec<String> = pkcs11
                .get_slots_with_initialized_token()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|s| Some((s, pkcs11.get_token_info(s).ok()?)))
                .map(|(s, t)| {
                    format!(
                        "'{}' (serial {}, slot {})",
                        t.label().trim_end(),
                        t.serial_number().trim(),
                        s.id()
                    )
                })
                .collect();
            out.push(Finding::fail(
                "token found",
                format!("{e}; initialised tokens: {}", if labels.is_empty() { "none".to_owned() } else { labels.join(", ") }),
                "set hsm.token_label (and hsm.token_serial or hsm.slot_id where labels repeat) to the token's, or initialise the token (kmsgate init-token, or the vendor's tool)",
            ));
            return out;
        }
    };
    let session = match pkcs11.open_ro_session(slot) {
        Ok(s) => s,
        Err(e) => {
            out.push(Finding::fail(
                "login",
                format!("cannot open a session: {e}"),
                "the token refuses sessions: check the HSM's session limit and that no other process holds them all",
            ));
            return out;
        }
    };
    let user_pin = AuthPin::new(pin.expose_secret().into());
    match session.login(UserType::User, Some(&user_pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
            out.push(Finding::pass("login", "the user PIN is accepted"));
        }
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
            out.push(Finding::fail(
                "login",
                "the token rejected the user PIN (CKR_PIN_INCORRECT)",
                "put the token's user PIN in hsm.pin_file (or hsm.pin_env); too many wrong tries lock the PIN on most HSMs",
            ));
            return out;
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
            out.push(Finding::fail(
                "login",
                "the user PIN is locked (CKR_PIN_LOCKED)",
                "have the security officer unlock or reset the user PIN",
            ));
            return out;
        }
        Err(e) => {
            out.push(Finding::fail(
                "login",
                format!("C_Login: {e}"),
                "check the PIN and the token's state with the vendor's tool",
            ));
            return out;
        }
    }
    out.extend(mechanisms(pkcs11, slot, &token.label, iv_source, use_wrap));
    out.push(super::iv_probe::finding(&session, iv_source));
    let mut bytes = [0u8; 16];
    out.push(match session.generate_random_slice(&mut bytes) {
        Ok(()) => Finding::pass("random bytes", "C_GenerateRandom works"),
        Err(e) => Finding::fail(
            "random bytes",
            format!("C_GenerateRandom: {e}"),
            "kmsgate takes every data key and IV from the token's RNG: this token cannot serve it",
        ),
    });
    let _ = session.logout();
    out
}

fn mechanisms(
    pkcs11: &Pkcs11,
    slot: cryptoki::slot::Slot,
    label: &str,
    iv_source: IvSource,
    use_wrap: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let wrap = match super::required_mechanisms(pkcs11, slot, label) {
        Ok(gcm) => {
            out.push(Finding::pass(
                "mechanisms",
                "CKM_AES_KEY_GEN, and CKM_AES_GCM for encrypt and decrypt",
            ));
            gcm.wrap()
        }
        Err(e) => {
            out.push(Finding::fail(
                "mechanisms",
                e.to_string(),
                "kmsgate's master keys are AES-GCM keys on the token: use a token (or firmware) that offers them",
            ));
            return out;
        }
    };
    out.push(Finding::pass(
        "data key path",
        match (wrap, use_wrap) {
            (true, true) if iv_source == IvSource::Message => "C_GenerateRandom + C_EncryptMessage (hsm.iv_source = \"message\": C_WrapKey cannot have the token make the IV)",
            (true, true) => "C_WrapKey with CKM_AES_GCM: WithoutPlaintext data keys never leave the token",
            (true, false) => "C_GenerateRandom + C_Encrypt (the token could wrap, but hsm.use_wrap_when_available is false)",
            (false, _) => "C_GenerateRandom + C_Encrypt (the token does not advertise CKF_WRAP for CKM_AES_GCM)",
        },
    ));
    let missing: Vec<String> = OPTIONAL
        .iter()
        .filter(|(m, _)| pkcs11.get_mechanism_info(slot, *m).is_err())
        .map(|(m, what)| format!("{m} ({what})"))
        .collect();
    out.push(if missing.is_empty() {
        Finding::pass("optional mechanisms", "every mechanism of asymmetric, HMAC and import keys")
    } else {
        Finding::warn(
            "optional mechanisms",
            format!("missing: {}", missing.join(", ")),
            "those features answer UnsupportedOperationException; nothing to do unless clients need them",
        )
    });
    out
}
