//! Records a newer kmsgate writes, met by this one during a rolling upgrade
//! (issue 20, item 1; DESIGN.md decision 20): a record of a newer format,
//! with an unknown key spec or an unknown field, is never rewritten, never
//! read as absent, and never swept; every request that needs it answers a
//! retryable 5xx. And every record written today carries its format.
//!
//! The newer gateway's records are made from records this gateway wrote,
//! edited and written back as their next revision under the same label,
//! straight through PKCS#11 ([`crate::unreadable::inject`]); the token is
//! read the same way by a child process ([`dump`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aws_sdk_kms::types::{KeySpec, KeyUsageType, OriginType};
use base64::Engine;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};

use crate::common::*;
use crate::unreadable::{inject, user_session};

const FAST: &str = "[keys]\nsync_interval_ms = 100\nscheduler_interval_ms = 100\n";

/// What [`dump`] reads: every kmsgate data object (label, value), and the
/// labels of every key object.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Dump {
    data: Vec<(String, Vec<u8>)>,
    keys: Vec<String>,
}

impl Dump {
    /// The values under `label`, in a set (their order on the token is not
    /// stable).
    fn values(&self, label: &str) -> BTreeSet<Vec<u8>> {
        self.data
            .iter()
            .filter(|(l, _)| l == label)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The latest revision under `label`, as JSON.
    fn latest(&self, label: &str) -> serde_json::Value {
        self.data
            .iter()
            .filter(|(l, _)| l == label)
            .map(|(_, v)| serde_json::from_slice::<serde_json::Value>(v).unwrap())
            .max_by_key(|v| v["revision"].as_u64().unwrap_or(0))
            .unwrap_or_else(|| panic!("no record {label}"))
    }

    /// Labels of the key objects under `prefix`.
    fn key_objects(&self, prefix: &str) -> BTreeSet<String> {
        self.keys
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect()
    }
}

const DUMP_OUT: &str = "KMSGATE_TEST_DUMP: ";

/// Reads the token in a child process (see [`inject`] for why a child).
fn dump(token: &Token) -> Dump {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "forward_records::dump_child",
            "--ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env("SOFTHSM2_CONF", token.softhsm_conf())
        .env("KRYOPTIC_CONF", token.kryoptic_conf())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once(DUMP_OUT).map(|(_, dumped)| dumped))
        .unwrap_or_else(|| {
            panic!(
                "reading the token failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(line).unwrap()
}

#[test]
#[ignore = "run by dump(), in a process of its own"]
fn dump_child() {
    let (pkcs11, session) = user_session(false);
    let label_of = |attrs: &[Attribute]| {
        attrs.iter().find_map(|a| match a {
            Attribute::Label(l) => Some(String::from_utf8_lossy(l).into_owned()),
            _ => None,
        })
    };
    let mut data = Vec::new();
    for h in session
        .find_objects(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Application(b"kmsgate".to_vec()),
        ])
        .unwrap()
    {
        let attrs = session
            .get_attributes(h, &[AttributeType::Label, AttributeType::Value])
            .unwrap();
        let value = attrs.iter().find_map(|a| match a {
            Attribute::Value(v) => Some(v.clone()),
            _ => None,
        });
        data.push((label_of(&attrs).unwrap(), value.unwrap()));
    }
    let mut keys = Vec::new();
    for class in [
        ObjectClass::SECRET_KEY,
        ObjectClass::PRIVATE_KEY,
        ObjectClass::PUBLIC_KEY,
    ] {
        for h in session.find_objects(&[Attribute::Class(class)]).unwrap() {
            let attrs = session.get_attributes(h, &[AttributeType::Label]).unwrap();
            keys.extend(label_of(&attrs));
        }
    }
    data.sort();
    keys.sort();
    println!(
        "{DUMP_OUT}{}",
        serde_json::to_string(&Dump { data, keys }).unwrap()
    );
    drop(session);
    pkcs11.finalize().unwrap();
}

/// The next revision of the record under `label`, edited by `edit`, as a
/// newer gateway would write it.
fn newer_revision(
    on_token: &Dump,
    label: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> (String, Vec<u8>) {
    let mut v = on_token.latest(label);
    let revision = v["revision"].as_u64().unwrap_or(0);
    v["revision"] = (revision + 1).into();
    edit(&mut v);
    (label.to_owned(), serde_json::to_vec(&v).unwrap())
}

/// Sends one request and says how it was answered: (status, __type).
fn answer(gw: &Gateway, operation: &str, body: &serde_json::Value) -> (u16, String) {
    let r = gw.raw(
        Some(&format!("TrentService.{operation}")),
        body.to_string().as_bytes(),
        true,
    );
    (r.status, r.error_type().to_owned())
}

#[tokio::test]
async fn records_of_a_newer_gateway_are_never_rewritten_read_or_swept() {
    let token = Token::with_config(FAST);
    let gw = Gateway::start_on(token.clone());
    let kms = gw.client();
    let newer = create_key(&kms).await;
    let spec = create_key(&kms).await;
    let field = create_key(&kms).await;
    let plain = create_key(&kms).await;
    let doomed = create_key(&kms).await;
    let named = create_key(&kms).await;
    let foreign_keys = [&newer, &spec, &field];
    let mut sealed = BTreeMap::new();
    for k in foreign_keys {
        sealed.insert(k.clone(), encrypt(&kms, k, b"made before").await);
    }
    for (alias, target) in [("alias/understood", &plain), ("alias/newer", &named)] {
        kms.create_alias()
            .alias_name(alias)
            .target_key_id(target)
            .send()
            .await
            .unwrap();
    }
    // Due for destruction once the clock jumps: the newer-format key and an
    // understood key that the newer-format alias names (which must both
    // survive the scheduler), and an understood one (which shows the
    // scheduler ran).
    for k in [&newer, &named, &doomed] {
        kms.schedule_key_deletion()
            .key_id(k)
            .pending_window_in_days(7)
            .send()
            .await
            .unwrap();
    }
    let token = gw.stop();

    // What a newer gateway writes on top.
    let written = dump(&token);
    let key = |id: &str| format!("kmsgate/key/{id}");
    inject(
        &token,
        &[
            newer_revision(&written, &key(&newer), |v| v["format"] = 2.into()),
            newer_revision(&written, &key(&spec), |v| {
                v["key_spec"] = "ML_DSA_65".into()
            }),
            newer_revision(&written, &key(&field), |v| {
                v["replicas"] = serde_json::json!(["eu-west-1"]);
            }),
            newer_revision(&written, "kmsgate/alias/newer", |v| {
                v["format"] = 2.into();
            }),
        ],
    );
    let injected = dump(&token);
    let foreign_labels = [
        key(&newer),
        key(&spec),
        key(&field),
        "kmsgate/alias/newer".to_owned(),
    ];
    let watched: Vec<String> = foreign_labels
        .iter()
        .cloned()
        .chain(["kmsgate/alias/understood".to_owned()])
        .collect();

    let gw = Gateway::start_on(token.clone());
    let kms = gw.client();
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
            "Action": "kms:*",
            "Resource": "*"
        }]
    })
    .to_string();
    let grantee = format!("arn:aws:iam::{ACCOUNT}:user/tester");
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut refused = Vec::new();
    let mut expect_5xx = |gw: &Gateway, operation: &str, body: serde_json::Value| {
        let (status, kind) = answer(gw, operation, &body);
        if (status, kind.as_str()) != (500, "KMSInternalException") {
            refused.push(format!("{operation} {body} answered {status} {kind}"));
        }
    };
    for k in foreign_keys {
        let id = serde_json::json!(k);
        for (operation, body) in [
            (
                "TagResource",
                serde_json::json!({"KeyId": id, "Tags": [{"TagKey": "t", "TagValue": "v"}]}),
            ),
            (
                "UntagResource",
                serde_json::json!({"KeyId": id, "TagKeys": ["t"]}),
            ),
            ("DisableKey", serde_json::json!({"KeyId": id})),
            ("EnableKey", serde_json::json!({"KeyId": id})),
            ("RotateKeyOnDemand", serde_json::json!({"KeyId": id})),
            ("EnableKeyRotation", serde_json::json!({"KeyId": id})),
            (
                "ScheduleKeyDeletion",
                serde_json::json!({"KeyId": id, "PendingWindowInDays": 7}),
            ),
            ("CancelKeyDeletion", serde_json::json!({"KeyId": id})),
            (
                "PutKeyPolicy",
                serde_json::json!({"KeyId": id, "PolicyName": "default", "Policy": policy}),
            ),
            (
                "CreateGrant",
                serde_json::json!({"KeyId": id, "GranteePrincipal": grantee, "Operations": ["Decrypt"]}),
            ),
            (
                "UpdateKeyDescription",
                serde_json::json!({"KeyId": id, "Description": "rewritten"}),
            ),
            (
                "CreateAlias",
                serde_json::json!({"AliasName": format!("alias/onto-{k}"), "TargetKeyId": id}),
            ),
            (
                "UpdateAlias",
                serde_json::json!({"AliasName": "alias/understood", "TargetKeyId": id}),
            ),
            ("DescribeKey", serde_json::json!({"KeyId": id})),
            ("GetKeyPolicy", serde_json::json!({"KeyId": id})),
            ("ListResourceTags", serde_json::json!({"KeyId": id})),
            (
                "Encrypt",
                serde_json::json!({"KeyId": id, "Plaintext": b64(b"new")}),
            ),
            (
                "Decrypt",
                serde_json::json!({"CiphertextBlob": b64(sealed[k.as_str()].as_ref())}),
            ),
        ] {
            expect_5xx(&gw, operation, body);
        }
    }
    for (operation, body) in [
        (
            "CreateAlias",
            serde_json::json!({"AliasName": "alias/newer", "TargetKeyId": plain}),
        ),
        (
            "UpdateAlias",
            serde_json::json!({"AliasName": "alias/newer", "TargetKeyId": doomed}),
        ),
        (
            "DeleteAlias",
            serde_json::json!({"AliasName": "alias/newer"}),
        ),
        ("DescribeKey", serde_json::json!({"KeyId": "alias/newer"})),
        ("ListAliases", serde_json::json!({})),
    ] {
        expect_5xx(&gw, operation, body);
    }
    assert!(
        refused.is_empty(),
        "not answered 500 KMSInternalException:\n{}",
        refused.join("\n")
    );
    // What this gateway understands it still serves, and a foreign key
    // still exists.
    assert_eq!(key_metadata(&kms, "alias/understood").await.key_id, plain);
    let listed = list_key_ids(&kms).await;
    for k in foreign_keys {
        assert!(listed.contains(k), "ListKeys lists {k}: {listed:?}");
    }

    // The scheduler, with every deletion due: the understood key goes, the
    // newer-format key stays.
    token.set_clock_days_ahead(40);
    let deadline = Instant::now() + Duration::from_secs(90);
    while kms.describe_key().key_id(&doomed).send().await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the scheduler never deleted {doomed}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A few more rounds.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Logged once per record, not per request.
    let log = gw.log();
    for label in &foreign_labels {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("written by a newer kmsgate") && l.contains(label.as_str()))
            .collect();
        assert_eq!(lines.len(), 1, "{label}: {lines:#?}");
        assert!(lines[0].contains("understands"), "{}", lines[0]);
        assert!(lines[0].contains("WARN"), "{}", lines[0]);
    }
    let token = gw.stop();

    let config = token.config().to_string_lossy().into_owned();
    let (_, out, err) = token.run_cli(&["check-keys", "--config", &config]);
    for k in foreign_keys {
        assert!(
            !out.contains(&format!("orphan key object kmsgate/key/{k}")),
            "check-keys calls the versions of {k} orphans:\n{out}\n{err}"
        );
    }

    let after = dump(&token);
    for label in &watched {
        assert_eq!(
            after.values(label),
            injected.values(label),
            "{label} changed on the token"
        );
    }
    for k in foreign_keys.into_iter().chain([&named]) {
        let versions = injected.key_objects(&format!("kmsgate/key/{k}/"));
        assert!(!versions.is_empty(), "{k} has version objects");
        assert_eq!(
            after.key_objects(&format!("kmsgate/key/{k}/")),
            versions,
            "the version objects of {k}"
        );
    }
    assert!(
        after
            .key_objects(&format!("kmsgate/key/{doomed}/"))
            .is_empty(),
        "the understood due key was destroyed"
    );
}

#[tokio::test]
async fn every_record_written_today_carries_its_format() {
    let gw = Gateway::start();
    let kms = gw.client();
    let mut keys = vec![create_key(&kms).await];
    for (spec, usage) in [
        (KeySpec::Hmac256, KeyUsageType::GenerateVerifyMac),
        (KeySpec::EccNistP256, KeyUsageType::SignVerify),
        (KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt),
    ] {
        keys.push(create_key_of(&kms, spec, usage).await);
    }
    // A key with every optional part of its record set.
    let full = &keys[0];
    kms.enable_key_rotation().key_id(full).send().await.unwrap();
    kms.rotate_key_on_demand()
        .key_id(full)
        .send()
        .await
        .unwrap();
    kms.tag_resource()
        .key_id(full)
        .tags(
            aws_sdk_kms::types::Tag::builder()
                .tag_key("k")
                .tag_value("v")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    kms.create_grant()
        .key_id(full)
        .grantee_principal(format!("arn:aws:iam::{ACCOUNT}:user/tester"))
        .operations(aws_sdk_kms::types::GrantOperation::Decrypt)
        .send()
        .await
        .unwrap();
    kms.schedule_key_deletion()
        .key_id(&keys[1])
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    // An imported key, with its import state.
    let external = kms
        .create_key()
        .origin(OriginType::External)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    kms.get_parameters_for_import()
        .key_id(&external)
        .wrapping_algorithm(aws_sdk_kms::types::AlgorithmSpec::RsaesOaepSha1)
        .wrapping_key_spec(aws_sdk_kms::types::WrappingKeySpec::Rsa2048)
        .send()
        .await
        .unwrap();
    keys.push(external);
    kms.create_alias()
        .alias_name("alias/today")
        .target_key_id(&keys[2])
        .send()
        .await
        .unwrap();
    let token = gw.stop();

    let on_token = dump(&token);
    let mut kinds = BTreeMap::new();
    for (label, value) in &on_token.data {
        let kind = if label.starts_with("kmsgate/key/") {
            "key"
        } else if label.starts_with("kmsgate/alias/") {
            "alias"
        } else {
            panic!("a kind of record this test does not know: {label}; check its format here")
        };
        *kinds.entry(kind).or_insert(0) += 1;
        let v: serde_json::Value = serde_json::from_slice(value).unwrap();
        assert_eq!(v["format"], 1, "{label}: {v}");
    }
    for k in &keys {
        let v = on_token.latest(&format!("kmsgate/key/{k}"));
        assert_eq!(v["format"], 1, "{v}");
    }
    assert!(
        on_token.latest(&format!("kmsgate/key/{}", keys[0]))["grants"]
            .as_array()
            .is_some_and(|g| !g.is_empty())
    );
    assert!(on_token.latest(&format!("kmsgate/key/{}", keys[4]))["import"].is_object());
    assert_eq!(kinds.get("key"), Some(&keys.len()), "{kinds:?}");
    assert_eq!(kinds.get("alias"), Some(&1), "{kinds:?}");
}

/// [`inject`] while gateways serve the token: holding the token lock that
/// every kmsgate process takes around its SoftHSM2 calls
/// (docs/operations.md, "Several gateways, one token"), so that no gateway
/// reads a record file half-written.
fn inject_while_serving(token: &Token, records: &[(String, Vec<u8>)]) {
    let dir = token.path().join("tokens");
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(name))
            .unwrap()
    };
    let (turnstile, lock) = (
        open(".kmsgate-token.turnstile"),
        open(".kmsgate-token.lock"),
    );
    turnstile.lock().unwrap();
    lock.lock().unwrap();
    inject(token, records);
    lock.unlock().unwrap();
    turnstile.unlock().unwrap();
}

#[tokio::test]
async fn a_serving_gateway_meets_a_newer_record_at_its_next_write_or_sync() {
    let token = Token::with_config(FAST);
    let gw = Gateway::start_on(token.clone());
    let kms = gw.client();
    let written_to = create_key(&kms).await;
    let synced = create_key(&kms).await;
    let sealed = encrypt(&kms, &synced, b"made before").await;
    let written = dump(&token);
    let labels = [
        format!("kmsgate/key/{written_to}"),
        format!("kmsgate/key/{synced}"),
    ];
    let newer: Vec<(String, Vec<u8>)> = labels
        .iter()
        .map(|l| newer_revision(&written, l, |v| v["format"] = 2.into()))
        .collect();
    inject_while_serving(&token, &newer);
    let injected = dump(&token);

    // The commit protocol reads the token, not the cache: the first write
    // meets the newer revision, and the cache holds it from then on.
    let tag = serde_json::json!({"KeyId": written_to, "Tags": [{"TagKey": "t", "TagValue": "v"}]});
    assert_eq!(
        answer(&gw, "TagResource", &tag),
        (500, "KMSInternalException".to_owned())
    );
    let describe = |k: &str| serde_json::json!({"KeyId": k});
    assert_eq!(
        answer(&gw, "DescribeKey", &describe(&written_to)),
        (500, "KMSInternalException".to_owned())
    );
    // A key nobody writes to: the sync finds its newer revision (the
    // injection moved no change marker, so by the full sync that runs
    // every 60 rounds regardless).
    let deadline = Instant::now() + Duration::from_secs(60);
    while answer(&gw, "DescribeKey", &describe(&synced)).0 == 200 {
        assert!(
            Instant::now() < deadline,
            "the sync never took the newer record of {synced}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        answer(&gw, "DescribeKey", &describe(&synced)),
        (500, "KMSInternalException".to_owned())
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(sealed.as_ref());
    for (operation, body) in [
        ("Decrypt", serde_json::json!({"CiphertextBlob": b64})),
        ("DisableKey", describe(&synced)),
        ("TagResource", tag),
    ] {
        assert_eq!(
            answer(&gw, operation, &body),
            (500, "KMSInternalException".to_owned()),
            "{operation}"
        );
    }
    let log = gw.log();
    for label in &labels {
        let lines = log
            .lines()
            .filter(|l| l.contains("written by a newer kmsgate") && l.contains(label.as_str()))
            .count();
        assert_eq!(lines, 1, "{label}:\n{log}");
    }
    let token = gw.stop();
    let after = dump(&token);
    for label in &labels {
        assert_eq!(after.values(label), injected.values(label), "{label}");
    }
}
