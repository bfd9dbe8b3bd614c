//! What can go wrong below the key store, and what each failure means for
//! the caller (DESIGN.md decisions 9 and 13).
//!
//! Every failure is classified once, here, into a [`Fault`]: bad input that
//! no retry will fix, a retryable fault of one session or of the device, a
//! fatal fault after which the library must be finalised and initialised
//! again, a stale object handle, or a deadline. The pool acts on the class
//! (discard the session, re-initialise the library); the key store logs it
//! and carries it up inside its own error, and `src/error.rs` maps the class
//! to what a client sees. This layer writes no client-facing text.

use cryptoki::error::{Error as CkError, RvError};

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
    /// A token call did not return within the request's deadline. The call
    /// may still complete; its session is not reused until it returns.
    #[error("the token did not answer within {0} ms")]
    CallTimeout(u64),
    /// The token rejected a GCM tag: wrong key, context or bytes.
    #[error("authentication tag did not verify")]
    BadTag,
    /// The token is being re-initialised after a fatal error, or could not
    /// be reached at the last attempt.
    #[error("the token is unavailable: {0}")]
    Unavailable(String),
    /// An object handle from before the library was re-initialised: it may
    /// now name another object, so it is never passed to the token.
    #[error("object handle from an earlier token generation")]
    StaleGeneration,
    /// A write the token acknowledged could not be confirmed by reading it
    /// back through an independent view of the token.
    #[error("write not confirmed durable: {0}")]
    NotDurable(String),
    /// A listing came back without the objects that are always there, so
    /// it cannot prove that anything is absent.
    #[error("the token's object listing is incomplete")]
    IncompleteListing,
    /// The token answered something the protocol does not allow (a
    /// missing attribute, a result of the wrong length).
    #[error("unexpected answer from the token: {0}")]
    Unexpected(&'static str),
    #[error("token setup: {0}")]
    Setup(String),
    /// The token refused the user PIN (the code's name): no login is
    /// tried again until the operator signals a reload (`link::PinGate`).
    #[error("the token refused the user PIN ({0}); fix the PIN and send SIGHUP")]
    PinRefused(String),
    /// The pool has shut down.
    #[error("token session pool is closed")]
    Closed,
}

/// The class of a failure: what the pool and the caller must do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request itself is wrong (bad tag, wrong key type, bad length):
    /// the same request will fail again; the session is fine.
    BadInput,
    /// A handle no longer names its object: look the object up again.
    StaleHandle,
    /// Overload: the queue is full. Retry later.
    Busy,
    /// A deadline passed.
    Timeout,
    /// This session (or the device, for a moment) failed: discard the
    /// session and retry on a fresh one.
    Retryable,
    /// The library or the device is gone: finalise, initialise again and
    /// log in again before anything else.
    Fatal,
    /// A write was not confirmed; nothing was acknowledged.
    NotDurable,
    /// Start-up or configuration: no retry will help.
    Setup,
}

impl HsmError {
    /// The return code, where the token gave one.
    pub fn rv(&self) -> Option<RvError> {
        match self {
            HsmError::Pkcs11(CkError::Pkcs11(rv, _)) => Some(*rv),
            _ => None,
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            HsmError::Busy => Fault::Busy,
            HsmError::QueueTimeout | HsmError::CallTimeout(_) => Fault::Timeout,
            HsmError::BadTag => Fault::BadInput,
            HsmError::Unavailable(_)
            | HsmError::Closed
            | HsmError::IncompleteListing
            | HsmError::PinRefused(_) => Fault::Retryable,
            HsmError::StaleGeneration => Fault::StaleHandle,
            HsmError::Unexpected(_) => Fault::Retryable,
            HsmError::NotDurable(_) => Fault::NotDurable,
            HsmError::Setup(_) => Fault::Setup,
            HsmError::Pkcs11(CkError::Pkcs11(rv, _)) => classify(*rv),
            // Loading the library, null pointers, conversions: the binding
            // could not even make the call.
            HsmError::Pkcs11(_) => Fault::Retryable,
        }
    }

    /// Errors after which the session that saw them must be discarded.
    pub fn session_is_broken(&self) -> bool {
        matches!(self.fault(), Fault::Retryable | Fault::Fatal)
            && !matches!(
                self,
                HsmError::Unavailable(_)
                    | HsmError::Closed
                    | HsmError::IncompleteListing
                    | HsmError::PinRefused(_)
            )
    }

    /// CKR_GENERAL_ERROR, which the pool escalates to fatal when it repeats.
    pub fn is_general_error(&self) -> bool {
        self.rv() == Some(RvError::GeneralError)
    }

    /// Errors after which the library must be re-initialised.
    pub fn is_fatal(&self) -> bool {
        self.fault() == Fault::Fatal
    }

    /// Errors that mean a cached object handle is stale and must be looked
    /// up again.
    pub fn handle_is_stale(&self) -> bool {
        self.fault() == Fault::StaleHandle
    }
}

/// The class of a PKCS#11 return code (PKCS#11 2.40 section 5.1; the codes
/// aws-kms-xks-proxy and boulder's incident 3468 found fatal in practice).
pub fn classify(rv: RvError) -> Fault {
    use RvError::*;
    match rv {
        CryptokiNotInitialized
        | DeviceRemoved
        | TokenNotPresent
        | TokenNotRecognized
        | SlotIdInvalid => Fault::Fatal,
        // Fatal on some HSMs, but SoftHSM2 also reports a bad GCM tag, a
        // login race and its object-creation race (SoftHSMv2 issue 573)
        // with it: the pool escalates it to fatal only when it repeats
        // ([`super::pool`]).
        GeneralError => Fault::Retryable,
        SessionHandleInvalid
        | SessionClosed
        | SessionCount
        | DeviceError
        | DeviceMemory
        | HostMemory
        | UserNotLoggedIn
        | FunctionFailed
        | FunctionCanceled
        | OperationActive
        | OperationNotInitialized
        | CantLock
        | MutexBad
        | MutexNotLocked => Fault::Retryable,
        ObjectHandleInvalid | KeyHandleInvalid => Fault::StaleHandle,
        _ => Fault::BadInput,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;

    fn rv(rv: RvError) -> HsmError {
        HsmError::Pkcs11(CkError::Pkcs11(rv, Function::Encrypt))
    }

    #[test]
    fn device_faults_are_not_bad_input() {
        for code in [
            RvError::DeviceError,
            RvError::SessionHandleInvalid,
            RvError::UserNotLoggedIn,
            RvError::DeviceMemory,
        ] {
            assert_eq!(rv(code).fault(), Fault::Retryable, "{code:?}");
            assert!(rv(code).session_is_broken());
        }
        assert_eq!(rv(RvError::GeneralError).fault(), Fault::Retryable);
        for code in [
            RvError::DeviceRemoved,
            RvError::TokenNotPresent,
            RvError::CryptokiNotInitialized,
        ] {
            assert_eq!(rv(code).fault(), Fault::Fatal, "{code:?}");
            assert!(rv(code).is_fatal());
        }
    }

    #[test]
    fn handles_and_input() {
        assert!(rv(RvError::ObjectHandleInvalid).handle_is_stale());
        assert!(HsmError::StaleGeneration.handle_is_stale());
        assert_eq!(rv(RvError::DataLenRange).fault(), Fault::BadInput);
        assert_eq!(HsmError::BadTag.fault(), Fault::BadInput);
        assert_eq!(HsmError::CallTimeout(5).fault(), Fault::Timeout);
        assert!(!HsmError::Unavailable("x".into()).session_is_broken());
    }
}
