//! Nothing acknowledged is ever lost (DESIGN.md decision 12): with the
//! token's storage on a full file system, every write either is refused with
//! a retryable 5xx and changes nothing, or succeeds and survives a restart.
//!
//! The token directory is a tmpfs of a few hundred KiB mounted for the test
//! (root only: without root the test fails, unless KMSGATE_TEST_NO_MOUNT=1
//! leaves it out, which scripts/test then reports; see common/disk.rs).

use crate::common::disk::{FULL_DISK_TESTS, NO_MOUNT, SmallDisk};
use crate::common::*;
use aws_sdk_kms::error::SdkError;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::Tag;

/// The HTTP status of an SDK call's outcome (200 for success).
fn status<T, E>(r: &Result<T, SdkError<E, aws_sdk_kms::config::http::HttpResponse>>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(e) => e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_never_loses_an_acknowledged_write() {
    full_disk_scenario(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearly_full_disk_never_loses_an_acknowledged_write() {
    // A few pages free: some writes fit, the next ones do not.
    full_disk_scenario(3).await;
}

/// Every full-disk test (here and in audit.rs) fails when it cannot mount
/// its disk, naming the opt-out; with KMSGATE_TEST_NO_MOUNT=1 it passes and
/// says it was left out. Each runs in a child process (this test binary)
/// whose `mount` fails as it does without CAP_SYS_ADMIN.
#[test]
fn a_full_disk_test_that_cannot_mount_fails_unless_left_out() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let mount = tmp.path().join("mount");
    std::fs::write(
        &mount,
        "#!/bin/sh\necho \"mount: $4: permission denied.\" >&2\nexit 32\n",
    )
    .unwrap();
    std::fs::set_permissions(&mount, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        tmp.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for test in FULL_DISK_TESTS {
        let run = |opt_out: bool| {
            let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
            cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
                .env("PATH", &path)
                .env_remove(NO_MOUNT);
            if opt_out {
                cmd.env(NO_MOUNT, "1");
            }
            let out = cmd.output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.success(), text)
        };
        let (ok, out) = run(false);
        assert!(!ok, "{test} passed although it could not mount:\n{out}");
        assert!(
            out.contains("cannot mount a small tmpfs")
                && out.contains("permission denied")
                && out.contains(&format!("{NO_MOUNT}=1")),
            "{test}:\n{out}"
        );
        let (ok, out) = run(true);
        assert!(ok, "{test} with {NO_MOUNT}=1:\n{out}");
        assert!(
            out.contains("1 passed") && out.contains(&format!("SKIPPED ({NO_MOUNT}=1)")),
            "{test}:\n{out}"
        );
    }
}

/// Every write operation on a token whose file system has `pages` pages
/// free. Each must answer 200 (and then survive a crash and restart) or a
/// retryable 5xx (and change nothing, before or after the restart).
async fn full_disk_scenario(pages: usize) {
    let mut disk = None;
    // Every encryption reserves its GCM budget on the token: a write too.
    let config = "[keys]\ngcm_reserve_block = 1\n";
    let token = Token::with_token_dir(config, |dir| {
        disk = SmallDisk::mount_or_opt_out(dir, 768);
    });
    let Some(disk) = disk else {
        return;
    };

    let gw = Gateway::start_on(token.clone());
    let kms = gw.client();
    let key = create_key(&kms).await;
    let other = create_key(&kms).await;
    let disabled = create_key(&kms).await;
    kms.disable_key().key_id(&disabled).send().await.unwrap();
    let pending = create_key(&kms).await;
    kms.schedule_key_deletion()
        .key_id(&pending)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let rotating = create_key(&kms).await;
    kms.enable_key_rotation()
        .key_id(&rotating)
        .send()
        .await
        .unwrap();
    kms.tag_resource()
        .key_id(&other)
        .tags(
            Tag::builder()
                .tag_key("old")
                .tag_value("v")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    kms.create_alias()
        .alias_name("alias/before")
        .target_key_id(&key)
        .send()
        .await
        .unwrap();
    kms.create_alias()
        .alias_name("alias/doomed")
        .target_key_id(&key)
        .send()
        .await
        .unwrap();
    let sealed = encrypt(&kms, &key, b"must survive").await;

    disk.fill_leaving(pages);

    let mut acked: Vec<&str> = Vec::new();
    let mut refused: Vec<&str> = Vec::new();
    let mut record = |name: &'static str, status: u16| {
        assert!(
            status == 200 || status >= 500,
            "{name} answered {status} on a full disk"
        );
        if status == 200 {
            acked.push(name);
        } else {
            refused.push(name);
        }
    };
    let r = kms
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(b"sealed on a full disk".to_vec()))
        .send()
        .await;
    let sealed_during = r.as_ref().ok().and_then(|o| o.ciphertext_blob.clone());
    record("Encrypt", status(&r));
    let r = kms.disable_key().key_id(&key).send().await;
    record("DisableKey", status(&r));
    let r = kms
        .tag_resource()
        .key_id(&key)
        .tags(Tag::builder().tag_key("k").tag_value("v").build().unwrap())
        .send()
        .await;
    record("TagResource", status(&r));
    let r = kms
        .update_key_description()
        .key_id(&key)
        .description("changed on a full disk")
        .send()
        .await;
    record("UpdateKeyDescription", status(&r));
    let r = kms.rotate_key_on_demand().key_id(&other).send().await;
    record("RotateKeyOnDemand", status(&r));
    let r = kms
        .create_alias()
        .alias_name("alias/during")
        .target_key_id(&key)
        .send()
        .await;
    record("CreateAlias", status(&r));
    let r = kms
        .update_alias()
        .alias_name("alias/before")
        .target_key_id(&other)
        .send()
        .await;
    record("UpdateAlias", status(&r));
    let r = kms.delete_alias().alias_name("alias/doomed").send().await;
    record("DeleteAlias", status(&r));
    let r = kms.create_key().send().await;
    let created_during = r
        .as_ref()
        .ok()
        .and_then(|o| o.key_metadata.as_ref())
        .map(|m| m.key_id.clone());
    record("CreateKey", status(&r));
    let r = kms.enable_key_rotation().key_id(&other).send().await;
    record("EnableKeyRotation", status(&r));
    let r = kms.enable_key().key_id(&disabled).send().await;
    record("EnableKey", status(&r));
    let r = kms.cancel_key_deletion().key_id(&pending).send().await;
    record("CancelKeyDeletion", status(&r));
    let r = kms.disable_key_rotation().key_id(&rotating).send().await;
    record("DisableKeyRotation", status(&r));
    let r = kms
        .untag_resource()
        .key_id(&other)
        .tag_keys("old")
        .send()
        .await;
    record("UntagResource", status(&r));
    let r = kms
        .schedule_key_deletion()
        .key_id(&other)
        .pending_window_in_days(7)
        .send()
        .await;
    record("ScheduleKeyDeletion", status(&r));
    eprintln!("{pages} pages free: acknowledged {acked:?}, refused {refused:?}");
    assert!(
        !refused.is_empty(),
        "nothing was refused: the disk was not full enough to test anything"
    );

    // A refused write changed nothing, even before a restart.
    let meta = key_metadata(&kms, &key).await;
    if !acked.contains(&"DisableKey") {
        assert_eq!(meta.key_state.unwrap().as_str(), "Enabled");
    }

    // Crash, make room, restart: everything acknowledged is there, and
    // nothing refused is.
    let token = gw.crash();
    disk.free();
    let gw = Gateway::start_on(token.clone());
    let kms = gw.client();
    let meta = key_metadata(&kms, &key).await;
    assert_eq!(
        meta.key_state.unwrap().as_str(),
        if acked.contains(&"DisableKey") {
            "Disabled"
        } else {
            "Enabled"
        }
    );
    assert_eq!(
        meta.description.as_deref().unwrap_or_default() == "changed on a full disk",
        acked.contains(&"UpdateKeyDescription")
    );
    let tags = kms
        .list_resource_tags()
        .key_id(&key)
        .send()
        .await
        .unwrap()
        .tags
        .unwrap_or_default();
    assert_eq!(!tags.is_empty(), acked.contains(&"TagResource"));
    let tags = kms
        .list_resource_tags()
        .key_id(&other)
        .send()
        .await
        .unwrap()
        .tags
        .unwrap_or_default();
    assert_eq!(tags.is_empty(), acked.contains(&"UntagResource"));
    let state = |m: aws_sdk_kms::types::KeyMetadata| m.key_state.unwrap().as_str().to_owned();
    assert_eq!(
        state(key_metadata(&kms, &disabled).await) == "Enabled",
        acked.contains(&"EnableKey")
    );
    assert_eq!(
        state(key_metadata(&kms, &pending).await) == "Disabled",
        acked.contains(&"CancelKeyDeletion")
    );
    let rotation = kms
        .get_key_rotation_status()
        .key_id(&rotating)
        .send()
        .await
        .unwrap();
    assert_eq!(
        !rotation.key_rotation_enabled,
        acked.contains(&"DisableKeyRotation")
    );
    let other_meta = key_metadata(&kms, &other).await;
    assert_eq!(
        other_meta.key_state.unwrap().as_str() == "PendingDeletion",
        acked.contains(&"ScheduleKeyDeletion")
    );
    let rotations = kms
        .list_key_rotations()
        .key_id(&other)
        .send()
        .await
        .unwrap()
        .rotations
        .unwrap_or_default();
    assert_eq!(
        rotations.len(),
        usize::from(acked.contains(&"RotateKeyOnDemand"))
    );
    let before = key_metadata(&kms, "alias/before").await;
    assert_eq!(
        before.key_id,
        if acked.contains(&"UpdateAlias") {
            other.clone()
        } else {
            key.clone()
        }
    );
    let during = kms.describe_key().key_id("alias/during").send().await;
    assert_eq!(during.is_ok(), acked.contains(&"CreateAlias"));
    let doomed = kms.describe_key().key_id("alias/doomed").send().await;
    assert_eq!(doomed.is_err(), acked.contains(&"DeleteAlias"));
    if let Some(id) = created_during {
        key_metadata(&kms, &id).await;
    }

    // The key's material is intact: the old ciphertext decrypts, and so
    // does one acknowledged on the full disk.
    if !acked.contains(&"DisableKey") {
        if let Some(blob) = sealed_during {
            assert_eq!(decrypt(&kms, blob).await, b"sealed on a full disk");
        }
        assert_eq!(decrypt(&kms, sealed).await, b"must survive");
    }
    drop(gw);
    let (ok, out, err) =
        token.run_cli(&["check-keys", "--config", &token.config().to_string_lossy()]);
    assert!(ok, "check-keys failed after the full disk:\n{out}\n{err}");
}
