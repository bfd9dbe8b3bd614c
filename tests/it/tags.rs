//! Black-box specification of tags and descriptions: TagResource,
//! UntagResource, ListResourceTags and UpdateKeyDescription on the real
//! binary and a real SoftHSM2 token, driven by aws-sdk-kms, and by raw HTTP
//! where the exact text of a validation message is the point.

use crate::common::*;
use aws_sdk_kms::types::Tag;
use serde_json::json;

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder()
        .tag_key(key)
        .tag_value(value)
        .build()
        .unwrap()
}

fn pairs(tags: &[(&str, &str)]) -> Vec<(String, String)> {
    tags.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn create_key_with(kms: &aws_sdk_kms::Client, tags: Vec<Tag>) -> String {
    kms.create_key()
        .set_tags(Some(tags))
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id
}

/// Every tag of the key, all pages, as (key, value) pairs in listed order.
async fn tags_of(kms: &aws_sdk_kms::Client, key_id: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut marker = None;
    loop {
        let page = kms
            .list_resource_tags()
            .key_id(key_id)
            .set_marker(marker)
            .send()
            .await
            .unwrap();
        out.extend(
            page.tags
                .unwrap_or_default()
                .into_iter()
                .map(|t| (t.tag_key, t.tag_value)),
        );
        if !page.truncated {
            return out;
        }
        marker = page.next_marker;
    }
}

async fn description_of(kms: &aws_sdk_kms::Client, key_id: &str) -> String {
    key_metadata(kms, key_id).await.description.unwrap()
}

fn numbered_tags(prefix: &str, n: usize) -> Vec<Tag> {
    (0..n)
        .map(|i| tag(&format!("{prefix}{i:02}"), "v"))
        .collect()
}

#[tokio::test]
async fn tags_given_at_create_key_are_listed() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key_with(
        &kms,
        vec![
            tag("team", "payments"),
            tag("env", "prod"),
            tag("empty", ""),
        ],
    )
    .await;
    let out = kms.list_resource_tags().key_id(&id).send().await.unwrap();
    assert!(!out.truncated);
    assert!(out.next_marker.is_none());
    // Sorted by tag key, whatever the order they were given in.
    let listed: Vec<_> = out
        .tags
        .unwrap()
        .into_iter()
        .map(|t| (t.tag_key, t.tag_value))
        .collect();
    assert_eq!(
        listed,
        pairs(&[("empty", ""), ("env", "prod"), ("team", "payments")])
    );
    // A key created without tags lists none, and says so with an empty list.
    let plain = create_key_with(&kms, vec![]).await;
    let r = gw.raw(
        Some("TrentService.ListResourceTags"),
        json!({"KeyId": plain}).to_string().as_bytes(),
        true,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"Tags": [], "Truncated": false}));
}

#[tokio::test]
async fn tag_resource_adds_and_overwrites() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key_with(&kms, vec![tag("a", "1")]).await;
    let r = gw.raw(
        Some("TrentService.TagResource"),
        json!({"KeyId": id, "Tags": [{"TagKey": "b", "TagValue": "2"}]})
            .to_string()
            .as_bytes(),
        true,
    );
    assert_eq!((r.status, &r.body), (200, &json!({})));
    // By key ARN too; an existing key gets its new value, case matters.
    kms.tag_resource()
        .key_id(key_arn(&id))
        .tags(tag("a", "one"))
        .tags(tag("A", ""))
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags_of(&kms, &id).await,
        pairs(&[("A", ""), ("a", "one"), ("b", "2")])
    );
    // A disabled key can be tagged.
    kms.disable_key().key_id(&id).send().await.unwrap();
    kms.tag_resource()
        .key_id(&id)
        .tags(tag("b", "two"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags_of(&kms, &id).await,
        pairs(&[("A", ""), ("a", "one"), ("b", "two")])
    );
}

#[tokio::test]
async fn untag_removes_only_named_keys() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key_with(&kms, vec![tag("a", "1"), tag("b", "2"), tag("c", "3")]).await;
    // A key the key does not have is ignored, not an error.
    kms.untag_resource()
        .key_id(&id)
        .tag_keys("a")
        .tag_keys("not-there")
        .send()
        .await
        .unwrap();
    assert_eq!(tags_of(&kms, &id).await, pairs(&[("b", "2"), ("c", "3")]));
    // Tag keys are case-sensitive: "B" is not "b".
    kms.untag_resource()
        .key_id(key_arn(&id))
        .tag_keys("B")
        .send()
        .await
        .unwrap();
    assert_eq!(tags_of(&kms, &id).await, pairs(&[("b", "2"), ("c", "3")]));
    kms.untag_resource()
        .key_id(&id)
        .tag_keys("b")
        .tag_keys("c")
        .send()
        .await
        .unwrap();
    assert_eq!(tags_of(&kms, &id).await, vec![]);
}

#[tokio::test]
async fn fifty_one_tags_is_too_many_and_changes_nothing() {
    let gw = Gateway::start();
    let kms = gw.client();
    let too_many = ("TagException".to_owned(), "Too many tags".to_owned());

    let e = kms
        .create_key()
        .set_tags(Some(numbered_tags("k", 51)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), too_many);

    let id = create_key_with(&kms, numbered_tags("k", 49)).await;
    let before = tags_of(&kms, &id).await;
    assert_eq!(before.len(), 49);
    // 49 + 2 new would be 51: refused as a whole, not one of the two added.
    let e = kms
        .tag_resource()
        .key_id(&id)
        .tags(tag("new1", "x"))
        .tags(tag("new2", "x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), too_many);
    assert_eq!(tags_of(&kms, &id).await, before);
    // One new and one overwritten makes exactly 50: allowed.
    kms.tag_resource()
        .key_id(&id)
        .tags(tag("new1", "x"))
        .tags(tag("k00", "changed"))
        .send()
        .await
        .unwrap();
    let now = tags_of(&kms, &id).await;
    assert_eq!(now.len(), 50);
    assert_eq!(now[0], ("k00".to_owned(), "changed".to_owned()));
    // At 50, overwriting is still allowed and adding is not.
    kms.tag_resource()
        .key_id(&id)
        .tags(tag("k01", "changed"))
        .send()
        .await
        .unwrap();
    let e = kms
        .tag_resource()
        .key_id(&id)
        .tags(tag("new2", "x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), too_many);
    assert_eq!(tags_of(&kms, &id).await.len(), 50);
}

#[tokio::test]
async fn aws_prefix_is_reserved() {
    let gw = Gateway::start();
    let kms = gw.client();
    let reserved = (
        "TagException".to_owned(),
        "Tags beginning with aws: are reserved".to_owned(),
    );
    let id = create_key_with(&kms, vec![tag("keep", "1")]).await;
    for key in ["aws:key1", "AWS:key1", "Aws:"] {
        let e = kms
            .create_key()
            .tags(tag(key, "v"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(error_of(&e), reserved, "CreateKey {key}");
        let e = kms
            .tag_resource()
            .key_id(&id)
            .tags(tag("fine", "v"))
            .tags(tag(key, "v"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(error_of(&e), reserved, "TagResource {key}");
        let e = kms
            .untag_resource()
            .key_id(&id)
            .tag_keys("keep")
            .tag_keys(key)
            .send()
            .await
            .unwrap_err();
        assert_eq!(error_of(&e), reserved, "UntagResource {key}");
    }
    // Nothing of the refused requests was applied.
    assert_eq!(tags_of(&kms, &id).await, pairs(&[("keep", "1")]));
    // Only the prefix is reserved.
    kms.tag_resource()
        .key_id(&id)
        .tags(tag("my:aws:key", "v"))
        .tags(tag("awsome", "v"))
        .send()
        .await
        .unwrap();
    assert_eq!(tags_of(&kms, &id).await.len(), 3);
}

#[tokio::test]
async fn duplicate_keys_in_one_request_are_refused() {
    let gw = Gateway::start();
    let kms = gw.client();
    let duplicate = ("TagException".to_owned(), "Duplicate tag keys".to_owned());
    let e = kms
        .create_key()
        .tags(tag("k", "1"))
        .tags(tag("k", "2"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), duplicate);

    let id = create_key_with(&kms, vec![tag("k", "0")]).await;
    let e = kms
        .tag_resource()
        .key_id(&id)
        .tags(tag("other", "1"))
        .tags(tag("k", "1"))
        .tags(tag("k", "1"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), duplicate);
    assert_eq!(tags_of(&kms, &id).await, pairs(&[("k", "0")]));
}

#[tokio::test]
async fn tag_lengths_are_validated_with_member_paths() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key_with(&kms, vec![tag("keep", "1")]).await;
    let long_key = "k".repeat(129);
    let long_value = "v".repeat(257);
    let prefix = "1 validation error detected: ";
    let cases: Vec<(&str, serde_json::Value, String)> = vec![
        (
            "TagResource",
            json!({"KeyId": id, "Tags": [{"TagKey": "ok", "TagValue": ""}, {"TagKey": long_key, "TagValue": "v"}]}),
            format!(
                "{prefix}Value '{long_key}' at 'tags.2.member.tagKey' failed to satisfy constraint: Member must have length less than or equal to 128"
            ),
        ),
        (
            "TagResource",
            json!({"KeyId": id, "Tags": [{"TagKey": "k", "TagValue": long_value}]}),
            format!(
                "{prefix}Value '{long_value}' at 'tags.1.member.tagValue' failed to satisfy constraint: Member must have length less than or equal to 256"
            ),
        ),
        (
            "TagResource",
            json!({"KeyId": id, "Tags": [{"TagKey": "", "TagValue": "v"}]}),
            format!(
                "{prefix}Value '' at 'tags.1.member.tagKey' failed to satisfy constraint: Member must have length greater than or equal to 1"
            ),
        ),
        (
            "TagResource",
            json!({"KeyId": id, "Tags": [{"TagKey": long_key, "TagValue": long_value}]}),
            format!(
                "2 validation errors detected: Value '{long_key}' at 'tags.1.member.tagKey' failed to satisfy constraint: Member must have length less than or equal to 128; Value '{long_value}' at 'tags.1.member.tagValue' failed to satisfy constraint: Member must have length less than or equal to 256"
            ),
        ),
        (
            "TagResource",
            json!({"KeyId": id}),
            format!(
                "{prefix}Value null at 'tags' failed to satisfy constraint: Member must not be null"
            ),
        ),
        (
            "TagResource",
            json!({"Tags": []}),
            format!(
                "{prefix}Value null at 'keyId' failed to satisfy constraint: Member must not be null"
            ),
        ),
        (
            "UntagResource",
            json!({"KeyId": id, "TagKeys": ["keep", long_key]}),
            format!(
                "{prefix}Value '{long_key}' at 'tagKeys.2.member' failed to satisfy constraint: Member must have length less than or equal to 128"
            ),
        ),
        (
            "UntagResource",
            json!({"KeyId": id}),
            format!(
                "{prefix}Value null at 'tagKeys' failed to satisfy constraint: Member must not be null"
            ),
        ),
        (
            "ListResourceTags",
            json!({"KeyId": id, "Limit": 0}),
            format!(
                "{prefix}Value '0' at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 1"
            ),
        ),
    ];
    for (op, body, message) in cases {
        let r = gw.raw(
            Some(&format!("TrentService.{op}")),
            body.to_string().as_bytes(),
            true,
        );
        assert_eq!(
            (r.status, r.error_type(), r.message()),
            (400, "ValidationException", message.as_str()),
            "{op} {body}"
        );
    }
    // Validation comes before the key lookup: an unknown key with a bad tag
    // is a ValidationException, not a NotFoundException.
    let r = gw.raw(
        Some("TrentService.TagResource"),
        json!({"KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab", "Tags": [{"TagKey": "", "TagValue": ""}]})
            .to_string()
            .as_bytes(),
        true,
    );
    assert_eq!(r.error_type(), "ValidationException");
    // A tag without its value is not a tag: refused, as a malformed request.
    let r = gw.raw(
        Some("TrentService.TagResource"),
        json!({"KeyId": id, "Tags": [{"TagKey": "k"}]})
            .to_string()
            .as_bytes(),
        true,
    );
    assert_eq!((r.status, r.error_type()), (400, "SerializationException"));
    // Exactly at the limits is fine.
    kms.tag_resource()
        .key_id(&id)
        .tags(tag(&"k".repeat(128), &"v".repeat(256)))
        .send()
        .await
        .unwrap();
    let tags = tags_of(&kms, &id).await;
    assert_eq!(tags.len(), 2);
    assert!(tags.iter().all(|(k, _)| k == "keep" || k.len() == 128));
}

#[tokio::test]
async fn list_resource_tags_pages() {
    let gw = Gateway::start();
    let kms = gw.client();
    // Keys outside [\u0020-\u00FF] must still page: the marker is opaque.
    let keys = ["b", "a", "ключ", "c", "é", "日本"];
    let id = create_key_with(&kms, keys.iter().map(|k| tag(k, k)).collect()).await;
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    let mut pages = 0;
    loop {
        let out = kms
            .list_resource_tags()
            .key_id(&id)
            .limit(4)
            .set_marker(marker.clone())
            .send()
            .await
            .unwrap();
        pages += 1;
        let page = out.tags.unwrap_or_default();
        assert!(page.len() <= 4);
        seen.extend(page.into_iter().map(|t| t.tag_key));
        if !out.truncated {
            assert!(out.next_marker.is_none());
            break;
        }
        marker = out.next_marker;
        assert!(marker.is_some());
    }
    assert_eq!(pages, 2);
    let mut expected: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    expected.sort();
    assert_eq!(seen, expected);

    // Limit 1 gives one tag per page, six pages.
    let mut marker: Option<String> = None;
    let mut one_by_one = Vec::new();
    loop {
        let out = kms
            .list_resource_tags()
            .key_id(&id)
            .limit(1)
            .set_marker(marker.clone())
            .send()
            .await
            .unwrap();
        let page = out.tags.unwrap_or_default();
        assert_eq!(page.len(), 1);
        one_by_one.push(page[0].tag_key.clone());
        if !out.truncated {
            break;
        }
        marker = out.next_marker;
    }
    assert_eq!(one_by_one, expected);

    // A marker that no NextMarker could have been is refused.
    let e = kms
        .list_resource_tags()
        .key_id(&id)
        .marker("not a marker")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e).0, "InvalidMarkerException");

    // The model allows Limit up to 1000; a page never holds more than 50.
    let full = create_key_with(&kms, numbered_tags("k", 50)).await;
    let out = kms
        .list_resource_tags()
        .key_id(&full)
        .limit(1000)
        .send()
        .await
        .unwrap();
    assert_eq!((out.tags.unwrap().len(), out.truncated), (50, false));
    let out = kms
        .list_resource_tags()
        .key_id(&full)
        .limit(49)
        .send()
        .await
        .unwrap();
    assert_eq!((out.tags.unwrap().len(), out.truncated), (49, true));
    let e = kms
        .list_resource_tags()
        .key_id(&full)
        .limit(1001)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "ValidationException".into(),
            "1 validation error detected: Value '1001' at 'limit' failed to satisfy constraint: Member must have value less than or equal to 1000".into()
        )
    );
}

#[tokio::test]
async fn update_key_description_shows_in_describe_key() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = kms
        .create_key()
        .description("first")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    kms.update_key_description()
        .key_id(&id)
        .description("second")
        .send()
        .await
        .unwrap();
    assert_eq!(description_of(&kms, &id).await, "second");
    // By ARN, on a disabled key, and to the empty description.
    kms.disable_key().key_id(&id).send().await.unwrap();
    kms.update_key_description()
        .key_id(key_arn(&id))
        .description("")
        .send()
        .await
        .unwrap();
    assert_eq!(description_of(&kms, &id).await, "");
    let longest = "d".repeat(8192);
    kms.update_key_description()
        .key_id(&id)
        .description(&longest)
        .send()
        .await
        .unwrap();
    assert_eq!(description_of(&kms, &id).await, longest);

    let too_long = "d".repeat(8193);
    let e = kms
        .update_key_description()
        .key_id(&id)
        .description(&too_long)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "ValidationException".into(),
            format!(
                "1 validation error detected: Value '{too_long}' at 'description' failed to satisfy constraint: Member must have length less than or equal to 8192"
            )
        )
    );
    let r = gw.raw(
        Some("TrentService.UpdateKeyDescription"),
        json!({"KeyId": id}).to_string().as_bytes(),
        true,
    );
    assert_eq!(
        (r.status, r.error_type(), r.message()),
        (
            400,
            "ValidationException",
            "1 validation error detected: Value null at 'description' failed to satisfy constraint: Member must not be null"
        )
    );
    assert_eq!(description_of(&kms, &id).await, longest);
}

#[tokio::test]
async fn tagging_a_key_pending_deletion_is_invalid_state() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = kms
        .create_key()
        .description("doomed")
        .tags(tag("a", "1"))
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    kms.schedule_key_deletion()
        .key_id(&id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let pending = (
        "KMSInvalidStateException".to_owned(),
        format!("{} is pending deletion.", key_arn(&id)),
    );
    let e = kms
        .tag_resource()
        .key_id(&id)
        .tags(tag("b", "2"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), pending);
    let e = kms
        .untag_resource()
        .key_id(&id)
        .tag_keys("a")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), pending);
    let e = kms
        .update_key_description()
        .key_id(&id)
        .description("saved")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_of(&e), pending);
    // Listing is allowed in every state; nothing changed.
    assert_eq!(tags_of(&kms, &id).await, pairs(&[("a", "1")]));
    assert_eq!(description_of(&kms, &id).await, "doomed");
    // Once deletion is cancelled the key is Disabled, and taggable again.
    kms.cancel_key_deletion().key_id(&id).send().await.unwrap();
    kms.tag_resource()
        .key_id(&id)
        .tags(tag("b", "2"))
        .send()
        .await
        .unwrap();
    assert_eq!(tags_of(&kms, &id).await, pairs(&[("a", "1"), ("b", "2")]));
}

#[tokio::test]
async fn unknown_keys_and_aliases_are_not_found() {
    let gw = Gateway::start();
    let kms = gw.client();
    let unknown = "1234abcd-12ab-34cd-56ef-1234567890ab";
    let e = kms
        .tag_resource()
        .key_id(unknown)
        .tags(tag("a", "1"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "NotFoundException".into(),
            format!("Key '{}' does not exist", key_arn(unknown))
        )
    );
    for e in [
        error_of(
            &kms.list_resource_tags()
                .key_id(unknown)
                .send()
                .await
                .unwrap_err(),
        ),
        error_of(
            &kms.untag_resource()
                .key_id(key_arn(unknown))
                .tag_keys("a")
                .send()
                .await
                .unwrap_err(),
        ),
        error_of(
            &kms.update_key_description()
                .key_id(unknown)
                .description("d")
                .send()
                .await
                .unwrap_err(),
        ),
    ] {
        assert_eq!(e.0, "NotFoundException");
    }

    // AWS takes only a key id or key ARN here: an alias, even one that
    // exists, does not name a key to tag.
    let id = create_key_with(&kms, vec![]).await;
    kms.create_alias()
        .alias_name("alias/app")
        .target_key_id(&id)
        .send()
        .await
        .unwrap();
    let e = kms
        .tag_resource()
        .key_id("alias/app")
        .tags(tag("a", "1"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "NotFoundException".into(),
            "Invalid keyId 'alias/app'".into()
        )
    );
    let alias_arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:alias/app");
    let e = kms
        .update_key_description()
        .key_id(&alias_arn)
        .description("d")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&e),
        (
            "NotFoundException".into(),
            format!("Invalid arn {alias_arn}")
        )
    );
    assert_eq!(tags_of(&kms, &id).await, vec![]);
    assert_eq!(description_of(&kms, &id).await, "");
}

#[tokio::test]
async fn tags_survive_a_restart() {
    let gw = Gateway::start();
    let kms = gw.client();
    let id = create_key_with(&kms, vec![tag("a", "1"), tag("b", "2")]).await;
    kms.tag_resource()
        .key_id(&id)
        .tags(tag("c", "3"))
        .tags(tag("a", "one"))
        .send()
        .await
        .unwrap();
    kms.untag_resource()
        .key_id(&id)
        .tag_keys("b")
        .send()
        .await
        .unwrap();
    kms.update_key_description()
        .key_id(&id)
        .description("kept")
        .send()
        .await
        .unwrap();

    let token = gw.stop();
    let gw = Gateway::start_on(token);
    let kms = gw.client();
    assert_eq!(tags_of(&kms, &id).await, pairs(&[("a", "one"), ("c", "3")]));
    assert_eq!(description_of(&kms, &id).await, "kept");
}
