//! A gateway starting while another destroys keys (issue 19, a finding of
//! the nemesis: a restart after a supervisor was killed failed, because its
//! load met a key object another gateway destroyed between the listing and
//! the read of its label).

use crate::common::*;

/// Gateway A destroys due keys (their deletion date passed on the test
/// clock) while gateway B starts on the same token, three rounds of 40
/// keys: B's start-up lists the key objects and then reads each one's
/// label, so A's destructions land in between. B must start every time and
/// serve; the keys A destroyed are gone for it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_starts_while_another_destroys_keys() {
    let token = Token::with_config("[keys]\nsync_interval_ms = 50\nscheduler_interval_ms = 20\n");
    let a = Gateway::start_on(token.clone());
    let kms = a.client();
    let keep = create_key(&kms).await;
    let mut days = 0;
    for round in 0..3 {
        let mut doomed = Vec::new();
        for _ in 0..40 {
            let id = create_key(&kms).await;
            kms.schedule_key_deletion()
                .key_id(&id)
                .pending_window_in_days(7)
                .send()
                .await
                .unwrap();
            doomed.push(id);
        }
        days += 8;
        token.set_clock_days_ahead(days);
        // A's scheduler destroys them from its next round on; B starts now.
        let b = Gateway::start_on(token.clone());
        let kb = b.client();
        assert_eq!(
            key_metadata(&kb, &keep).await.key_state,
            Some(aws_sdk_kms::types::KeyState::Enabled),
            "round {round}"
        );
        // Once A's scheduler is done, B finds none of them.
        for id in &doomed {
            let mut gone = false;
            for _ in 0..200 {
                match kb.describe_key().key_id(id).send().await {
                    Err(e) if error_of(&e).0 == "NotFoundException" => {
                        gone = true;
                        break;
                    }
                    _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                }
            }
            assert!(gone, "round {round}: {id} still there for B");
        }
        drop(b);
    }
}
