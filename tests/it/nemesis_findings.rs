//! What the 30-minute nemesis run of issue 19 found, as black-box tests of
//! their own (docs/testing.md, "Nemesis"): a change that another gateway
//! built on before it settled is acknowledged, not refused, and a write
//! whose listing misses a record this gateway knows is never answered
//! NotFoundException.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::common::*;
use crate::missing_version::object_files;
use aws_sdk_kms::error::ProvideErrorMetadata;

const WAIT: Duration = Duration::from_secs(30);

/// The HTTP status of a failed request.
fn status<E>(
    e: &aws_sdk_kms::error::SdkError<E, aws_sdk_kms::config::http::HttpResponse>,
) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// A rule file and a log of faulty-pkcs11 for one gateway alone.
fn own_faults(token: &Token) -> (String, String) {
    let dir = token.path();
    (
        dir.join("faults-b").display().to_string(),
        dir.join("faults-b.log").display().to_string(),
    )
}

/// Issue 19, finding 1: gateway A's change made its revision; before A
/// settled it (its listings held for seconds), gateway B read that revision
/// as the latest, made its own on top and removed A's. A then took B's
/// revision for a rival, tried again, and refused its own change as already
/// made: the nemesis saw ScheduleKeyDeletion answered "is pending deletion"
/// on a key that only it had scheduled, and CreateAlias is the same shape.
/// The change is in force (B's revision carries it), so A must acknowledge
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_another_gateway_built_on_before_it_settled_is_acknowledged() {
    let token = Token::with_faulty_hsm(
        "call_timeout_ms = 60000\nread_back = \"session\"",
        "[keys]\nsync_interval_ms = 600000\nscheduler_interval_ms = 600000\n",
    );
    let a = Gateway::start_faulty_on(token.clone());
    let (control_b, log_b) = own_faults(&token);
    let b = Gateway::start_faulty_on_with_env(
        token.clone(),
        &[
            ("FAULTY_PKCS11_CONTROL", &control_b),
            ("FAULTY_PKCS11_LOG", &log_b),
        ],
    );
    let (kms_a, kms_b) = (a.client(), b.client());
    let first = create_key(&kms_a).await;
    let second = create_key(&kms_b).await;
    let alias = "alias/carried";
    let label = format!("kmsgate/{alias}");

    // Every listing of gateway A waits 3 s: its CreateAlias makes its
    // revision, then waits in the read-back and again before settling.
    a.faults().set("C_FindObjectsInit stall 3s forever");
    let create = {
        let kms_a = kms_a.clone();
        let first = first.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = kms_a
                .create_alias()
                .alias_name(alias)
                .target_key_id(&first)
                .send()
                .await;
            (r, started.elapsed())
        })
    };
    let start = Instant::now();
    while objects_labelled(&token, &label) == 0 {
        assert!(
            start.elapsed() < WAIT,
            "gateway A made no alias record in {WAIT:?}; log:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A's revision exists and is not settled: B builds on it.
    kms_b
        .update_alias()
        .alias_name(alias)
        .target_key_id(&second)
        .send()
        .await
        .expect("UpdateAlias through gateway B");
    let settled_early = create.is_finished();
    let (created, took) = create.await.unwrap();
    a.faults().clear();
    assert!(
        !settled_early,
        "gateway A settled before gateway B's change ({took:?}): the test proves nothing"
    );
    if let Err(e) = &created {
        panic!(
            "CreateAlias through gateway A, whose change is in force (gateway B moved the \
             alias it made), answered {:?} {:?}: {:?}; log:\n{}",
            status(e),
            e.code(),
            e.message(),
            a.log()
        );
    }
    // One record, naming what B's change made of it.
    let aliases = kms_a.list_aliases().send().await.unwrap();
    let target = aliases
        .aliases()
        .iter()
        .find(|x| x.alias_name() == Some(alias))
        .and_then(|x| x.target_key_id().map(str::to_owned));
    assert_eq!(target.as_deref(), Some(second.as_str()));
    assert_eq!(
        objects_labelled(&token, &label),
        1,
        "{}",
        list_objects(&token)
    );
}

/// Issue 19, finding 2: a worker's SoftHSM2 missed a key's record for a
/// while (the token directory was unreadable, and SoftHSM2 drops what it
/// cannot read), and EnableKeyRotation on that key, which the worker had
/// served a moment before, answered NotFoundException: a write believed one
/// listing where a read lists again and has the library read its storage
/// afresh. Here the record's file is away for about a second; the
/// re-initialisation that the second miss asks for is held until it is
/// back. A write in that second may fail, but only with a retryable 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_listing_misses_a_known_key_is_never_not_found() {
    let token = Token::with_faulty_hsm("call_timeout_ms = 30000", "");
    let gw = Gateway::start_faulty_on(token.clone());
    let kms = gw.client();
    let tokens = token.path().join("tokens");
    let before = object_files(&tokens);
    let key = create_key(&kms).await;
    // The key's version object, then its record (write.rs, create_key).
    let mut created: Vec<(PathBuf, SystemTime)> = object_files(&tokens)
        .into_iter()
        .filter(|(p, _)| !before.contains_key(p))
        .collect();
    created.sort_by_key(|(_, t)| *t);
    assert_eq!(created.len(), 2, "CreateKey wrote {created:?}");
    let record_file = created[1].0.clone();
    kms.describe_key().key_id(&key).send().await.unwrap();

    gw.faults().set("C_Initialize stall 3s once");
    let hidden = token.path().join("hidden.object");
    std::fs::rename(&record_file, &hidden).unwrap();
    let tag = {
        let kms = kms.clone();
        let key = key.clone();
        tokio::spawn(async move {
            kms.tag_resource()
                .key_id(&key)
                .tags(
                    aws_sdk_kms::types::Tag::builder()
                        .tag_key("finding")
                        .tag_value("2")
                        .build()
                        .unwrap(),
                )
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    std::fs::rename(&hidden, &record_file).unwrap();
    if let Err(e) = tag.await.unwrap() {
        assert!(
            matches!(status(&e), Some(500..=599)),
            "TagResource while the key's record was away for a second: {:?} {:?} {:?}; log:\n{}",
            status(&e),
            e.code(),
            e.message(),
            gw.log()
        );
    }
    gw.faults().clear();

    // The key is served and changed again without a restart.
    let start = Instant::now();
    loop {
        let r = kms
            .tag_resource()
            .key_id(&key)
            .tags(
                aws_sdk_kms::types::Tag::builder()
                    .tag_key("finding")
                    .tag_value("2")
                    .build()
                    .unwrap(),
            )
            .send()
            .await;
        match r {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    matches!(status(&e), Some(500..=599)),
                    "TagResource after the record came back: {:?} {:?}",
                    status(&e),
                    e.code()
                );
                assert!(start.elapsed() < WAIT, "{}", gw.log());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let tags = kms.list_resource_tags().key_id(&key).send().await.unwrap();
    assert!(
        tags.tags()
            .iter()
            .any(|t| t.tag_key() == "finding" && t.tag_value() == "2"),
        "{tags:?}"
    );
}
