//! Data key pairs: an RSA or EC key pair made on the token
//! ([`crate::hsm::data_key_pair`]), encoded as AWS returns it (the public
//! key as SubjectPublicKeyInfo, the private key as PKCS#8), and the private
//! key sealed under a symmetric key's primary version as an ordinary
//! ciphertext blob, so that Decrypt (with the same encryption context)
//! gives back the PKCS#8 bytes.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::der::public_key_der;
use super::error::{StoreError, token};
use super::pkcs8::private_key_der;
use super::signing::{ecdsa_scalar_len, pair_kind};
use super::spec::{KeySpec, KeyUsage};
use super::write::KEY_PAIR_DEADLINE;
use super::{Key, KeyStore, Sealed};
use crate::blob::EncryptionContext;
use crate::hsm::data_key_pair::generate_data_key_pair;

/// A data key pair, its private key sealed.
pub struct DataKeyPair {
    /// DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    /// PKCS#8 DER; present only when the caller asked for it.
    pub private_key: Option<Zeroizing<Vec<u8>>>,
    /// The private key encrypted under the key's primary version.
    pub sealed: Sealed,
}

impl std::fmt::Debug for DataKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeyPair")
            .field(
                "public_key",
                &format_args!("{} bytes", self.public_key.len()),
            )
            .field("private_key", &"<redacted>")
            .field("version", &self.sealed.version)
            .finish()
    }
}

impl KeyStore {
    /// Makes a data key pair of `spec` on the token and seals its private
    /// key under `key` (a symmetric encryption key) with `context`.
    pub async fn generate_data_key_pair(
        &self,
        key: &Arc<Key>,
        context: &EncryptionContext,
        spec: KeySpec,
        want_plaintext: bool,
    ) -> Result<DataKeyPair, StoreError> {
        if key.record.key_spec != KeySpec::SymmetricDefault
            || key.record.key_usage != KeyUsage::EncryptDecrypt
        {
            return Err(StoreError::Internal(format!(
                "key {} is not a symmetric encryption key",
                key.id()
            )));
        }
        let Some(kind) = pair_kind(spec) else {
            return Err(StoreError::Internal(format!(
                "{} is not a key pair spec",
                spec.as_str()
            )));
        };
        // RSA-4096 takes seconds on a software token, as for CreateKey.
        let parts = self
            .hsm
            .pool()
            .run_patient(KEY_PAIR_DEADLINE, move |s| generate_data_key_pair(s, kind))
            .await
            .map_err(token)?;
        let encode = |what: &str, e: der::Error| StoreError::Internal(format!("{what}: {e}"));
        let public_key = public_key_der(&parts.public).map_err(|e| encode("public key", e))?;
        let scalar_len = ecdsa_scalar_len(spec).unwrap_or(0);
        let private_key =
            private_key_der(&parts, scalar_len).map_err(|e| encode("private key", e))?;
        drop(parts);
        let sealed = self.encrypt(key, context, private_key.clone()).await?;
        Ok(DataKeyPair {
            public_key,
            private_key: want_plaintext.then_some(private_key),
            sealed,
        })
    }
}
