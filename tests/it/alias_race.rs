//! UpdateAlias and DeleteAlias are authorized on the key the alias names
//! on the token, never on a stale copy and never not at all (DESIGN.md
//! decision 21: the check is decided by the commit that changes the
//! alias).
//!
//! Principals: `tester` (the harness's credential, `allow = ["kms:*"]`)
//! and `other`, whose identity policy allows UpdateAlias and DeleteAlias
//! on the aliases `race` and `damaged` only (AWS authorizes an alias by
//! IAM policies) and nothing on keys: it may change those aliases of
//! exactly the keys whose key policies name it.

use crate::common::*;
use crate::policy_alias::{delete_alias, update_alias, user};
use crate::unreadable::inject;
use aws_sdk_kms::Client;

const ENV: [(&str, &str); 1] = [("KMSGATE_TEST_OTHER_SECRET", OTHER_SECRET)];

/// A token whose config adds `other`; the sync interval is long enough
/// that a gateway learns of another's change only by reading the token.
fn token() -> std::sync::Arc<Token> {
    Token::with_config(&format!(
        r#"
[[auth.credentials]]
access_key_id = "{OTHER_KEY}"
secret_env = "KMSGATE_TEST_OTHER_SECRET"
principal = "other"

[[auth.principals]]
name = "other"
policies = ['{{"Version":"2012-10-17","Statement":{{"Effect":"Allow","Action":["kms:UpdateAlias","kms:DeleteAlias"],"Resource":["arn:aws:kms:{REGION}:{ACCOUNT}:alias/race","arn:aws:kms:{REGION}:{ACCOUNT}:alias/damaged"]}}}}']

[keys]
sync_interval_ms = 600000
"#
    ))
}

fn other(gw: &Gateway) -> Client {
    gw.client_as(OTHER_KEY, OTHER_SECRET, REGION)
}

/// Lets `other` change the key's aliases (and the account everything).
async fn let_other_move_aliases(admin: &Client, id: &str) {
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"kms:*","Resource":"*"}},
            {{"Effect":"Allow","Principal":{{"AWS":"{}"}},"Action":["kms:UpdateAlias","kms:DeleteAlias"],"Resource":"*"}}]}}"#,
        user("other")
    );
    admin
        .put_key_policy()
        .key_id(id)
        .policy(policy)
        .send()
        .await
        .unwrap();
}

async fn alias_names(kms: &Client) -> Vec<String> {
    kms.list_aliases()
        .send()
        .await
        .unwrap()
        .aliases()
        .iter()
        .filter_map(|a| a.alias_name().map(str::to_owned))
        .collect()
}

fn no_identity_allow(action: &str, resource: &str) -> (String, String) {
    (
        "AccessDeniedException".into(),
        format!(
            "User: {} is not authorized to perform: kms:{action} on resource: {resource} because no identity-based policy allows the kms:{action} action",
            user("other")
        ),
    )
}

#[tokio::test]
async fn update_alias_is_authorized_on_the_key_the_alias_names_on_the_token() {
    let token = token();
    let first = Gateway::start_on_with_env(token.clone(), &ENV);
    let second = Gateway::start_on_with_env(token.clone(), &ENV);
    let admin = first.client();
    let (a, b, c) = (
        create_key(&admin).await,
        create_key(&admin).await,
        create_key(&admin).await,
    );
    let_other_move_aliases(&admin, &a).await;
    let_other_move_aliases(&admin, &b).await;
    admin
        .create_alias()
        .alias_name("alias/race")
        .target_key_id(&a)
        .send()
        .await
        .unwrap();
    // other moves the alias between A and B, never to or from C.
    let other_first = other(&first);
    update_alias(&other_first, "alias/race", &b).await.unwrap();
    update_alias(&other_first, "alias/race", &a).await.unwrap();
    assert_eq!(
        update_alias(&other_first, "alias/race", &c).await,
        Err(no_identity_allow("UpdateAlias", &key_arn(&c)))
    );

    // The admin moves it to C through the second gateway; the first still
    // has it on A in its cache.
    update_alias(&second.client(), "alias/race", &c)
        .await
        .unwrap();
    assert_eq!(
        update_alias(&other_first, "alias/race", &b).await,
        Err(no_identity_allow("UpdateAlias", &key_arn(&c)))
    );
    // The token still names C (a new gateway reads it afresh).
    let names = |token| async move {
        let fresh = Gateway::start_on_with_env(token, &ENV);
        key_metadata(&fresh.client(), "alias/race").await.key_id
    };
    assert_eq!(names(token.clone()).await, c);
    // The admin may move it from C, through the stale gateway too.
    update_alias(&admin, "alias/race", &b).await.unwrap();
    assert_eq!(names(token.clone()).await, b);

    // The same for DeleteAlias: the admin moves it back to C through the
    // second gateway (whose cache still says C), the first still has B.
    update_alias(&second.client(), "alias/race", &c)
        .await
        .unwrap();
    assert_eq!(
        delete_alias(&other_first, "alias/race").await,
        Err(no_identity_allow("DeleteAlias", &key_arn(&c)))
    );
    assert_eq!(names(token).await, c);
}

#[tokio::test]
async fn aliases_of_a_key_that_is_gone_still_need_permission() {
    let token = token();
    // An alias whose key is gone (no record of it on the token), and one
    // whose key's record does not parse.
    let (gone, damaged) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let alias = |name: &str, target: &uuid::Uuid| {
        (
            format!("kmsgate/alias/{name}"),
            format!(
                r#"{{"format":1,"revision":0,"name":"alias/{name}","target":"{target}","created":0.0,"updated":0.0}}"#
            )
            .into_bytes(),
        )
    };
    inject(
        &token,
        &[
            alias("orphan", &gone),
            alias("damaged", &damaged),
            (format!("kmsgate/key/{damaged}"), b"{\"format\":1,".to_vec()),
        ],
    );
    let gw = Gateway::start_on_with_env(token, &ENV);
    let admin = gw.client();
    let other = other(&gw);
    let a = create_key(&admin).await;
    let_other_move_aliases(&admin, &a).await;
    let orphan_arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:alias/orphan");

    assert_eq!(
        delete_alias(&other, "alias/orphan").await,
        Err(no_identity_allow("DeleteAlias", &orphan_arn))
    );
    assert_eq!(
        update_alias(&other, "alias/orphan", &a).await,
        Err(no_identity_allow("UpdateAlias", &orphan_arn))
    );
    // A key record that does not parse decides nothing: refused, retryable.
    let (name, message) = delete_alias(&other, "alias/damaged").await.unwrap_err();
    assert_eq!(name, "KeyUnavailableException", "{message}");
    let names = alias_names(&admin).await;
    assert!(names.contains(&"alias/orphan".to_owned()), "{names:?}");
    assert!(names.contains(&"alias/damaged".to_owned()), "{names:?}");

    // A principal whose identity policy allows it may clear the orphan.
    delete_alias(&admin, "alias/orphan").await.unwrap();
    assert!(
        !alias_names(&admin)
            .await
            .contains(&"alias/orphan".to_owned())
    );
}
