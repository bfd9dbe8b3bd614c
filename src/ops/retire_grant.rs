//! RetireGrant: by the grant's retiring principal, or its grantee when the
//! grant allows RetireGrant; the grant named by its token or by key and
//! grant id.

use serde::Deserialize;

use super::Ctx;
use super::grant_shapes::{check_grant_id, grant_not_found, parse_grant_token, remove_grant};
use super::key_arg::resolve_key_id_or_arn;
use super::shapes::{Empty, check_key_id, dry_run};
use super::validate::Violations;
use crate::error::{KmsError, access_denied};
use crate::keystore::GrantRecord;
use crate::policy::Refusal;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RetireGrantRequest {
    pub grant_token: Option<String>,
    pub key_id: Option<String>,
    pub grant_id: Option<String>,
    pub dry_run: Option<bool>,
}

pub async fn handle(ctx: &mut Ctx<'_>, req: RetireGrantRequest) -> Result<Empty, KmsError> {
    let mut v = Violations::new();
    if let Some(t) = &req.grant_token {
        v.str_len("grantToken", t, 1, 8192);
    }
    if req.key_id.is_some() {
        check_key_id(&mut v, "keyId", &req.key_id);
    }
    if let Some(g) = &req.grant_id {
        v.str_len("grantId", g, 1, 128);
    }
    v.finish()?;
    let (key, grant_id) = match (&req.grant_token, &req.key_id, &req.grant_id) {
        (Some(t), _, _) => {
            let (key_id, grant_id) = parse_grant_token(t)?;
            let key = ctx
                .store
                .fresh_key(&key_id)
                .await?
                .ok_or_else(|| grant_not_found(&grant_id))?;
            if let Some(k) = &req.key_id
                && resolve_key_id_or_arn(ctx, k).await?.id() != key.id()
            {
                return Err(KmsError::InvalidGrantToken(
                    "The grant token does not belong to the key given.".into(),
                ));
            }
            (key, grant_id)
        }
        (None, Some(k), Some(g)) => {
            check_grant_id(g)?;
            (resolve_key_id_or_arn(ctx, k).await?, g.clone())
        }
        _ => {
            return Err(KmsError::Validation(
                "Either GrantToken, or both KeyId and GrantId, must be specified.".into(),
            ));
        }
    };
    let realm = ctx.store.realm();
    let key_arn = realm.key_arn(key.id());
    ctx.audit(key_arn.clone());
    let grant: &GrantRecord = key
        .record
        .grants
        .iter()
        .find(|g| g.grant_id == grant_id)
        .ok_or_else(|| grant_not_found(&grant_id))?;
    let me = ctx.caller.arn.as_str();
    let may = grant.retiring.as_deref() == Some(me)
        || (grant.grantee == me && grant.operations.iter().any(|o| o == "RetireGrant"));
    if !may {
        return Err(access_denied(
            me,
            "kms:RetireGrant",
            Some(&key_arn),
            Refusal::NoKeyPolicyAllow,
        ));
    }
    dry_run(req.dry_run)?;
    remove_grant(ctx, key.id(), &grant_id).await
}
