//! Alias names and alias targets: the checks CreateAlias, UpdateAlias and
//! DeleteAlias share.

use std::sync::Arc;

use uuid::Uuid;

use super::Ctx;
use super::authorize::Use;
use super::shapes::pending_deletion;
use super::validate::Violations;
use crate::arn::KeyRef;
use crate::error::KmsError;
use crate::keystore::{Key, KeyState, StoreError};

const ALIAS_PATTERN: &str = "^[a-zA-Z0-9:/_-]+$";

/// Validates an AliasName member: AWS's length, pattern and prefix rules.
pub fn check_alias_name(v: &mut Violations, name: &Option<String>) {
    if v.required("aliasName", name)
        && let Some(n) = name
    {
        v.str_len("aliasName", n, 1, 256);
        v.pattern(
            "aliasName",
            n,
            n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'/' | b'_' | b'-')),
            ALIAS_PATTERN,
        );
    }
}

/// The prefix rule, checked after the model's constraints.
pub fn check_alias_prefix(name: &str) -> Result<(), KmsError> {
    if !name.starts_with("alias/") {
        return Err(KmsError::Validation(
            "Alias must start with the prefix \"alias/\". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html".into(),
        ));
    }
    if name.len() == "alias/".len() {
        return Err(KmsError::InvalidAliasName(
            "Alias name must have at least one character after \"alias/\".".into(),
        ));
    }
    Ok(())
}

/// AWS's own rule, stricter than the model's pattern: an alias name holds
/// only letters, digits, `/`, `_` and `-` (so no `:`). Checked after the
/// model's constraints and the prefix rule.
pub fn check_alias_characters(name: &str) -> Result<(), KmsError> {
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'))
    {
        return Ok(());
    }
    Err(KmsError::Validation(format!(
        "{name} contains invalid characters for an alias"
    )))
}

/// Resolves TargetKeyId: a key id or key ARN (not an alias), of a key that
/// is not pending deletion.
pub async fn target_key(ctx: &Ctx<'_>, target: &str) -> Result<Arc<Key>, KmsError> {
    let realm = ctx.store.realm();
    if let KeyRef::Alias(_) = realm.parse_key_ref(target)? {
        return Err(KmsError::Validation(
            "TargetKeyId must be a key ID or key ARN, not an alias.".into(),
        ));
    }
    let key = ctx.store.resolve(target).await?;
    if key.record.state == KeyState::PendingDeletion {
        return Err(pending_deletion(realm, &key));
    }
    Ok(key)
}

/// How often UpdateAlias and DeleteAlias authorize afresh because another
/// gateway moved the alias meanwhile, before the client is told to retry.
pub const MOVES: u32 = 4;

/// The error for an alias that does not exist.
pub fn alias_not_found(ctx: &Ctx<'_>, alias_name: &str) -> KmsError {
    StoreError::AliasNotFound {
        arn: ctx.store.realm().alias_arn(alias_name),
    }
    .into()
}

/// The error when the alias kept moving ([`MOVES`] times): retryable.
pub fn kept_moving() -> KmsError {
    StoreError::Conflict.into()
}

/// Authorizes CreateAlias, UpdateAlias or DeleteAlias (`operation`) on the
/// alias itself, as AWS does: on its ARN, by the caller's identity
/// policies alone (an alias has no resource policy; key policies speak
/// for keys). An explicit Deny there refuses; an Allow there is needed as
/// well as permission on every key the operation touches.
pub fn authorize_alias(ctx: &Ctx<'_>, operation: &str, alias_name: &str) -> Result<(), KmsError> {
    let arn = ctx.store.realm().alias_arn(alias_name);
    ctx.authorize_by_identity(operation, &arn)
}

/// Authorizes UpdateAlias or DeleteAlias (`operation`) on the key the
/// alias names, `target`, after [`authorize_alias`]. AWS asks the key's
/// policy too, not only the alias's: a key that is gone (a healthy listing
/// has no record of it) leaves no key policy, so the decision already made
/// on the alias's ARN stands alone. A key whose record cannot be read
/// decides nothing: its error (retryable) refuses the request.
pub async fn authorize_on_target(
    ctx: &mut Ctx<'_>,
    operation: &str,
    target: &Uuid,
) -> Result<(), KmsError> {
    match ctx.store.key_by_id(target).await? {
        Some(key) => ctx
            .authorize(operation, key, Use::default())
            .await
            .map(drop),
        None => Ok(()),
    }
}
