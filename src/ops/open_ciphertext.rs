//! Opening a kmsgate ciphertext: the checks and the token's decryption that
//! Decrypt and ReEncrypt share.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::Ctx;
use super::authorize::Use;
use super::shapes::dry_run;
use crate::blob::{self, EncryptionContext};
use crate::error::KmsError;
use crate::keystore::Key;

/// A ciphertext opened: the key and version that sealed it, and the
/// plaintext.
pub struct Opened {
    pub key: Arc<Key>,
    pub version: u32,
    pub plaintext: Zeroizing<Vec<u8>>,
}

const NO_SUCH_KEY: &str = "The ciphertext refers to a customer master key that does not exist, does not exist in this region, or you are not allowed to access.";

/// Checks a ciphertext against its key (and the caller's KeyId, if any) and
/// decrypts it. Shared by Decrypt and ReEncrypt. With `dry`, stops before
/// the token decrypts.
pub async fn open(
    ctx: &mut Ctx<'_>,
    operation: &str,
    ciphertext: &[u8],
    key_id: Option<&str>,
    context: &EncryptionContext,
    grant_tokens: Option<&[String]>,
    dry: Option<bool>,
) -> Result<Opened, KmsError> {
    let parsed = blob::parse(ciphertext).map_err(|_| KmsError::InvalidCiphertext)?;
    let key = ctx
        .store
        .key_by_id(&parsed.header.key_id)
        .await?
        .ok_or_else(|| KmsError::AccessDenied(NO_SUCH_KEY.into()))?;
    let use_ = Use {
        context: Some(context),
        key_id,
        algorithm: None,
        grant_tokens,
        extra: None,
    };
    let key = ctx.authorize(operation, key, use_).await?;
    let realm = ctx.store.realm();
    if let Some(k) = key_id {
        let named = ctx.store.resolve(k).await?;
        if named.id() != key.id() {
            return Err(KmsError::IncorrectKey);
        }
    }
    key.check_usable(realm)?;
    dry_run(dry)?;
    let plaintext = ctx.store.decrypt(&key, &parsed, context).await?;
    ctx.audit_version(parsed.header.key_version);
    Ok(Opened {
        version: parsed.header.key_version,
        key,
        plaintext,
    })
}
