//! The PKCS#11 library and the token in it, and how the pool gets them
//! back after a fatal fault: finalise, initialise again, find the token by
//! label, log in, with backoff and jitter between failed attempts. Each
//! reset starts a new *generation* of object handles ([`super::pool`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, TryLockError};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::HsmError;
use super::select::{TokenSelector, find_token};

/// How long a reset waits for calls in flight to return before it gives up
/// and tries again later.
const RESET_WAIT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The least time between two re-initialisations asked for because an
/// object the records name was not found ([`Link::request_reread`]).
const REREAD_MIN_INTERVAL: Duration = Duration::from_secs(5);

pub(super) struct LinkState {
    /// `None` while the library is not usable (a reset failed).
    pub(super) slot: Option<Slot>,
    pub(super) generation: u64,
}

/// The library, the token in it, and what is needed to reach it again.
pub(super) struct Link {
    pkcs11: Pkcs11,
    selector: TokenSelector,
    /// Replaced on SIGHUP after a refusal ([`Link::retry_pin`]).
    pin: RwLock<AuthPin>,
    /// Whether a login may be tried ([`PinGate`]).
    pub(super) gate: Arc<PinGate>,
    pub(super) state: RwLock<LinkState>,
    /// Holds the login for the process (closing a token's last session logs
    /// it out).
    login: Mutex<Option<Session>>,
    /// One slot per worker; taken out and closed by a reset.
    pub(super) sessions: Vec<Mutex<Option<Session>>>,
    /// A fatal error was seen: the library must be re-initialised.
    reset_needed: AtomicBool,
    resetting: Mutex<()>,
    /// Earliest moment of the next reset attempt, as nanoseconds since
    /// `epoch`, and the current backoff.
    next_attempt: AtomicU64,
    backoff: Mutex<Duration>,
    epoch: Instant,
    /// The last health check or job succeeded at the token.
    pub(super) healthy: AtomicBool,
    /// CKR_GENERAL_ERRORs since the last job that succeeded.
    /// CKR_GENERAL_ERRORs counted in the current window, and when it
    /// started.
    general_errors: Mutex<(u32, Instant)>,
    /// When a re-read of the token's objects was last asked for.
    last_reread: Mutex<Option<Instant>>,
    /// The token's random bytes, in blocks or not (`hsm.random_block_bytes`).
    pub(super) random: super::random::RandomSource,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Link {
    /// Initialises the library, finds the token and logs in.
    pub(super) fn open(
        pkcs11: Pkcs11,
        selector: TokenSelector,
        pin: AuthPin,
        gate: Arc<PinGate>,
        workers: usize,
        random_block: usize,
    ) -> Result<Link, HsmError> {
        initialize(&pkcs11)?;
        let slot = find_token(&pkcs11, &selector)?;
        let login = open_logged_in(&pkcs11, slot, &pin, &gate, 8)?;
        Ok(Link {
            pkcs11,
            selector,
            pin: RwLock::new(pin),
            gate,
            state: RwLock::new(LinkState {
                slot: Some(slot),
                generation: 1,
            }),
            login: Mutex::new(Some(login)),
            sessions: (0..workers).map(|_| Mutex::new(None)).collect(),
            reset_needed: AtomicBool::new(false),
            resetting: Mutex::new(()),
            next_attempt: AtomicU64::new(0),
            backoff: Mutex::new(BACKOFF_MIN),
            epoch: Instant::now(),
            healthy: AtomicBool::new(true),
            general_errors: Mutex::new((0, Instant::now())),
            last_reread: Mutex::new(None),
            random: super::random::RandomSource::new(random_block),
        })
    }

    pub(super) fn pkcs11(&self) -> &Pkcs11 {
        &self.pkcs11
    }

    pub(super) fn pin(&self) -> RwLockReadGuard<'_, AuthPin> {
        self.pin.read().unwrap_or_else(|e| e.into_inner())
    }

    /// After a refusal, a reload (SIGHUP): takes `pin` (the PIN file read
    /// again; `None`: keep the one held) and makes exactly one attempt to
    /// re-initialise and log in now. Returns whether the link is usable.
    /// Without a refusal only the PIN is replaced, for the next login.
    pub(super) fn retry_pin(&self, pin: Option<AuthPin>) -> bool {
        if let Some(pin) = pin {
            *self.pin.write().unwrap_or_else(|e| e.into_inner()) = pin;
        }
        if !self.gate.reopen() {
            return self.is_healthy();
        }
        tracing::info!("reload: one login attempt with the PIN as it is now");
        self.reset_needed.store(true, Ordering::SeqCst);
        self.next_attempt.store(0, Ordering::SeqCst);
        *lock(&self.backoff) = BACKOFF_MIN;
        self.try_reset()
    }

    pub(super) fn slot(&self) -> Result<(Slot, u64), HsmError> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        match state.slot {
            Some(slot) => Ok((slot, state.generation)),
            None => Err(reconnecting()),
        }
    }

    pub(super) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
            && !self.reset_needed.load(Ordering::Relaxed)
            && self.gate.refused().is_none()
    }

    /// Counts one CKR_GENERAL_ERROR; returns how many the current window
    /// holds (restarting the count once it reaches the fatal threshold).
    pub(super) fn count_general_error(&self) -> u32 {
        let mut g = lock(&self.general_errors);
        let now = Instant::now();
        if now.duration_since(g.1) > super::pool::GENERAL_ERROR_WINDOW {
            *g = (0, now);
        }
        g.0 += 1;
        let n = g.0;
        if n >= super::pool::GENERAL_ERRORS_FATAL {
            *g = (0, now);
        }
        n
    }

    pub(super) fn mark_fatal(&self) {
        if !self.reset_needed.swap(true, Ordering::SeqCst) {
            tracing::error!("the PKCS#11 library will be re-initialised");
        }
        self.healthy.store(false, Ordering::Relaxed);
    }

    /// Asks for a re-initialisation because an object that must exist was
    /// not found: a module can drop an object it failed to read once (an
    /// out-of-fds moment; SoftHSM2 then never looks at its file again), and
    /// only initialising it again makes it read its storage afresh. At most
    /// one such request per [`REREAD_MIN_INTERVAL`], so an object that is
    /// really gone cannot make the gateway reset over and over. Returns
    /// whether a re-initialisation was asked for.
    pub(super) fn request_reread(&self) -> bool {
        let mut last = lock(&self.last_reread);
        if last.is_some_and(|t| t.elapsed() < REREAD_MIN_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        tracing::warn!(
            "an object the records name is missing: the token's objects will be read afresh"
        );
        self.mark_fatal();
        true
    }

    fn now_nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Re-initialises the library if a fatal error asked for it and the
    /// backoff allows. Returns whether the link is usable now.
    pub(super) fn try_reset(&self) -> bool {
        if !self.reset_needed.load(Ordering::SeqCst) {
            return true;
        }
        // A refused PIN is not tried again until a reload ([`PinGate`]).
        if self.gate.refused().is_some() {
            return false;
        }
        let Ok(_one) = self.resetting.try_lock() else {
            return false;
        };
        if !self.reset_needed.load(Ordering::SeqCst) {
            return true;
        }
        if self.now_nanos() < self.next_attempt.load(Ordering::SeqCst) {
            return false;
        }
        // Wait for the calls in flight: finalising under them is undefined.
        let waited = Instant::now();
        let mut state = loop {
            match self.state.try_write() {
                Ok(g) => break g,
                Err(TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(TryLockError::WouldBlock) if waited.elapsed() < RESET_WAIT => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TryLockError::WouldBlock) => {
                    tracing::warn!("token calls still in flight; re-initialisation postponed");
                    self.schedule_retry();
                    return false;
                }
            }
        };
        for slot in &self.sessions {
            lock(slot).take();
        }
        lock(&self.login).take();
        state.slot = None;
        if let Err(e) = self.pkcs11.clone().finalize() {
            tracing::debug!(error = %e, "C_Finalize before re-initialisation failed");
        }
        let reconnected = initialize(&self.pkcs11).and_then(|()| {
            let slot = find_token(&self.pkcs11, &self.selector)?;
            let login = open_logged_in(&self.pkcs11, slot, &self.pin(), &self.gate, 2)?;
            Ok((slot, login))
        });
        match reconnected {
            Ok((slot, login)) => {
                state.slot = Some(slot);
                *lock(&self.login) = Some(login);
                state.generation += 1;
                *lock(&self.backoff) = BACKOFF_MIN;
                self.reset_needed.store(false, Ordering::SeqCst);
                self.healthy.store(true, Ordering::Relaxed);
                crate::telemetry::token_reset();
                tracing::info!(
                    generation = state.generation,
                    "PKCS#11 library re-initialised; token reconnected"
                );
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-initialising the PKCS#11 library failed; will retry");
                self.schedule_retry();
                false
            }
        }
    }

    /// Exponential backoff with jitter in [0.5, 1.5) of the step.
    fn schedule_retry(&self) {
        let mut backoff = lock(&self.backoff);
        let step = *backoff;
        *backoff = (step * 2).min(BACKOFF_MAX);
        let jitter = rand::random_range(0.5..1.5);
        let delay = step.mul_f64(jitter);
        let at = self
            .now_nanos()
            .saturating_add(u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX));
        self.next_attempt.store(at, Ordering::SeqCst);
    }

    /// Closes every session, logs out and finalises the library.
    pub(super) fn close(&self) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        for slot in &self.sessions {
            lock(slot).take();
        }
        if let Some(login) = lock(&self.login).take() {
            let _ = login.logout();
        }
        state.slot = None;
        if let Err(e) = self.pkcs11.clone().finalize() {
            tracing::warn!(error = %e, "C_Finalize failed");
        }
    }
}

/// What work gets while the library is being re-initialised.
pub(super) fn reconnecting() -> HsmError {
    HsmError::Unavailable("the token is being reconnected".into())
}

fn initialize(pkcs11: &Pkcs11) -> Result<(), HsmError> {
    // SoftHSM2 reads every object file here.
    let _lock = super::token_lock::shared();
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Opens a read-write session and logs the user in, retrying with backoff
/// and jitter up to `attempts` times: concurrent logins from several
/// processes sometimes fail with CKR_GENERAL_ERROR on SoftHSM2.
/// CKR_USER_ALREADY_LOGGED_IN is success. A PIN the token refuses is never
/// retried, and once refused no login is tried until a reload ([`PinGate`]).
pub(super) fn open_logged_in(
    pkcs11: &Pkcs11,
    slot: Slot,
    pin: &AuthPin,
    gate: &PinGate,
    attempts: u32,
) -> Result<Session, HsmError> {
    let _turn = gate.turn()?;
    let mut delay = Duration::from_millis(20);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = pkcs11.open_rw_session(slot).and_then(|session| {
            // SoftHSM2 may read the token's files to log in.
            let _lock = super::token_lock::shared();
            match session.login(UserType::User, Some(pin)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
                Err(e) => Err(e),
            }
        });
        match result {
            Ok(session) => return Ok(session),
            Err(CkError::Pkcs11(rv, _)) if pin_refusal(rv).is_some() => {
                return Err(gate.refuse(rv));
            }
            Err(e) if attempt < attempts => {
                tracing::warn!(error = %e, attempt, "opening a logged-in session failed; retrying");
                std::thread::sleep(delay.mul_f64(rand::random_range(0.5..1.5)));
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The name of a code with which the token refuses the PIN itself, as
/// opposed to a passing fault: the same PIN fails the same way again, and
/// an HSM with a failure counter locks the user out after a few tries.
/// CKR_PIN_INVALID and CKR_PIN_LEN_RANGE are meant for setting a PIN, but
/// a token that answers them to C_Login will not take the PIN either.
pub(crate) fn pin_refusal(rv: RvError) -> Option<&'static str> {
    Some(match rv {
        RvError::PinIncorrect => "CKR_PIN_INCORRECT",
        RvError::PinLocked => "CKR_PIN_LOCKED",
        RvError::PinExpired => "CKR_PIN_EXPIRED",
        RvError::PinInvalid => "CKR_PIN_INVALID",
        RvError::PinLenRange => "CKR_PIN_LEN_RANGE",
        _ => return None,
    })
}

/// The refusal [`pin_refusal`] names `code` (CKR_PIN_INCORRECT for a name
/// it does not give).
fn refusal_named(code: &str) -> RvError {
    [
        RvError::PinIncorrect,
        RvError::PinLocked,
        RvError::PinExpired,
        RvError::PinInvalid,
        RvError::PinLenRange,
    ]
    .into_iter()
    .find(|rv| pin_refusal(*rv) == Some(code))
    .unwrap_or(RvError::PinIncorrect)
}

/// One login attempt per operator action (start, each SIGHUP) with a PIN
/// the token refuses, never a stream of them: an HSM with a failure
/// counter would lock the user out. Once a login is refused, this process
/// tries none (the link's re-initialisation, the pool's sessions, the
/// read-back helper) until [`reopen`](Self::reopen), which a SIGHUP calls.
///
/// The workers of one supervisor share a marker file (`marker`): a
/// refusal met by one is written there, and the others, restarted workers
/// and their read-back helpers see it and do not try; a lock file next to
/// it makes their logins one at a time, so two of them never both try a
/// refused PIN. The supervisor removes the marker on SIGHUP.
pub struct PinGate {
    refused: Mutex<Option<&'static str>>,
    marker: Option<PathBuf>,
}

impl PinGate {
    pub fn new(marker: Option<PathBuf>) -> PinGate {
        PinGate {
            refused: Mutex::new(None),
            marker,
        }
    }

    /// The code the token refused the PIN with, while no login may be
    /// tried.
    pub fn refused(&self) -> Option<&'static str> {
        *lock(&self.refused)
    }

    /// A turn to log in (held until the login's answer), or the refusal
    /// that forbids it: this process's, or another worker's (the marker).
    pub(super) fn turn(&self) -> Result<Option<std::fs::File>, HsmError> {
        if let Some(code) = self.refused() {
            return Err(HsmError::PinRefused(code.into()));
        }
        let Some(marker) = &self.marker else {
            return Ok(None);
        };
        let mut lock_path = marker.clone().into_os_string();
        lock_path.push(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&lock_path)
            .and_then(|f| f.lock().map(|()| f))
            .map_err(|e| HsmError::Setup(format!("the workers' login lock: {e}")))?;
        if let Ok(code) = std::fs::read_to_string(marker) {
            let code = pin_refusal(refusal_named(code.trim())).unwrap_or("CKR_PIN_INCORRECT");
            self.latch(code, "another worker's login was refused");
            return Err(HsmError::PinRefused(code.into()));
        }
        Ok(Some(file))
    }

    /// Records that the token refused the PIN with `rv`; returns the error.
    pub(super) fn refuse(&self, rv: RvError) -> HsmError {
        let code = pin_refusal(rv).unwrap_or("CKR_PIN_INCORRECT");
        if let Some(marker) = &self.marker
            && let Err(e) = std::fs::write(marker, code)
        {
            tracing::warn!(error = %e, "cannot tell the other workers of the refused PIN");
        }
        self.latch(code, "the token refused the user PIN");
        HsmError::PinRefused(code.into())
    }

    /// Records a refusal from the read-back helper (`code`, as it named it).
    pub(super) fn refuse_named(&self, code: &str) -> HsmError {
        self.refuse(refusal_named(code))
    }

    fn latch(&self, code: &'static str, why: &str) {
        let mut refused = lock(&self.refused);
        if refused.is_none() {
            tracing::error!(
                code,
                "{why}: no more login attempts, the gateway is not ready; fix the PIN (hsm.pin_file) and send SIGHUP (systemctl reload kmsgate), which tries once"
            );
        }
        *refused = Some(code);
    }

    /// A reload: one more attempt is allowed. Returns whether a refusal
    /// was in force.
    pub(super) fn reopen(&self) -> bool {
        lock(&self.refused).take().is_some()
    }
}
