//! The policy engine applies what it accepts (DESIGN.md decision 23),
//! issue 18 items 1 and 2:
//! * CreateAlias, UpdateAlias and DeleteAlias are authorized on the alias
//!   ARN by the caller's identity policies, as well as on every key they
//!   touch (key policy, or identity policies it delegates to), as AWS
//!   does; a key policy's Resource is its key, never an alias;
//! * policy variables (`${aws:PrincipalArn}`, `${aws:username}`, ...) are
//!   substituted under Version 2012-10-17, and a policy using one kmsgate
//!   does not know is refused with the reason.
//!
//! Principals: `tester` (the harness's credential, `allow = ["kms:*"]`)
//! and `other`, with the one identity policy each test gives it
//! ([`Gateway::start_with_other`]).

use crate::common::*;
use aws_sdk_kms::Client;
use aws_sdk_kms::types::GrantOperation;

pub(crate) fn user(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:user/{name}")
}

fn alias_arn(name: &str) -> String {
    format!("arn:aws:kms:{REGION}:{ACCOUNT}:{name}")
}

fn refused(action: &str, resource: &str, why: &str) -> Result<(), (String, String)> {
    Err((
        "AccessDeniedException".into(),
        format!(
            "User: {} is not authorized to perform: kms:{action} on resource: {resource} {why}",
            user("other")
        ),
    ))
}

fn identity_deny(action: &str, resource: &str) -> Result<(), (String, String)> {
    refused(
        action,
        resource,
        "with an explicit deny in an identity-based policy",
    )
}

fn no_identity_allow(action: &str, resource: &str) -> Result<(), (String, String)> {
    refused(
        action,
        resource,
        &format!("because no identity-based policy allows the kms:{action} action"),
    )
}

async fn create_alias(kms: &Client, alias: &str, target: &str) -> Result<(), (String, String)> {
    kms.create_alias()
        .alias_name(alias)
        .target_key_id(target)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| error_of(&e))
}

pub(crate) async fn update_alias(
    kms: &Client,
    alias: &str,
    target: &str,
) -> Result<(), (String, String)> {
    kms.update_alias()
        .alias_name(alias)
        .target_key_id(target)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| error_of(&e))
}

pub(crate) async fn delete_alias(kms: &Client, alias: &str) -> Result<(), (String, String)> {
    kms.delete_alias()
        .alias_name(alias)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| error_of(&e))
}

/// Alias name -> target key id.
async fn aliases(kms: &Client) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = kms
        .list_aliases()
        .send()
        .await
        .unwrap()
        .aliases()
        .iter()
        .filter_map(|a| Some((a.alias_name()?.to_owned(), a.target_key_id()?.to_owned())))
        .collect();
    out.sort();
    out
}

async fn create_key_with_policy(admin: &Client, policy: &str) -> String {
    admin
        .create_key()
        .policy(policy)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id
}

#[tokio::test]
async fn an_identity_deny_on_alias_arns_refuses_create_update_and_delete_alias() {
    let policy = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":"kms:*","Resource":"*"},
        {"Effect":"Deny","Action":"kms:CreateAlias","Resource":"arn:aws:kms:us-east-1:111122223333:alias/prod-*"},
        {"Effect":"Deny","Action":"kms:UpdateAlias","Resource":"arn:aws:kms:us-east-1:111122223333:alias/prod-*"},
        {"Effect":"Deny","Action":"kms:DeleteAlias","Resource":"arn:aws:kms:us-east-1:111122223333:alias/prod-*"}]}"#
        .replace('\n', "");
    let (gw, other) = Gateway::start_with_other(&policy);
    let admin = gw.client();
    // Its own keys: the default key policy delegates to its kms:* Allow.
    let (a, b) = (create_key(&other).await, create_key(&other).await);

    assert_eq!(
        create_alias(&other, "alias/prod-db", &a).await,
        identity_deny("CreateAlias", &alias_arn("alias/prod-db"))
    );
    create_alias(&other, "alias/dev-db", &a).await.unwrap();
    create_alias(&admin, "alias/prod-db", &a).await.unwrap();
    assert_eq!(
        update_alias(&other, "alias/prod-db", &b).await,
        identity_deny("UpdateAlias", &alias_arn("alias/prod-db"))
    );
    assert_eq!(
        delete_alias(&other, "alias/prod-db").await,
        identity_deny("DeleteAlias", &alias_arn("alias/prod-db"))
    );
    update_alias(&other, "alias/dev-db", &b).await.unwrap();
    // Nothing was changed by the refusals.
    assert_eq!(
        aliases(&admin).await,
        vec![
            ("alias/dev-db".to_owned(), b.clone()),
            ("alias/prod-db".to_owned(), a.clone())
        ]
    );
    delete_alias(&other, "alias/dev-db").await.unwrap();
    assert_eq!(aliases(&admin).await, vec![("alias/prod-db".to_owned(), a)]);
}

#[tokio::test]
async fn an_allow_on_alias_arns_grants_those_aliases_and_no_others() {
    // Alias operations on dev aliases, and on every key (through the keys'
    // default policies); nothing on other aliases.
    let policy = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":["kms:CreateAlias","kms:UpdateAlias","kms:DeleteAlias"],"Resource":"arn:aws:kms:us-east-1:111122223333:alias/dev-*"},
        {"Effect":"Allow","Action":["kms:CreateAlias","kms:UpdateAlias","kms:DeleteAlias"],"Resource":"arn:aws:kms:us-east-1:111122223333:key/*"}]}"#
        .replace('\n', "");
    let (gw, other) = Gateway::start_with_other(&policy);
    let admin = gw.client();
    let (a, b) = (create_key(&admin).await, create_key(&admin).await);

    create_alias(&other, "alias/dev-app", &a).await.unwrap();
    assert_eq!(
        create_alias(&other, "alias/prod-app", &a).await,
        no_identity_allow("CreateAlias", &alias_arn("alias/prod-app"))
    );
    create_alias(&admin, "alias/prod-db", &a).await.unwrap();
    assert_eq!(
        update_alias(&other, "alias/prod-db", &b).await,
        no_identity_allow("UpdateAlias", &alias_arn("alias/prod-db"))
    );
    assert_eq!(
        delete_alias(&other, "alias/prod-db").await,
        no_identity_allow("DeleteAlias", &alias_arn("alias/prod-db"))
    );
    update_alias(&other, "alias/dev-app", &b).await.unwrap();
    assert_eq!(
        aliases(&admin).await,
        vec![
            ("alias/dev-app".to_owned(), b.clone()),
            ("alias/prod-db".to_owned(), a.clone())
        ]
    );
    delete_alias(&other, "alias/dev-app").await.unwrap();
    assert_eq!(aliases(&admin).await, vec![("alias/prod-db".to_owned(), a)]);
}

#[tokio::test]
async fn a_key_policy_allows_the_key_side_of_alias_operations_never_the_alias() {
    // Identity: alias operations on team aliases only, nothing on keys.
    let policy = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":["kms:CreateAlias","kms:UpdateAlias","kms:DeleteAlias"],"Resource":"arn:aws:kms:us-east-1:111122223333:alias/team-*"}]}"#
        .replace('\n', "");
    let (gw, other) = Gateway::start_with_other(&policy);
    let admin = gw.client();
    // The key policies name other for alias operations on the key.
    let names_other = format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"kms:*","Resource":"*"}},
            {{"Effect":"Allow","Principal":{{"AWS":"{}"}},"Action":["kms:CreateAlias","kms:UpdateAlias","kms:DeleteAlias"],"Resource":"*"}}]}}"#,
        user("other")
    );
    let a = create_key_with_policy(&admin, &names_other).await;
    let b = create_key_with_policy(&admin, &names_other).await;

    create_alias(&other, "alias/team-app", &a).await.unwrap();
    // The key policy allows the key side; the alias needs an IAM Allow.
    assert_eq!(
        create_alias(&other, "alias/ops-app", &a).await,
        no_identity_allow("CreateAlias", &alias_arn("alias/ops-app"))
    );
    create_alias(&admin, "alias/ops-db", &a).await.unwrap();
    assert_eq!(
        update_alias(&other, "alias/ops-db", &b).await,
        no_identity_allow("UpdateAlias", &alias_arn("alias/ops-db"))
    );
    assert_eq!(
        delete_alias(&other, "alias/ops-db").await,
        no_identity_allow("DeleteAlias", &alias_arn("alias/ops-db"))
    );
    update_alias(&other, "alias/team-app", &b).await.unwrap();
    assert_eq!(
        aliases(&admin).await,
        vec![
            ("alias/ops-db".to_owned(), a.clone()),
            ("alias/team-app".to_owned(), b.clone())
        ]
    );

    // A Deny in the key policy refuses on the key.
    let deny = format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"kms:*","Resource":"*"}},
            {{"Effect":"Allow","Principal":{{"AWS":"{other}"}},"Action":"kms:*Alias","Resource":"*"}},
            {{"Effect":"Deny","Principal":{{"AWS":"{other}"}},"Action":"kms:DeleteAlias","Resource":"*"}}]}}"#,
        other = user("other")
    );
    admin
        .put_key_policy()
        .key_id(&b)
        .policy(deny)
        .send()
        .await
        .unwrap();
    assert_eq!(
        delete_alias(&other, "alias/team-app").await,
        refused(
            "DeleteAlias",
            &key_arn(&b),
            "with an explicit deny in a resource-based policy"
        )
    );

    // A key policy speaks for its key: a statement on an alias ARN would
    // never apply, and is refused.
    let on_alias = format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"kms:*","Resource":"*"}},
            {{"Effect":"Deny","Principal":{{"AWS":"{}"}},"Action":"kms:UpdateAlias","Resource":"arn:aws:kms:{REGION}:{ACCOUNT}:alias/team-*"}}]}}"#,
        user("other")
    );
    let e = admin
        .put_key_policy()
        .key_id(&a)
        .policy(&on_alias)
        .send()
        .await
        .unwrap_err();
    let (kind, message) = error_of(&e);
    assert_eq!(kind, "MalformedPolicyDocumentException", "{message}");
    assert!(
        message.contains("a resource that is not the key")
            && message.contains(&format!("arn:aws:kms:{REGION}:{ACCOUNT}:alias/team-*")),
        "{message}"
    );
    // Still the first policy: other may move the alias off a.
    update_alias(&other, "alias/team-app", &a).await.unwrap();
}

#[tokio::test]
async fn a_deny_on_grants_to_oneself_through_principal_arn_refuses_only_self_grants() {
    let policy = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":"kms:*","Resource":"*"},
        {"Sid":"NoSelfGrants","Effect":"Deny","Action":"kms:CreateGrant","Resource":"*",
         "Condition":{"StringEquals":{"kms:GranteePrincipal":"${aws:PrincipalArn}"}}}]}"#
        .replace('\n', "");
    let (gw, other) = Gateway::start_with_other(&policy);
    let admin = gw.client();
    let key = create_key(&other).await;
    let grant = |grantee: String| {
        other
            .create_grant()
            .key_id(&key)
            .grantee_principal(grantee)
            .operations(GrantOperation::Decrypt)
            .send()
    };
    let e = grant(user("other")).await.unwrap_err();
    assert_eq!(
        Err(error_of(&e)),
        identity_deny("CreateGrant", &key_arn(&key))
    );
    grant(user("tester")).await.unwrap();
    let grantees: Vec<String> = admin
        .list_grants()
        .key_id(&key)
        .send()
        .await
        .unwrap()
        .grants()
        .iter()
        .filter_map(|g| g.grantee_principal().map(str::to_owned))
        .collect();
    assert_eq!(grantees, vec![user("tester")]);
}

#[tokio::test]
async fn username_in_a_resource_names_the_callers_own_aliases() {
    let policy = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":"kms:*","Resource":"arn:aws:kms:us-east-1:111122223333:key/*"},
        {"Effect":"Allow","Action":["kms:CreateAlias","kms:DeleteAlias"],"Resource":"arn:aws:kms:us-east-1:111122223333:alias/${aws:username}/*"}]}"#
        .replace('\n', "");
    let (gw, other) = Gateway::start_with_other(&policy);
    let admin = gw.client();
    let key = create_key(&admin).await;
    create_alias(&other, "alias/other/db", &key).await.unwrap();
    assert_eq!(
        create_alias(&other, "alias/tester/db", &key).await,
        no_identity_allow("CreateAlias", &alias_arn("alias/tester/db"))
    );
    delete_alias(&other, "alias/other/db").await.unwrap();
    assert_eq!(aliases(&admin).await, vec![]);
}

#[tokio::test]
async fn a_policy_with_a_variable_kmsgate_does_not_know_is_refused_with_the_reason() {
    let statement = r#"{"Effect":"Deny","Principal":"*","Action":"kms:CreateGrant","Resource":"*","Condition":{"StringEquals":{"kms:GranteePrincipal":"${aws:userid}"}}}"#;
    let root = format!(
        r#"{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"kms:*","Resource":"*"}}"#
    );
    let gw = Gateway::start();
    let admin = gw.client();
    let e = admin
        .create_key()
        .policy(format!(
            r#"{{"Version":"2012-10-17","Statement":[{root},{statement}]}}"#
        ))
        .send()
        .await
        .unwrap_err();
    let (kind, message) = error_of(&e);
    assert_eq!(kind, "MalformedPolicyDocumentException", "{message}");
    assert!(
        message.contains("unsupported policy variable: ${aws:userid}"),
        "{message}"
    );
    // Under the 2008-10-17 grammar `${...}` is text, as in IAM.
    admin
        .create_key()
        .policy(format!(
            r#"{{"Version":"2008-10-17","Statement":[{root},{statement}]}}"#
        ))
        .send()
        .await
        .unwrap();
    drop(gw);

    // An identity policy: the config does not load (the doctor says why;
    // serve builds its identity policies through the same code).
    let token = Token::with_config(
        r#"
[[auth.principals]]
name = "other"
policies = ['{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Resource":"arn:aws:kms:us-east-1:111122223333:alias/${aws:SourceIp}"}}']
"#,
    );
    let (ok, out, err) = token.run_cli(&["doctor", "--config", &token.config().to_string_lossy()]);
    assert!(!ok, "{out}\n{err}");
    assert!(
        out.contains("principal other: policy 1: Policy contains an unsupported policy variable: ${aws:SourceIp}"),
        "{out}\n{err}"
    );
}

#[tokio::test]
async fn a_policy_naming_what_no_request_can_match_is_refused() {
    // A misspelt action or a user ARN with a path never matches a request:
    // a Deny written with one would never apply.
    let gw = Gateway::start();
    let admin = gw.client();
    let key = create_key(&admin).await;
    let root = format!(
        r#"{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"kms:*","Resource":"*"}}"#
    );
    for (deny, reason) in [
        (
            r#"{"Effect":"Deny","Principal":"*","Action":["kms:Encrypt","kms:Decrpyt"],"Resource":"*"}"#.to_owned(),
            "an action that AWS KMS does not have: kms:Decrpyt".to_owned(),
        ),
        (
            format!(
                r#"{{"Effect":"Deny","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:user/dept/tester"}},"Action":"kms:Decrypt","Resource":"*"}}"#
            ),
            "invalid principals".to_owned(),
        ),
    ] {
        let e = admin
            .put_key_policy()
            .key_id(&key)
            .policy(format!(
                r#"{{"Version":"2012-10-17","Statement":[{root},{deny}]}}"#
            ))
            .send()
            .await
            .unwrap_err();
        let (kind, message) = error_of(&e);
        assert_eq!(kind, "MalformedPolicyDocumentException", "{message}");
        assert!(message.contains(&reason), "{message}");
    }
    // Nothing changed: still the default policy.
    let policy = admin
        .get_key_policy()
        .key_id(&key)
        .send()
        .await
        .unwrap()
        .policy
        .unwrap();
    assert!(policy.contains("key-default-1"), "{policy}");
}
