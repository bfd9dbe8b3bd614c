//! Aliases: naming keys in every KeyId parameter, AWS's name rules, paging.

use crate::common::*;
use aws_sdk_kms::primitives::Blob;

#[tokio::test]
async fn aliases_name_keys_in_every_key_id_parameter() {
    let gw = Gateway::start();
    let kms = gw.client();
    let a = create_key(&kms).await;
    let b = create_key(&kms).await;
    kms.create_alias()
        .alias_name("alias/app")
        .target_key_id(&a)
        .send()
        .await
        .unwrap();
    let alias_arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:alias/app");
    for name in ["alias/app", alias_arn.as_str()] {
        let m = kms.describe_key().key_id(name).send().await.unwrap();
        assert_eq!(m.key_metadata.unwrap().key_id, a);
        let out = kms
            .encrypt()
            .key_id(name)
            .plaintext(Blob::new("hi"))
            .send()
            .await
            .unwrap();
        assert_eq!(out.key_id.as_deref(), Some(key_arn(&a).as_str()));
    }

    let e = kms
        .create_alias()
        .alias_name("alias/app")
        .target_key_id(&b)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "AlreadyExistsException".into(),
            format!("An alias with the name {alias_arn} already exists")
        )
    );

    kms.update_alias()
        .alias_name("alias/app")
        .target_key_id(&b)
        .send()
        .await
        .unwrap();
    let m = kms.describe_key().key_id("alias/app").send().await.unwrap();
    assert_eq!(m.key_metadata.unwrap().key_id, b);

    let listed = kms.list_aliases().key_id(&b).send().await.unwrap();
    let aliases = listed.aliases.unwrap();
    assert_eq!(aliases.len(), 1);
    assert_eq!(aliases[0].alias_name.as_deref(), Some("alias/app"));
    assert_eq!(aliases[0].alias_arn.as_deref(), Some(alias_arn.as_str()));
    assert_eq!(aliases[0].target_key_id.as_deref(), Some(b.as_str()));
    assert!(aliases[0].creation_date.is_some());
    let none = kms.list_aliases().key_id(&a).send().await.unwrap();
    assert!(none.aliases.unwrap_or_default().is_empty());

    kms.delete_alias()
        .alias_name("alias/app")
        .send()
        .await
        .unwrap();
    let e = kms
        .describe_key()
        .key_id("alias/app")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "NotFoundException".into(),
            format!("Alias {alias_arn} is not found.")
        )
    );
}

#[tokio::test]
async fn alias_names_are_validated_as_aws_does() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key(&kms).await;
    let e = kms
        .create_alias()
        .alias_name("app")
        .target_key_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "ValidationException".into(),
            "Alias must start with the prefix \"alias/\". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html".into()
        )
    );
    let e = kms
        .create_alias()
        .alias_name("alias/aws/mine")
        .target_key_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "InvalidAliasNameException");
    let e = kms
        .create_alias()
        .alias_name("alias/has space")
        .target_key_id(&id)
        .send()
        .await
        .unwrap_err();
    let (code, message) = error_of(&e);
    assert_eq!(code, "ValidationException");
    assert!(
        message.contains("Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$"),
        "{message}"
    );
    // Nothing was created by the refused requests.
    let all = kms.list_aliases().send().await.unwrap();
    assert!(all.aliases.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn list_aliases_pages() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key(&kms).await;
    for n in 0..5 {
        kms.create_alias()
            .alias_name(format!("alias/a{n}"))
            .target_key_id(&id)
            .send()
            .await
            .unwrap();
    }
    let first = kms.list_aliases().limit(3).send().await.unwrap();
    assert!(first.truncated);
    let names: Vec<_> = first
        .aliases
        .unwrap()
        .into_iter()
        .map(|a| a.alias_name.unwrap())
        .collect();
    assert_eq!(names, ["alias/a0", "alias/a1", "alias/a2"]);
    let rest = kms
        .list_aliases()
        .limit(3)
        .marker(first.next_marker.unwrap())
        .send()
        .await
        .unwrap();
    assert!(!rest.truncated);
    let names: Vec<_> = rest
        .aliases
        .unwrap()
        .into_iter()
        .map(|a| a.alias_name.unwrap())
        .collect();
    assert_eq!(names, ["alias/a3", "alias/a4"]);
}
