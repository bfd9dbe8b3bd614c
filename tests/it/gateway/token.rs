//! The token behind the gateway: what a restart keeps, what a second
//! gateway on the same token serves, what a saturated token does.

use crate::common::*;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::KeyState;

// ---------------------------------------------------------------- persistence

#[tokio::test]
async fn a_restart_keeps_keys_aliases_and_states_and_old_ciphertexts_decrypt() {
    let gw = Gateway::start();
    let kms = gw.client();
    let live = create_key(&kms).await;
    let off = create_key(&kms).await;
    let doomed = create_key(&kms).await;
    kms.create_alias()
        .alias_name("alias/live")
        .target_key_id(&live)
        .send()
        .await
        .unwrap();
    kms.disable_key().key_id(&off).send().await.unwrap();
    kms.schedule_key_deletion()
        .key_id(&doomed)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let blob = kms
        .encrypt()
        .key_id("alias/live")
        .plaintext(Blob::new("kept"))
        .encryption_context("a", "b")
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();

    let token = gw.stop();
    let gw = Gateway::start_on(token);
    let kms = gw.client();
    let state = |id: String| {
        let kms = kms.clone();
        async move { key_metadata(&kms, &id).await.key_state.unwrap() }
    };
    assert_eq!(state(live.clone()).await, KeyState::Enabled);
    assert_eq!(state(off.clone()).await, KeyState::Disabled);
    assert_eq!(state(doomed.clone()).await, KeyState::PendingDeletion);
    assert_eq!(state("alias/live".into()).await, KeyState::Enabled);
    let back = kms
        .decrypt()
        .ciphertext_blob(blob)
        .encryption_context("a", "b")
        .send()
        .await
        .unwrap();
    assert_eq!(back.plaintext.unwrap().as_ref(), b"kept");
    let keys = kms.list_keys().send().await.unwrap().keys.unwrap();
    assert_eq!(keys.len(), 3);
}

#[tokio::test]
async fn a_second_gateway_on_the_same_token_serves_keys_the_first_created() {
    let first = Gateway::start();
    let second = Gateway::start_on(first.token.clone());
    let id = create_key(&first.client()).await;
    first
        .client()
        .create_alias()
        .alias_name("alias/shared")
        .target_key_id(&id)
        .send()
        .await
        .unwrap();
    let blob = first
        .client()
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new("from one"))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    let back = second
        .client()
        .decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .unwrap();
    assert_eq!(back.plaintext.unwrap().as_ref(), b"from one");
    let m = second
        .client()
        .describe_key()
        .key_id("alias/shared")
        .send()
        .await
        .unwrap();
    assert_eq!(m.key_metadata.unwrap().key_id, id);
}

// ---------------------------------------------------------------- back-pressure

#[tokio::test]
async fn a_saturated_token_fails_requests_fast_and_recovers() {
    // One session and room for one waiting request: most of 64 concurrent
    // requests find the queue full, and a waiting one may pass its deadline.
    let token = Token::with_config("");
    let config = std::fs::read_to_string(token.config()).unwrap().replace(
        "[hsm]\n",
        "[hsm]\nsessions = 1\nqueue_depth = 1\nqueue_timeout_ms = 50\n",
    );
    std::fs::write(token.config(), config).unwrap();
    let gw = Gateway::start_on(token);
    let kms = gw.client();
    // The background sync shares the one session and queue place, so a
    // lone request may be refused too: retry as an SDK would.
    let mut id = None;
    for _ in 0..40 {
        match kms.create_key().send().await {
            Ok(o) => {
                id = Some(o.key_metadata.unwrap().key_id);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    let id = id.expect("CreateKey succeeds within 40 tries");
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let kms = kms.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            kms.generate_data_key()
                .key_id(id)
                .number_of_bytes(32)
                .send()
                .await
                .map_err(|e| error_of(&e).0)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(code) => {
                assert!(
                    code == "ThrottlingException" || code == "DependencyTimeoutException",
                    "unexpected {code}"
                );
                refused += 1;
            }
        }
    }
    eprintln!(
        "saturated token: {ok} of 64 concurrent requests served, {refused} refused at once \
         in {:?}",
        started.elapsed()
    );
    assert!(ok >= 1, "some requests are served");
    assert!(
        refused >= 1,
        "an overfull queue refuses instead of queueing forever"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // Once the burst is over, requests succeed again (within a few tries:
    // the background sync may hold the one queue place for a moment).
    let mut served = false;
    for _ in 0..40 {
        if kms
            .generate_data_key()
            .key_id(&id)
            .number_of_bytes(32)
            .send()
            .await
            .is_ok()
        {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(served, "requests are served again after the burst");
}
