//! The PKCS#11 layer: one token, reached through cryptoki.
//!
//! Split by concern: `link` holds the library and the token and gets them
//! back after a fatal fault; [`pool`] owns the sessions, the worker threads
//! they live on and the deadlines; [`objects`] creates, finds and destroys
//! token objects; [`keypair`] makes signing key pairs and signs with them;
//! [`crypto`] does AES-GCM, HMAC and the RNG; [`readback`] confirms
//! writes durable through a second view of the token; [`init`] initialises a
//! token; `error` classifies every failure ([`HsmError`], [`Fault`]). This
//! layer never sees JSON, knows nothing of KMS and writes no client-facing
//! text; the key store above it decides what the objects and the faults
//! mean.
//!
//! Start-up follows SoftHSM2's rules (DESIGN.md decision 9): the library is
//! initialised once per process with `CKF_OS_LOCKING_OK`, one long-lived
//! session holds the login for the whole life of the process (closing a
//! token's last session logs it out), and login is retried with backoff
//! because several processes logging in at once sometimes get
//! `CKR_GENERAL_ERROR`.

pub mod crypto;
pub mod data_key_pair;
pub mod ecdh;
mod error;
pub mod import;
pub mod import_pair;
pub mod init;
mod iv_probe;
pub mod keypair;
mod link;
mod metered;
pub mod oaep;
pub mod objects;
pub mod pool;
pub mod probe;
mod random;
pub mod readback;
pub mod select;
pub mod token_lock;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::MechanismType;
use cryptoki::session::Session;
use cryptoki::types::AuthPin;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use error::{Fault, HsmError};
use link::{Link, PinGate};
use pool::PoolSettings;
pub use pool::{Pool, TokenSession};
pub use readback::ReadBack;

/// Where the IV of an AES-GCM operation comes from (DESIGN.md decision 5).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum IvSource {
    /// kmsgate draws 12 bytes from the token's RNG and passes them in
    /// (SoftHSM2).
    #[default]
    Caller,
    /// The token generates the IV itself and writes it back into the
    /// parameter buffer of C_Encrypt.
    Token,
    /// The token generates the IV in C_Encrypt and returns it after the
    /// tag: ciphertext || tag || IV (FIPS-mode ProtectServer).
    TokenAppended,
    /// PKCS#11 3.0 message-based encryption (C_EncryptMessage): the token
    /// generates the IV (CKG_GENERATE_RANDOM) and writes it and the tag
    /// back into CK_GCM_MESSAGE_PARAMS (Kryoptic; HSMs with PKCS#11 3.0).
    /// Data keys are then never made with C_WrapKey, which has no such IV
    /// generation.
    Message,
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

/// Checks that the token offers what kmsgate cannot do without
/// (CKM_AES_KEY_GEN, and CKM_AES_GCM for encrypt and decrypt); returns
/// CKM_AES_GCM's flags. Asks for those two rather than listing them all:
/// tokens list vendor mechanisms the binding cannot name.
pub(crate) fn required_mechanisms(
    pkcs11: &Pkcs11,
    slot: cryptoki::slot::Slot,
    label: &str,
) -> Result<cryptoki::mechanism::MechanismInfo, HsmError> {
    let mut gcm = None;
    for needed in [MechanismType::AES_KEY_GEN, MechanismType::AES_GCM] {
        let info = pkcs11.get_mechanism_info(slot, needed).map_err(|e| {
            HsmError::Setup(format!("token '{label}' does not offer {needed}: {e}"))
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
    Ok(gcm)
}

/// Settings for [`Hsm::open`].
pub struct HsmSettings {
    pub module: PathBuf,
    /// Which token: its label, and its serial and slot id where set.
    pub token: select::TokenSelector,
    pub pin: SecretString,
    pub sessions: usize,
    pub queue_depth: usize,
    pub queue_timeout: Duration,
    /// The longest a request waits for one token call.
    pub call_timeout: Duration,
    pub iv_source: IvSource,
    pub use_wrap_when_available: bool,
    /// How writes are confirmed durable.
    pub read_back: ReadBack,
    /// Environment variables holding secrets (the PIN's, the
    /// credentials'), which the read-back helper does not inherit.
    pub secret_env: Vec<String>,
    /// Random bytes drawn from the token this many at a time and handed
    /// out from a zeroizing buffer; 0: one C_GenerateRandom per use.
    pub random_block_bytes: usize,
    /// The file in which the workers of one supervisor tell each other
    /// that the token refused the PIN (`link::PinGate`); `None` for a
    /// gateway on its own.
    pub pin_marker: Option<PathBuf>,
}

/// The token, logged in, with its session pool.
pub struct Hsm {
    link: Arc<Link>,
    pool: Pool,
    caps: Capabilities,
    confirm: Arc<readback::Confirmer>,
}

impl Hsm {
    /// Loads the module, finds the token by label, logs in and starts the
    /// session pool. Blocking: call it before the runtime serves requests.
    pub fn open(settings: HsmSettings) -> Result<Hsm, HsmError> {
        let pkcs11 = Pkcs11::new(&settings.module)?;
        let pin = AuthPin::new(settings.pin.expose_secret().into());
        let gate = Arc::new(PinGate::new(settings.pin_marker.clone()));
        let link = Arc::new(Link::open(
            pkcs11.clone(),
            settings.token.clone(),
            pin,
            gate.clone(),
            settings.sessions.max(1),
            settings.random_block_bytes,
        )?);
        token_lock::keep_only_for(pkcs11.get_library_info()?.manufacturer_id());
        let (slot, _) = link.slot()?;
        let info = pkcs11.get_token_info(slot)?;

        let gcm = required_mechanisms(&pkcs11, slot, &settings.token.label)?;
        let caps = Capabilities {
            gcm_wrap: settings.use_wrap_when_available
                && gcm.wrap()
                && matches!(settings.iv_source, IvSource::Caller | IvSource::Token),
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
            } else if caps.iv_source == IvSource::Message {
                "C_GenerateRandom + C_EncryptMessage with CKM_AES_GCM (iv_source = message)"
            } else if caps.iv_source == IvSource::TokenAppended {
                "C_GenerateRandom + C_Encrypt with CKM_AES_GCM (iv_source = token_appended)"
            } else {
                "C_GenerateRandom + C_Encrypt with CKM_AES_GCM (the token does not advertise CKF_WRAP for CKM_AES_GCM)"
            },
            iv_source = ?caps.iv_source,
            read_back = ?settings.read_back,
            "token ready"
        );
        let confirm = Arc::new(readback::Confirmer::new(
            settings.read_back,
            &settings.module,
            &settings.token,
            settings.pin,
            settings.secret_env,
            gate,
        ));
        let pool = Pool::start(
            link.clone(),
            PoolSettings {
                sessions: settings.sessions,
                queue_depth: settings.queue_depth,
                queue_timeout: settings.queue_timeout,
                call_timeout: settings.call_timeout,
            },
        )?;
        Ok(Hsm {
            link,
            pool,
            caps,
            confirm,
        })
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// How writes are confirmed durable ([`readback`]).
    pub fn confirmer(&self) -> Arc<readback::Confirmer> {
        self.confirm.clone()
    }

    /// Whether the token is usable as far as this process knows.
    pub fn is_healthy(&self) -> bool {
        self.pool.is_healthy()
    }

    /// The code the token refused the user PIN with, while no login is
    /// tried (`link::PinGate`).
    pub fn pin_refused(&self) -> Option<&'static str> {
        self.link.gate.refused()
    }

    /// A reload (SIGHUP): the PIN as read again (`None`: the one held);
    /// after a refusal, exactly one attempt to log in with it, now.
    /// Returns whether the token is usable. Blocking.
    pub fn retry_pin(&self, pin: Option<SecretString>) -> bool {
        if let Some(pin) = &pin {
            self.confirm.set_pin(pin.clone());
        }
        self.link
            .retry_pin(pin.map(|p| AuthPin::new(p.expose_secret().into())))
    }

    /// Stops the workers, closes every session, logs out and finalises the
    /// library, in that order: nothing may be inside the library when it is
    /// unloaded.
    pub fn shutdown(self) {
        let Hsm {
            link,
            pool,
            confirm,
            ..
        } = self;
        let idle = pool.shutdown(pool::SHUTDOWN_GRACE);
        drop(confirm);
        if idle {
            link.close();
        } else {
            // Finalising under a call in flight is undefined behaviour; the
            // process is exiting, and the token cleans up after it.
            tracing::warn!("the PKCS#11 library is left initialised: a call never returned");
        }
    }

    /// Shuts the token down once `hsm` is its last reference, waiting up to
    /// `wait` for work handed to the token's threads to let go of it.
    /// Otherwise the reference is kept for the rest of the process (never
    /// dropped: that would close sessions on the pool's threads while the
    /// library is torn down) and `false` is returned. Blocking.
    pub fn shutdown_when_released(mut hsm: std::sync::Arc<Hsm>, wait: Duration) -> bool {
        let until = std::time::Instant::now() + wait;
        loop {
            match std::sync::Arc::try_unwrap(hsm) {
                Ok(h) => {
                    h.shutdown();
                    return true;
                }
                Err(shared) if std::time::Instant::now() < until => {
                    hsm = shared;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(shared) => {
                    tracing::warn!(
                        references = std::sync::Arc::strong_count(&shared),
                        "the token is still in use at exit; its sessions are left open"
                    );
                    std::mem::forget(shared);
                    return false;
                }
            }
        }
    }

    /// Opens one more read-write session on the token, outside the pool.
    /// It is logged in already: PKCS#11 login state is shared by all of the
    /// process's sessions, and the login session keeps it. For `kmsgate
    /// bench-token`, which drives the token from its own threads.
    pub fn open_session(&self) -> Result<OwnedSession, HsmError> {
        let (slot, generation) = self.link.slot()?;
        Ok(OwnedSession {
            session: self.link.pkcs11().open_rw_session(slot)?,
            generation,
            link: self.link.clone(),
        })
    }
}

/// A session outside the pool ([`Hsm::open_session`]).
pub struct OwnedSession {
    session: Session,
    generation: u64,
    link: Arc<Link>,
}

impl OwnedSession {
    pub fn lend(&self) -> TokenSession<'_> {
        TokenSession {
            session: metered::Metered(&self.session),
            generation: self.generation,
            random: &self.link.random,
        }
    }
}

/// Whether `e` (a start-up's error) is the token's refusal of the PIN:
/// `kmsgate serve` and a worker then exit with [`PIN_REFUSED_EXIT`].
pub fn is_pin_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    matches!(e.downcast_ref::<HsmError>(), Some(HsmError::PinRefused(_)))
}

/// The exit status of a start-up that ended because the token refused
/// the PIN (EX_CONFIG): a supervisor does not restart such a worker
/// until SIGHUP, and a service manager can be told not to restart
/// (systemd's `RestartPreventExitStatus=78`), since every start tries the
/// PIN once more.
pub const PIN_REFUSED_EXIT: u8 = 78;
