//! A token session whose PKCS#11 calls are timed: the session lent to
//! token work ([`super::TokenSession`]) is this, so every call through it
//! lands in `kmsgate_token_call_duration_seconds{function}` without a line
//! at each call site. The functions are cryptoki's methods of the same
//! names; anything else reaches the session itself through `Deref`,
//! untimed.
//!
//! Every call that reaches the token's objects also takes the host-wide
//! [`token_lock`] (SoftHSM2 only): shared to read, exclusive to create or
//! destroy a token object.

use std::ops::Deref;
use std::time::Instant;

use cryptoki::error::Result;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::{Session, SessionInfo};

use super::token_lock;
use crate::telemetry;

#[derive(Clone, Copy)]
pub struct Metered<'a>(pub(super) &'a Session);

/// Whether a template makes a token object (which SoftHSM2 writes to a
/// file) rather than a session object (which it keeps in memory).
fn on_token(template: &[Attribute]) -> bool {
    template.iter().any(|a| matches!(a, Attribute::Token(true)))
}

/// A label no object has: listing it makes SoftHSM2 read the token
/// directory (if another process changed it) and match nothing.
const CATCH_UP: &[u8] = b"kmsgate/catch-up";

impl Metered<'_> {
    /// The lock a call that may create an object from `template` takes.
    fn creating(&self, template: &[Attribute]) -> token_lock::Guard {
        if on_token(template) {
            self.writing()
        } else {
            token_lock::shared()
        }
    }

    /// The exclusive lock, after which this process's library has seen
    /// every other process's writes ([`token_lock`]: SoftHSM2 would take
    /// our own write's generation number as having seen them).
    fn writing(&self) -> token_lock::Guard {
        let lock = token_lock::exclusive();
        if lock.holds() {
            let _ = timed("C_FindObjects", || {
                self.0.find_objects(&[Attribute::Label(CATCH_UP.to_vec())])
            });
        }
        lock
    }
}

fn timed<T>(function: &'static str, call: impl FnOnce() -> T) -> T {
    if !telemetry::enabled() {
        return call();
    }
    let start = Instant::now();
    let out = call();
    telemetry::token_call(function, start.elapsed());
    out
}

impl Deref for Metered<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        self.0
    }
}

impl Metered<'_> {
    pub fn encrypt(&self, m: &Mechanism, key: ObjectHandle, data: &[u8]) -> Result<Vec<u8>> {
        let _lock = token_lock::shared();
        timed("C_Encrypt", || self.0.encrypt(m, key, data))
    }

    pub fn decrypt(&self, m: &Mechanism, key: ObjectHandle, data: &[u8]) -> Result<Vec<u8>> {
        let _lock = token_lock::shared();
        timed("C_Decrypt", || self.0.decrypt(m, key, data))
    }

    pub fn sign(&self, m: &Mechanism, key: ObjectHandle, data: &[u8]) -> Result<Vec<u8>> {
        let _lock = token_lock::shared();
        timed("C_Sign", || self.0.sign(m, key, data))
    }

    pub fn verify(&self, m: &Mechanism, key: ObjectHandle, data: &[u8], sig: &[u8]) -> Result<()> {
        let _lock = token_lock::shared();
        timed("C_Verify", || self.0.verify(m, key, data, sig))
    }

    pub fn generate_key(&self, m: &Mechanism, template: &[Attribute]) -> Result<ObjectHandle> {
        let _lock = self.creating(template);
        timed("C_GenerateKey", || self.0.generate_key(m, template))
    }

    pub fn generate_key_pair(
        &self,
        m: &Mechanism,
        public: &[Attribute],
        private: &[Attribute],
    ) -> Result<(ObjectHandle, ObjectHandle)> {
        let _lock = if on_token(public) || on_token(private) {
            self.writing()
        } else {
            token_lock::shared()
        };
        timed("C_GenerateKeyPair", || {
            self.0.generate_key_pair(m, public, private)
        })
    }

    pub fn derive_key(
        &self,
        m: &Mechanism,
        base: ObjectHandle,
        template: &[Attribute],
    ) -> Result<ObjectHandle> {
        let _lock = self.creating(template);
        timed("C_DeriveKey", || self.0.derive_key(m, base, template))
    }

    pub fn wrap_key(
        &self,
        m: &Mechanism,
        wrapping: ObjectHandle,
        key: ObjectHandle,
    ) -> Result<Vec<u8>> {
        let _lock = token_lock::shared();
        timed("C_WrapKey", || self.0.wrap_key(m, wrapping, key))
    }

    pub fn unwrap_key(
        &self,
        m: &Mechanism,
        unwrapping: ObjectHandle,
        wrapped: &[u8],
        template: &[Attribute],
    ) -> Result<ObjectHandle> {
        let _lock = self.creating(template);
        timed("C_UnwrapKey", || {
            self.0.unwrap_key(m, unwrapping, wrapped, template)
        })
    }

    /// C_FindObjectsInit, C_FindObjects and C_FindObjectsFinal together.
    pub fn find_objects(&self, template: &[Attribute]) -> Result<Vec<ObjectHandle>> {
        let _lock = token_lock::shared();
        timed("C_FindObjects", || self.0.find_objects(template))
    }

    pub fn create_object(&self, template: &[Attribute]) -> Result<ObjectHandle> {
        let _lock = self.creating(template);
        timed("C_CreateObject", || self.0.create_object(template))
    }

    pub fn destroy_object(&self, object: ObjectHandle) -> Result<()> {
        let _lock = self.writing();
        timed("C_DestroyObject", || self.0.destroy_object(object))
    }

    /// C_DestroyObject of an object this session made with
    /// `Token(false)`: SoftHSM2 keeps it in memory, so only the shared lock.
    pub fn destroy_session_object(&self, object: ObjectHandle) -> Result<()> {
        let _lock = token_lock::shared();
        timed("C_DestroyObject", || self.0.destroy_object(object))
    }

    pub fn get_attributes(
        &self,
        object: ObjectHandle,
        types: &[AttributeType],
    ) -> Result<Vec<Attribute>> {
        let _lock = token_lock::shared();
        timed("C_GetAttributeValue", || {
            self.0.get_attributes(object, types)
        })
    }

    pub fn update_attributes(&self, object: ObjectHandle, template: &[Attribute]) -> Result<()> {
        let _lock = self.writing();
        timed("C_SetAttributeValue", || {
            self.0.update_attributes(object, template)
        })
    }

    pub fn generate_random_slice(&self, out: &mut [u8]) -> Result<()> {
        timed("C_GenerateRandom", || self.0.generate_random_slice(out))
    }

    pub fn get_session_info(&self) -> Result<SessionInfo> {
        timed("C_GetSessionInfo", || self.0.get_session_info())
    }
}
