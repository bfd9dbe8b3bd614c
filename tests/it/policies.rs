//! Who may use which key: key policies, identity policies and grants
//! (DESIGN.md decision 14), black-box with aws-sdk-kms against the real
//! binary on a real SoftHSM2 token.
//!
//! One gateway, three principals:
//! * `tester` (the harness's credential): `allow = ["kms:*"]`, the admin;
//! * `app`: an identity policy allowing only GenerateDataKey* and Decrypt,
//!   and only with the encryption context `app=billing`; two access keys;
//! * `other`: no identity policy at all.

use crate::common::*;
use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, GrantConstraints, GrantOperation, KeyState};

const APP_KEY: &str = "AKIAKMSGATEAPPKEY001";
const APP_KEY_2: &str = "AKIAKMSGATEAPPKEY002";
const APP_SECRET: &str = "app-secret-0123456789abcdefghijklmnopqrs";
const APP_SECRET_2: &str = "app-secret-2123456789abcdefghijklmnopqrs";

fn user(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:user/{name}")
}

fn key_arn(id: &str) -> String {
    format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{id}")
}

struct Setup {
    gw: Gateway,
    admin: Client,
    app: Client,
    app2: Client,
    other: Client,
}

const ENV: [(&str, &str); 3] = [
    ("KMSGATE_TEST_APP_SECRET", APP_SECRET),
    ("KMSGATE_TEST_APP_SECRET_2", APP_SECRET_2),
    ("KMSGATE_TEST_OTHER_SECRET", OTHER_SECRET),
];

fn setup() -> Setup {
    let app_policy = r#"{"Version":"2012-10-17","Statement":[{"Sid":"DataKeysForBilling","Effect":"Allow","Action":["kms:GenerateDataKey*","kms:Decrypt"],"Resource":"arn:aws:kms:*:111122223333:key/*","Condition":{"StringEquals":{"kms:EncryptionContext:app":"billing"}}}]}"#;
    let token = Token::with_config(&format!(
        r#"
[[auth.credentials]]
access_key_id = "{APP_KEY}"
secret_env = "KMSGATE_TEST_APP_SECRET"
principal = "app"

[[auth.credentials]]
access_key_id = "{APP_KEY_2}"
secret_env = "KMSGATE_TEST_APP_SECRET_2"
principal = "app"

[[auth.credentials]]
access_key_id = "{OTHER_KEY}"
secret_env = "KMSGATE_TEST_OTHER_SECRET"
principal = "other"

[[auth.principals]]
name = "app"
policies = ['{app_policy}']

[[auth.principals]]
name = "other"

# Long enough that a second gateway sees another's grant only through its
# grant token within a test.
[keys]
sync_interval_ms = 600000
"#
    ));
    let gw = Gateway::start_on_with_env(token, &ENV);
    Setup {
        admin: gw.client(),
        app: gw.client_as(APP_KEY, APP_SECRET, REGION),
        app2: gw.client_as(APP_KEY_2, APP_SECRET_2, REGION),
        other: gw.client_as(OTHER_KEY, OTHER_SECRET, REGION),
        gw,
    }
}

fn billing() -> std::collections::HashMap<String, String> {
    [("app".to_string(), "billing".to_string())].into()
}

fn denied(principal: &str, action: &str, key: &str, why: &str) -> (String, String) {
    (
        "AccessDeniedException".into(),
        format!(
            "User: {} is not authorized to perform: kms:{action} on resource: {} {why}",
            user(principal),
            key_arn(key)
        ),
    )
}

fn no_identity_allow(principal: &str, action: &str, key: &str) -> (String, String) {
    denied(
        principal,
        action,
        key,
        &format!("because no identity-based policy allows the kms:{action} action"),
    )
}

#[tokio::test]
async fn a_data_key_principal_may_make_and_open_data_keys_under_its_context_and_nothing_else() {
    let s = setup();
    let id = create_key(&s.admin).await;

    // Both of app's access keys act as app.
    for app in [&s.app, &s.app2] {
        let dk = app
            .generate_data_key()
            .key_id(&id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(billing()))
            .send()
            .await
            .unwrap();
        let opened = app
            .decrypt()
            .ciphertext_blob(dk.ciphertext_blob.unwrap())
            .set_encryption_context(Some(billing()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            opened.plaintext.unwrap().as_ref(),
            dk.plaintext.unwrap().as_ref()
        );
    }

    // Another context, or none: refused by the condition.
    let e = s
        .app
        .generate_data_key()
        .key_id(&id)
        .key_spec(DataKeySpec::Aes256)
        .encryption_context("app", "hr")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        no_identity_allow("app", "GenerateDataKey", &id)
    );
    let blob = encrypt(&s.admin, &id, b"payroll").await;
    let e = s
        .app
        .decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), no_identity_allow("app", "Decrypt", &id));

    // No other operation, on a key or on none.
    let e = s.app.describe_key().key_id(&id).send().await.unwrap_err();
    assert_eq!(error_of(&e), no_identity_allow("app", "DescribeKey", &id));
    let e = s.app.disable_key().key_id(&id).send().await.unwrap_err();
    assert_eq!(error_of(&e), no_identity_allow("app", "DisableKey", &id));
    let e = s
        .app
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new("x"))
        .set_encryption_context(Some(billing()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), no_identity_allow("app", "Encrypt", &id));
    let e = s.app.create_key().send().await.unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "AccessDeniedException".into(),
            format!(
                "User: {} is not authorized to perform: kms:CreateKey because no identity-based policy allows the kms:CreateKey action",
                user("app")
            )
        )
    );
    let e = s.app.list_keys().send().await.unwrap_err();
    assert_eq!(error_of(&e).0, "AccessDeniedException");

    // A principal with no policy may do nothing with the key.
    let e = s
        .other
        .generate_data_key()
        .key_id(&id)
        .key_spec(DataKeySpec::Aes256)
        .set_encryption_context(Some(billing()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        no_identity_allow("other", "GenerateDataKey", &id)
    );

    // The refusals changed nothing.
    let m = key_metadata(&s.admin, &id).await;
    assert_eq!(m.key_state, Some(KeyState::Enabled));
    assert_eq!(
        s.admin
            .list_keys()
            .send()
            .await
            .unwrap()
            .keys
            .unwrap()
            .len(),
        1
    );
    // And they are audited, with the principal.
    assert!(
        s.gw.log_has(|l| l.contains("AccessDeniedException")
            && l.contains("DisableKey")
            && l.contains("app")),
        "no audit record of the refused DisableKey"
    );
}

#[tokio::test]
async fn key_policies_allow_directly_deny_explicitly_and_refuse_a_lockout() {
    let s = setup();
    let id = create_key(&s.admin).await;

    // The default key policy is AWS's, under the name "default".
    let got = s.admin.get_key_policy().key_id(&id).send().await.unwrap();
    assert_eq!(got.policy_name(), Some("default"));
    let default: serde_json::Value = serde_json::from_str(got.policy().unwrap()).unwrap();
    assert_eq!(
        default["Statement"][0]["Principal"]["AWS"],
        format!("arn:aws:iam::{ACCOUNT}:root")
    );
    assert_eq!(default["Statement"][0]["Action"], "kms:*");
    let names = s
        .admin
        .list_key_policies()
        .key_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(names.policy_names(), ["default".to_string()]);

    // A policy that names `other` directly lets it DescribeKey without any
    // identity policy, and denies app's Decrypt outright.
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Sid":"Admin","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"kms:*","Resource":"*"}},
            {{"Sid":"Other","Effect":"Allow","Principal":{{"AWS":"{}"}},"Action":"kms:DescribeKey","Resource":"*"}},
            {{"Sid":"NoDecryptForApp","Effect":"Deny","Principal":{{"AWS":"{}"}},"Action":"kms:Decrypt","Resource":"*"}}]}}"#,
        user("other"),
        user("app")
    );
    s.admin
        .put_key_policy()
        .key_id(&id)
        .policy(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(
        s.admin
            .get_key_policy()
            .key_id(&id)
            .send()
            .await
            .unwrap()
            .policy(),
        Some(policy.as_str()),
        "the policy comes back as it was put"
    );
    s.other.describe_key().key_id(&id).send().await.unwrap();
    let e = s.other.disable_key().key_id(&id).send().await.unwrap_err();
    assert_eq!(
        error_of(&e),
        no_identity_allow("other", "DisableKey", &id),
        "the root statement delegates to identity policies, and other has none"
    );
    // app may still make data keys (its identity policy allows it through
    // the root statement), but the explicit Deny beats its Allow.
    let dk = s
        .app
        .generate_data_key()
        .key_id(&id)
        .number_of_bytes(32)
        .set_encryption_context(Some(billing()))
        .send()
        .await
        .unwrap();
    let e = s
        .app
        .decrypt()
        .ciphertext_blob(dk.ciphertext_blob.unwrap())
        .set_encryption_context(Some(billing()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        denied(
            "app",
            "Decrypt",
            &id,
            "with an explicit deny in a resource-based policy"
        )
    );

    // A policy under which the caller could not change it again is refused
    // and changes nothing; with the bypass it is taken.
    let lockout = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{}"}},"Action":"kms:DescribeKey","Resource":"*"}}]}}"#,
        user("other")
    );
    let e = s
        .admin
        .put_key_policy()
        .key_id(&id)
        .policy(&lockout)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "MalformedPolicyDocumentException".into(),
            "The new key policy will not allow you to update the key policy in the future.".into()
        )
    );
    assert_eq!(
        s.admin
            .get_key_policy()
            .key_id(&id)
            .send()
            .await
            .unwrap()
            .policy(),
        Some(policy.as_str())
    );
    let e = s
        .admin
        .create_key()
        .policy(&lockout)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "MalformedPolicyDocumentException");

    // Malformed documents are refused and change nothing.
    for bad in [
        "not json",
        r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#,
        r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"nobody"},"Action":"kms:*","Resource":"*"}]}"#,
    ] {
        let e = s
            .admin
            .put_key_policy()
            .key_id(&id)
            .policy(bad)
            .send()
            .await
            .unwrap_err();
        assert_eq!(error_of(&e).0, "MalformedPolicyDocumentException", "{bad}");
    }
    assert_eq!(
        s.admin
            .get_key_policy()
            .key_id(&id)
            .send()
            .await
            .unwrap()
            .policy(),
        Some(policy.as_str())
    );
    assert_eq!(
        s.admin
            .list_keys()
            .send()
            .await
            .unwrap()
            .keys
            .unwrap()
            .len(),
        1
    );

    s.admin
        .put_key_policy()
        .key_id(&id)
        .policy(&lockout)
        .bypass_policy_lockout_safety_check(true)
        .send()
        .await
        .unwrap();
    let e = s.admin.disable_key().key_id(&id).send().await.unwrap_err();
    assert_eq!(
        error_of(&e),
        denied(
            "tester",
            "DisableKey",
            &id,
            "because no resource-based policy allows the kms:DisableKey action"
        )
    );

    // A key created with its own policy keeps it, across a restart.
    let own = s
        .admin
        .create_key()
        .policy(&policy)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let gw = Gateway::start_on_with_env(s.gw.stop(), &ENV);
    let admin = gw.client();
    assert_eq!(
        admin
            .get_key_policy()
            .key_id(&own)
            .send()
            .await
            .unwrap()
            .policy(),
        Some(policy.as_str())
    );
}

#[tokio::test]
async fn grants_let_a_grantee_use_a_key_until_retired_or_revoked() {
    let s = setup();
    let id = create_key(&s.admin).await;
    let blob = encrypt(&s.admin, &id, b"for other").await;
    let with_context = s
        .admin
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new("tagged"))
        .encryption_context("tenant", "7")
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();

    // other may not decrypt, then a grant (with a token used at once) lets it.
    let e = s
        .other
        .decrypt()
        .ciphertext_blob(blob.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), no_identity_allow("other", "Decrypt", &id));
    let g = s
        .admin
        .create_grant()
        .key_id(&id)
        .grantee_principal(user("other"))
        .retiring_principal(user("app"))
        .operations(GrantOperation::Decrypt)
        .operations(GrantOperation::DescribeKey)
        .name("other-decrypts")
        .send()
        .await
        .unwrap();
    let (grant_id, grant_token) = (g.grant_id.unwrap(), g.grant_token.unwrap());
    assert_eq!(grant_id.len(), 64);
    let out = s
        .other
        .decrypt()
        .ciphertext_blob(blob.clone())
        .grant_tokens(&grant_token)
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext.unwrap().as_ref(), b"for other");
    s.other.describe_key().key_id(&id).send().await.unwrap();
    // Only the granted operations.
    let e = s
        .other
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), no_identity_allow("other", "Encrypt", &id));
    // The same grant asked for again is the same grant.
    let again = s
        .admin
        .create_grant()
        .key_id(&id)
        .grantee_principal(user("other"))
        .retiring_principal(user("app"))
        .operations(GrantOperation::Decrypt)
        .operations(GrantOperation::DescribeKey)
        .name("other-decrypts")
        .send()
        .await
        .unwrap();
    assert_eq!(again.grant_id.as_deref(), Some(grant_id.as_str()));

    let listed = s.admin.list_grants().key_id(&id).send().await.unwrap();
    let grants = listed.grants();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].grant_id(), Some(grant_id.as_str()));
    assert_eq!(grants[0].grantee_principal(), Some(user("other").as_str()));
    assert_eq!(grants[0].name(), Some("other-decrypts"));
    assert_eq!(grants[0].key_id(), Some(key_arn(&id).as_str()));
    assert_eq!(
        grants[0].operations(),
        [GrantOperation::Decrypt, GrantOperation::DescribeKey]
    );

    // A constrained grant: only with its encryption context.
    let constrained = s
        .admin
        .create_grant()
        .key_id(&id)
        .grantee_principal(user("other"))
        .operations(GrantOperation::Encrypt)
        .constraints(
            GrantConstraints::builder()
                .encryption_context_subset("tenant", "7")
                .build(),
        )
        .send()
        .await
        .unwrap();
    s.other
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new("x"))
        .encryption_context("tenant", "7")
        .encryption_context("extra", "ok")
        .send()
        .await
        .unwrap();
    let e = s
        .other
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new("x"))
        .encryption_context("tenant", "8")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), no_identity_allow("other", "Encrypt", &id));
    // Decrypt with a context is still granted (the first grant has none).
    s.other
        .decrypt()
        .ciphertext_blob(with_context)
        .encryption_context("tenant", "7")
        .send()
        .await
        .unwrap();

    // The retiring principal sees and retires the first grant.
    let retirable = s
        .admin
        .list_retirable_grants()
        .retiring_principal(user("app"))
        .send()
        .await
        .unwrap();
    assert_eq!(retirable.grants().len(), 1);
    let e = s
        .other
        .retire_grant()
        .grant_token(&grant_token)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e).0,
        "AccessDeniedException",
        "other is not its retiring principal"
    );
    s.app
        .retire_grant()
        .grant_token(&grant_token)
        .send()
        .await
        .unwrap();
    let e = s
        .other
        .decrypt()
        .ciphertext_blob(blob.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), no_identity_allow("other", "Decrypt", &id));

    // The admin revokes the other one.
    s.admin
        .revoke_grant()
        .key_id(&id)
        .grant_id(constrained.grant_id.unwrap())
        .send()
        .await
        .unwrap();
    assert!(
        s.admin
            .list_grants()
            .key_id(&id)
            .send()
            .await
            .unwrap()
            .grants()
            .is_empty()
    );
    let e = s
        .admin
        .revoke_grant()
        .key_id(&id)
        .grant_id(&grant_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "NotFoundException");
    let e = s
        .admin
        .revoke_grant()
        .key_id(&id)
        .grant_id("not-a-grant-id")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "InvalidGrantIdException");
    let e = s
        .app
        .retire_grant()
        .grant_token("garbage")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "InvalidGrantTokenException");
}

#[tokio::test]
async fn a_grant_made_through_one_gateway_works_through_another_at_once_with_its_token() {
    let s = setup();
    let id = create_key(&s.admin).await;
    let blob = encrypt(&s.admin, &id, b"shared").await;
    let denied_key = create_key(&s.admin).await;
    let denied_blob = encrypt(&s.admin, &denied_key, b"not for other").await;
    // A second gateway on the same token, with a sync interval long enough
    // that only the grant token can make it see the grant in time.
    let second = Gateway::start_on_with_env(s.gw.token.clone(), &ENV);
    let other_there = second.client_as(OTHER_KEY, OTHER_SECRET, REGION);
    // The second gateway has the key cached before the grant exists.
    let e = other_there
        .decrypt()
        .ciphertext_blob(blob.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "AccessDeniedException");
    let g = s
        .admin
        .create_grant()
        .key_id(&id)
        .grantee_principal(user("other"))
        .operations(GrantOperation::Decrypt)
        .send()
        .await
        .unwrap();
    let out = other_there
        .decrypt()
        .ciphertext_blob(blob)
        .grant_tokens(g.grant_token.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext.unwrap().as_ref(), b"shared");

    // A grant token never beats an explicit Deny, even one the second
    // gateway learns of only with the grant: the fresh record's policy is
    // evaluated too.
    let deny = format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"kms:*","Resource":"*"}},
            {{"Effect":"Deny","Principal":{{"AWS":"{}"}},"Action":"kms:Decrypt","Resource":"*"}}]}}"#,
        user("other")
    );
    s.admin
        .put_key_policy()
        .key_id(&denied_key)
        .policy(deny)
        .send()
        .await
        .unwrap();
    let g = s
        .admin
        .create_grant()
        .key_id(&denied_key)
        .grantee_principal(user("other"))
        .operations(GrantOperation::Decrypt)
        .send()
        .await
        .unwrap();
    let e = other_there
        .decrypt()
        .ciphertext_blob(denied_blob)
        .grant_tokens(g.grant_token.unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        denied(
            "other",
            "Decrypt",
            &denied_key,
            "with an explicit deny in a resource-based policy"
        )
    );
}

/// CreateKey with one tag by `other`: the exception, or the
/// new key's id.
async fn create_tagged_key(other: &Client) -> Result<String, (String, String)> {
    other
        .create_key()
        .tags(
            aws_sdk_kms::types::Tag::builder()
                .tag_key("team")
                .tag_value("billing")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .map(|o| o.key_metadata.unwrap().key_id)
        .map_err(|e| error_of(&e))
}

async fn key_count(admin: &Client) -> usize {
    admin.list_keys().send().await.unwrap().keys().len()
}

#[tokio::test]
async fn create_key_with_tags_needs_tag_resource_on_every_key_as_in_aws() {
    // kms:TagResource on one key only (the one the test makes first) does
    // not cover a key not made yet.
    let one_key = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:CreateKey"],"Resource":"*"},{"Effect":"Allow","Action":"kms:TagResource","Resource":"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"}]}"#;
    let (gw, other) = Gateway::start_with_other(one_key);
    let admin = gw.client();
    assert_eq!(
        create_tagged_key(&other).await,
        Err((
            "AccessDeniedException".into(),
            format!(
                "User: {} is not authorized to perform: kms:TagResource because no identity-based policy allows the kms:TagResource action",
                user("other")
            )
        ))
    );
    assert_eq!(key_count(&admin).await, 0, "no key was made");
    // Without tags, kms:CreateKey is enough.
    other.create_key().send().await.unwrap();
    assert_eq!(key_count(&admin).await, 1);
    drop(gw);

    // kms:TagResource on every key of the account: the key is made, tagged.
    let every_key = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:CreateKey"],"Resource":"*"},{"Effect":"Allow","Action":"kms:TagResource","Resource":"arn:aws:kms:us-east-1:111122223333:key/*"}]}"#;
    let (gw, other) = Gateway::start_with_other(every_key);
    let admin = gw.client();
    let id = create_tagged_key(&other).await.unwrap();
    let tags = admin.list_resource_tags().key_id(&id).send().await.unwrap();
    assert_eq!(tags.tags().len(), 1);
    assert_eq!(tags.tags()[0].tag_key(), "team");
}

// ---------------------------------------------------------------- the documented set-up

/// The `toml` and `json` blocks of docs/security.md's "A least-privilege
/// set-up for one application", in order.
fn documented_setup() -> (String, String) {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/security.md")).unwrap();
    let section = text
        .split("### A least-privilege set-up for one application\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/security.md has the least-privilege set-up");
    let block = |fence: &str| {
        section
            .split(&format!("```{fence}\n"))
            .nth(1)
            .and_then(|rest| rest.split("\n```").next())
            .unwrap_or_else(|| panic!("no {fence} block in the set-up"))
            .to_owned()
    };
    (block("toml"), block("json"))
}

/// The access key id of `principal`'s credential in the documented config.
fn access_key_of(config: &toml::Table, principal: &str) -> String {
    config["auth"]["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["principal"].as_str() == Some(principal))
        .and_then(|c| c["access_key_id"].as_str())
        .unwrap_or_else(|| panic!("no credential for {principal}"))
        .to_owned()
}

/// The config and the key policy docs/security.md shows, installed as
/// they are (only the secret files are moved into the test's directory):
/// each statement of the key policy allows or denies what the text after
/// it says.
#[tokio::test]
async fn the_documented_least_privilege_set_up_does_what_docs_security_md_says() {
    const ADMIN_SECRET: &str = "doc-admin-secret-0123456789abcdefghijkl";
    const BILLING_SECRET: &str = "doc-billing-secret-0123456789abcdefghij";
    let (config, policy) = documented_setup();
    let parsed: toml::Table = toml::from_str(&config).expect("the documented config is TOML");
    let policy_json: serde_json::Value =
        serde_json::from_str(&policy).expect("the documented key policy is JSON");
    let sids: Vec<&str> = policy_json["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["Sid"].as_str())
        .collect();
    assert_eq!(
        sids,
        [
            "Admins",
            "BillingThroughItsIdentityPolicy",
            "NeverWithoutContext"
        ],
        "the statements this test checks"
    );

    let token = Token::new();
    for (file, secret) in [
        ("admin.secret", ADMIN_SECRET),
        ("billing.secret", BILLING_SECRET),
    ] {
        let path = token.path().join(file);
        std::fs::write(&path, secret).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut full = std::fs::read_to_string(token.config()).unwrap();
    full.push('\n');
    full.push_str(&config.replace("/etc/kmsgate/", &format!("{}/", token.path().display())));
    std::fs::write(token.config(), full).unwrap();
    let gw = Gateway::start_on(token);
    let admin = gw.client_as(&access_key_of(&parsed, "admin"), ADMIN_SECRET, REGION);
    let billing_client = gw.client_as(&access_key_of(&parsed, "billing"), BILLING_SECRET, REGION);

    // The administrator creates the key with the policy (the lockout check
    // passes: Admins lets them manage it).
    let key = admin
        .create_key()
        .policy(&policy)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let stored = admin
        .get_key_policy()
        .key_id(&key)
        .send()
        .await
        .unwrap()
        .policy
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stored).unwrap(),
        policy_json
    );

    let data_key = |who: &Client, context: Option<(&str, &str)>| {
        let mut request = who
            .generate_data_key()
            .key_id(&key)
            .key_spec(DataKeySpec::Aes256);
        if let Some((k, v)) = context {
            request = request.encryption_context(k, v);
        }
        async move { request.send().await.map_err(|e| error_of(&e)) }
    };
    let open = |who: &Client, blob: Blob, context: Option<(&str, &str)>| {
        let mut request = who.decrypt().ciphertext_blob(blob);
        if let Some((k, v)) = context {
            request = request.encryption_context(k, v);
        }
        async move { request.send().await.map_err(|e| error_of(&e)) }
    };
    let explicit_deny = |who: &str, action: &str| {
        denied(
            who,
            action,
            &key,
            "with an explicit deny in a resource-based policy",
        )
    };
    let billing_ctx = Some(("app", "billing"));

    // BillingThroughItsIdentityPolicy: billing makes and opens data keys
    // with {"app": "billing"} (the key policy delegates to the account,
    // the identity policy allows) ...
    let made = data_key(&billing_client, billing_ctx).await.unwrap();
    let blob = made.ciphertext_blob.unwrap();
    let opened = open(&billing_client, blob.clone(), billing_ctx)
        .await
        .unwrap();
    assert_eq!(
        opened.plaintext.unwrap().as_ref(),
        made.plaintext.unwrap().as_ref()
    );
    // ... and nothing else: another context, DescribeKey, DisableKey.
    assert_eq!(
        data_key(&billing_client, Some(("app", "payroll")))
            .await
            .unwrap_err(),
        no_identity_allow("billing", "GenerateDataKey", &key)
    );
    let e = billing_client
        .describe_key()
        .key_id(&key)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "AccessDeniedException");
    let e = billing_client
        .disable_key()
        .key_id(&key)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "AccessDeniedException");

    // NeverWithoutContext: no data key without the context, for billing
    // and for the administrator, whom Admins allows everything else.
    assert_eq!(
        data_key(&billing_client, None).await.unwrap_err(),
        explicit_deny("billing", "GenerateDataKey")
    );
    assert_eq!(
        data_key(&admin, None).await.unwrap_err(),
        explicit_deny("admin", "GenerateDataKey")
    );
    let sealed = admin
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(b"no context".to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    assert_eq!(
        open(&admin, sealed, None).await.unwrap_err(),
        explicit_deny("admin", "Decrypt")
    );
    // With a context the Deny does not apply to the administrator.
    let theirs = data_key(&admin, Some(("app", "ops"))).await.unwrap();
    open(
        &admin,
        theirs.ciphertext_blob.unwrap(),
        Some(("app", "ops")),
    )
    .await
    .unwrap();

    // Admins: the administrator manages the key (only this statement
    // allows them: the other two name the account and Deny).
    admin.disable_key().key_id(&key).send().await.unwrap();
    admin.enable_key().key_id(&key).send().await.unwrap();
    admin
        .update_key_description()
        .key_id(&key)
        .description("billing data keys")
        .send()
        .await
        .unwrap();
    assert_eq!(
        key_metadata(&admin, &key).await.description.as_deref(),
        Some("billing data keys")
    );
    // Without Admins, the same administrator could not (the lockout check
    // refuses such a policy for them, so it is shown on a second key whose
    // policy is the documented one less Admins, put by `tester`).
    let mut no_admins = policy_json.clone();
    no_admins["Statement"]
        .as_array_mut()
        .unwrap()
        .retain(|s| s["Sid"] != "Admins");
    no_admins["Statement"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "Sid": "Tester", "Effect": "Allow",
            "Principal": {"AWS": user("tester")}, "Action": "kms:*", "Resource": "*"
        }));
    let tester = gw.client();
    let second = tester
        .create_key()
        .policy(no_admins.to_string())
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let e = admin
        .disable_key()
        .key_id(&second)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "AccessDeniedException");
}
