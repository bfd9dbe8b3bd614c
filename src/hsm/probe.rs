//! The token checks of `kmsgate doctor`: each step of reaching the token
//! on its own, so that a failure names the step that failed. The last step
//! writes: one data object, made, confirmed durable and destroyed as the
//! key store makes, confirms and destroys its records (the token lock, the
//! read-back), because a token that refuses writes cannot serve.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use secrecy::ExposeSecret;

use super::metered::Metered;
use super::objects;
use super::random::RandomSource;
use super::readback::Confirmer;
use super::{HsmError, HsmSettings, IvSource, TokenSession};

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

/// Loads the module, finds the token, logs in, checks the mechanisms
/// kmsgate needs and writes a probe object, all as `serve` would with
/// `settings`; stops at the first step that the next ones depend on. The
/// library is finalised at the end.
pub fn probe(settings: &HsmSettings) -> Vec<Finding> {
    let module = &settings.module;
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
    if let Some(i) = &info {
        // The token lock only where serve takes it (SoftHSM2).
        super::token_lock::keep_only_for(i.manufacturer_id());
    }
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
    out.extend(on_token(&pkcs11, settings));
    let _ = pkcs11.finalize();
    out
}

fn on_token(pkcs11: &Pkcs11, settings: &HsmSettings) -> Vec<Finding> {
    let token = &settings.token;
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
    let user_pin = AuthPin::new(settings.pin.expose_secret().into());
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
    out.extend(mechanisms(
        pkcs11,
        slot,
        &token.label,
        settings.iv_source,
        settings.use_wrap_when_available,
    ));
    out.push(super::iv_probe::finding(&session, settings.iv_source));
    let mut bytes = [0u8; 16];
    out.push(match session.generate_random_slice(&mut bytes) {
        Ok(()) => Finding::pass("random bytes", "C_GenerateRandom works"),
        Err(e) => Finding::fail(
            "random bytes",
            format!("C_GenerateRandom: {e}"),
            "kmsgate takes every data key and IV from the token's RNG: this token cannot serve it",
        ),
    });
    out.push(write_probe(pkcs11, slot, settings));
    let _ = session.logout();
    out
}

/// The label kind of the write probe's object. The key store reads only
/// `kmsgate/key/` and `kmsgate/alias/` records (its load, its sync and its
/// sweeps skip every other label), so no gateway on the token takes the
/// object for a key, an alias or a damaged record.
const PROBE_PREFIX: &str = "kmsgate/doctor/";

/// Where a write probe failed.
enum Step {
    Create,
    ReadBack,
    Destroy,
    Gone,
}

/// Makes a token data object as the key store makes a record, confirms it
/// durable as `hsm.read_back` says, destroys it and confirms it gone.
/// Whatever step fails, every object of the probe is destroyed before the
/// verdict, and one that cannot be is named.
fn write_probe(pkcs11: &Pkcs11, slot: cryptoki::slot::Slot, settings: &HsmSettings) -> Finding {
    const CHECK: &str = "token write";
    let session = match pkcs11.open_rw_session(slot) {
        Ok(s) => s,
        Err(e) => {
            return Finding::fail(
                CHECK,
                format!(
                    "cannot open a read-write session: {}",
                    ckr(&HsmError::from(e))
                ),
                WRITABLE,
            );
        }
    };
    // No random bytes are drawn through it.
    let random = RandomSource::new(0);
    let s = TokenSession {
        session: Metered(&session),
        generation: 0,
        random: &random,
    };
    let label = format!("{PROBE_PREFIX}{}", hex::encode(rand::random::<[u8; 8]>()));
    let value = b"kmsgate doctor: a write probe, destroyed at once".as_slice();
    let confirm = Confirmer::new(
        settings.read_back,
        &settings.module,
        &settings.token,
        settings.pin.clone(),
        settings.secret_env.clone(),
        std::sync::Arc::new(super::link::PinGate::new(None)),
    );
    let steps = || -> Result<(), (Step, HsmError)> {
        let handle = objects::create_data(&s, &label, value).map_err(|e| (Step::Create, e))?;
        confirm
            .data_stored(&s, &label, value)
            .map_err(|e| (Step::ReadBack, e))?;
        objects::destroy_data(&s, handle).map_err(|e| (Step::Destroy, e))?;
        confirm.data_gone(&s, &label).map_err(|e| (Step::Gone, e))
    };
    let Err((step, e)) = steps() else {
        return Finding::pass(
            CHECK,
            format!(
                "a token data object was created, read back and destroyed (read-back: {:?})",
                settings.read_back
            ),
        );
    };
    let (what, remedy) = match step {
        Step::Create => ("the token refused to create an object", WRITABLE),
        Step::ReadBack => (
            "the token accepted an object that does not read back",
            "the token's storage lost the write (SoftHSM2 on a full or read-only disk answers CKR_OK and stores nothing): check its free space and permissions",
        ),
        Step::Destroy => ("the token refused to destroy an object", WRITABLE),
        Step::Gone => (
            "an object the token destroyed still reads back",
            "the token's storage does not keep removals: check its free space and permissions",
        ),
    };
    let mut detail = format!("{what}: {}", ckr(&e));
    if let Some(left) = remove_probe(&s, &label) {
        detail.push_str(&format!(
            "; the probe object {label} could not be removed ({left}); no gateway reads it: remove it with the token's tool (pkcs11-tool --login --delete-object --type data --label {label})"
        ));
    }
    Finding::fail(CHECK, detail, remedy)
}

/// What to do when the token refuses writes.
const WRITABLE: &str = "kmsgate keeps every key and record on the token, so serve cannot work on a token that refuses writes: make it writable (SoftHSM2: the gateway's user must be able to write the token directory, directories.tokendir; an HSM: log in as a user of a read-write partition, not a read-only or backup role)";

/// Destroys every object the probe may have left; `None` if none is left,
/// else why.
fn remove_probe(s: &TokenSession, label: &str) -> Option<String> {
    let left = (|| {
        for o in objects::read_data(s, Some(label))? {
            objects::destroy_data(s, o.handle)?;
        }
        objects::read_data(s, Some(label))
    })();
    match left {
        Ok(objects) if objects.is_empty() => None,
        Ok(objects) => Some(format!("{} object(s)", objects.len())),
        Err(e) => Some(ckr(&e)),
    }
}

/// An error with the PKCS#11 name of its return code, where it has one
/// (`CKR_TOKEN_WRITE_PROTECTED`), as operators and vendors' manuals name it.
fn ckr(e: &HsmError) -> String {
    let HsmError::Pkcs11(CkError::Pkcs11(rv, function)) = e else {
        return e.to_string();
    };
    let debug = format!("{rv:?}");
    if !debug.bytes().all(|b| b.is_ascii_alphanumeric()) {
        // A vendor's or an unknown code: the number matters.
        return format!("C_{function:?}: {debug}");
    }
    let mut name = String::from("CKR");
    for c in debug.chars() {
        if c.is_ascii_uppercase() {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    format!("C_{function:?}: {name}")
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

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;

    #[test]
    fn return_codes_are_named_as_pkcs11_names_them() {
        let e = |rv, f| ckr(&HsmError::Pkcs11(CkError::Pkcs11(rv, f)));
        assert_eq!(
            e(RvError::TokenWriteProtected, Function::CreateObject),
            "C_CreateObject: CKR_TOKEN_WRITE_PROTECTED"
        );
        assert_eq!(
            e(RvError::DeviceError, Function::DestroyObject),
            "C_DestroyObject: CKR_DEVICE_ERROR"
        );
        assert_eq!(
            e(RvError::VendorDefined(0x8000_0001), Function::CreateObject),
            "C_CreateObject: VendorDefined(2147483649)"
        );
    }
}
