//! The PKCS#11 layer: one token, reached through cryptoki.
//!
//! Split like cryptoki itself, by function family: [`pool`] owns the
//! sessions and the worker threads they live on, [`objects`] creates, finds
//! and destroys token objects, [`crypto`] does AES-GCM and the RNG. This layer
//! never sees JSON and knows nothing of KMS; the key store above it decides
//! what the objects mean.
//!
//! Start-up follows SoftHSM2's rules (DESIGN.md decision 9): the library is
//! initialised once per process with `CKF_OS_LOCKING_OK`, one long-lived
//! session holds the login for the whole life of the process (closing a
//! token's last session logs it out), and login is retried with backoff
//! because several processes logging in at once sometimes get
//! `CKR_GENERAL_ERROR`.

pub mod crypto;
pub mod init;
pub mod objects;
pub mod pool;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use secrecy::{ExposeSecret, SecretString};

use crate::config::IvSource;
pub use pool::Pool;

/// What can go wrong below the key store.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    #[error("PKCS#11: {0}")]
    Pkcs11(#[from] CkError),
    /// Every session is busy and the queue is full.
    #[error("all token sessions are busy")]
    Busy,
    /// A request waited longer than the queue deadline for a session.
    #[error("timed out waiting for a token session")]
    QueueTimeout,
    /// The token rejected a GCM tag: wrong key, context or bytes.
    #[error("authentication tag did not verify")]
    BadTag,
    #[error("token setup: {0}")]
    Setup(String),
    /// The pool has shut down.
    #[error("token session pool is closed")]
    Closed,
}

impl HsmError {
    /// The return code, where the token gave one.
    pub fn rv(&self) -> Option<RvError> {
        match self {
            HsmError::Pkcs11(CkError::Pkcs11(rv, _)) => Some(*rv),
            _ => None,
        }
    }

    /// Errors after which the session that saw them must be discarded
    /// (and the login re-established) rather than reused.
    pub fn session_is_broken(&self) -> bool {
        matches!(
            self.rv(),
            Some(
                RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::DeviceError
                    | RvError::DeviceRemoved
                    | RvError::TokenNotPresent
                    | RvError::UserNotLoggedIn
                    | RvError::CryptokiNotInitialized
            )
        )
    }

    /// Errors that mean a cached object handle is stale (the object is gone
    /// or the token was re-initialised) and must be looked up again.
    pub fn handle_is_stale(&self) -> bool {
        matches!(
            self.rv(),
            Some(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid)
        )
    }
}

/// What the token can do, probed once at start-up.
#[derive(Debug, Clone)]
pub struct Capabilities {
    /// The token advertises `CKF_WRAP` for `CKM_AES_GCM`, so a data key can
    /// be generated and wrapped without its plaintext leaving the token.
    pub gcm_wrap: bool,
    /// Where the IV of each GCM encryption comes from (from the config).
    pub iv_source: IvSource,
    pub token_label: String,
    pub manufacturer: String,
    pub model: String,
}

/// Settings for [`Hsm::open`].
pub struct HsmSettings {
    pub module: PathBuf,
    pub token_label: String,
    pub pin: SecretString,
    pub sessions: usize,
    pub queue_depth: usize,
    pub queue_timeout: Duration,
    pub iv_source: IvSource,
    pub use_wrap_when_available: bool,
}

/// The token, logged in, with its session pool.
pub struct Hsm {
    pkcs11: Pkcs11,
    /// Held only so that the token stays logged in while the process runs.
    _login_session: Mutex<Session>,
    pool: Pool,
    caps: Capabilities,
}

impl Hsm {
    /// Loads the module, finds the token by label, logs in and starts the
    /// session pool. Blocking: call it before the runtime serves requests.
    pub fn open(settings: HsmSettings) -> Result<Hsm, HsmError> {
        let pkcs11 = Pkcs11::new(&settings.module)?;
        match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(e.into()),
        }
        let slot = find_token(&pkcs11, &settings.token_label)?;
        let info = pkcs11.get_token_info(slot)?;

        let pin = AuthPin::new(settings.pin.expose_secret().into());
        let login_session = open_logged_in(&pkcs11, slot, &pin)?;

        // Ask for the two mechanisms we need rather than listing them all:
        // tokens list vendor mechanisms the binding cannot name.
        let mut gcm = None;
        for needed in [MechanismType::AES_KEY_GEN, MechanismType::AES_GCM] {
            let info = pkcs11.get_mechanism_info(slot, needed).map_err(|e| {
                HsmError::Setup(format!(
                    "token '{}' does not offer {needed}: {e}",
                    settings.token_label
                ))
            })?;
            if needed == MechanismType::AES_GCM {
                gcm = Some(info);
            }
        }
        let gcm = gcm.ok_or_else(|| HsmError::Setup("CKM_AES_GCM not probed".into()))?;
        if !(gcm.encrypt() && gcm.decrypt()) {
            return Err(HsmError::Setup(
                "the token's CKM_AES_GCM cannot encrypt and decrypt".into(),
            ));
        }
        let caps = Capabilities {
            gcm_wrap: settings.use_wrap_when_available && gcm.wrap(),
            iv_source: settings.iv_source,
            token_label: info.label().trim().to_owned(),
            manufacturer: info.manufacturer_id().trim().to_owned(),
            model: info.model().trim().to_owned(),
        };
        tracing::info!(
            token = %caps.token_label,
            manufacturer = %caps.manufacturer,
            model = %caps.model,
            sessions = settings.sessions,
            data_key_path = if caps.gcm_wrap {
                "C_WrapKey with CKM_AES_GCM (plaintext of WithoutPlaintext data keys never leaves the token)"
            } else {
                "C_GenerateRandom + C_Encrypt with CKM_AES_GCM (the token does not advertise CKF_WRAP for CKM_AES_GCM)"
            },
            iv_source = ?caps.iv_source,
            "token ready"
        );

        let pool = Pool::start(
            pkcs11.clone(),
            slot,
            pin,
            settings.sessions,
            settings.queue_depth,
            settings.queue_timeout,
        )?;
        Ok(Hsm {
            pkcs11,
            _login_session: Mutex::new(login_session),
            pool,
            caps,
        })
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Stops the workers, closes every session and finalises the library.
    pub fn shutdown(self) {
        let Hsm {
            pkcs11,
            _login_session,
            pool,
            ..
        } = self;
        pool.shutdown();
        drop(_login_session);
        if let Err(e) = pkcs11.finalize() {
            tracing::warn!(error = %e, "C_Finalize failed");
        }
    }

    /// Opens one more read-write session on the token, outside the pool.
    /// It is logged in already: PKCS#11 login state is shared by all of the
    /// process's sessions, and the login session keeps it. For `kmsgate
    /// bench-token`, which drives the token from its own threads.
    pub fn open_session(&self) -> Result<Session, HsmError> {
        let slot = find_token(&self.pkcs11, &self.caps.token_label)?;
        Ok(self.pkcs11.open_rw_session(slot)?)
    }
}

fn find_token(pkcs11: &Pkcs11, label: &str) -> Result<Slot, HsmError> {
    for slot in pkcs11.get_slots_with_initialized_token()? {
        let info = pkcs11.get_token_info(slot)?;
        if info.label().trim_end() == label {
            return Ok(slot);
        }
    }
    Err(HsmError::Setup(format!(
        "no initialised token labelled '{label}'"
    )))
}

/// Opens a read-write session and logs the user in, retrying with backoff:
/// concurrent logins from several processes sometimes fail with
/// CKR_GENERAL_ERROR on SoftHSM2. CKR_USER_ALREADY_LOGGED_IN is success.
pub(crate) fn open_logged_in(
    pkcs11: &Pkcs11,
    slot: Slot,
    pin: &AuthPin,
) -> Result<Session, HsmError> {
    let mut delay = Duration::from_millis(20);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = pkcs11.open_rw_session(slot).and_then(|session| {
            match session.login(UserType::User, Some(pin)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
                Err(e) => Err(e),
            }
        });
        match result {
            Ok(session) => return Ok(session),
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(HsmError::Setup("the token rejected the user PIN".into()));
            }
            Err(e) if attempt < 8 => {
                tracing::warn!(error = %e, attempt, "opening a logged-in session failed; retrying");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
}
