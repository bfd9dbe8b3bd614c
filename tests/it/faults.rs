//! The gateway on a failing token: kmsgate loads faulty-pkcs11, which
//! forwards to SoftHSM2 and fails or stalls the calls a test names (see
//! tests/it/common/faulty.rs and faulty-pkcs11/README.md).

use std::time::{Duration, Instant};

use crate::common::*;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;

const GENERATE_RANDOM: &str = "TrentService.GenerateRandom";
const RANDOM_32: &[u8] = br#"{"NumberOfBytes":32}"#;

fn generate_random(gw: &Gateway) -> RawResponse {
    gw.raw(Some(GENERATE_RANDOM), RANDOM_32, true)
}

fn assert_random_32(r: &RawResponse) {
    assert_eq!(r.status, 200, "{r:?}");
    let b64 = r.body["Plaintext"].as_str().expect("Plaintext");
    // 32 bytes are 44 characters of padded base64.
    assert_eq!(b64.len(), 44, "{r:?}");
}

#[tokio::test]
async fn without_rules_the_faulty_module_passes_every_call_through() {
    let gw = Gateway::start_faulty();
    let faults = gw.faults();
    let kms = gw.client();

    let id = create_key(&kms).await;
    let ct = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new("through the faulty module"))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap();
    let pt = kms
        .decrypt()
        .ciphertext_blob(ct)
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap();
    assert_eq!(pt.as_ref(), b"through the faulty module");

    let dk = kms
        .generate_data_key()
        .key_id(&id)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    let plain = dk.plaintext.unwrap();
    assert_eq!(plain.as_ref().len(), 32);
    let again = kms
        .decrypt()
        .ciphertext_blob(dk.ciphertext_blob.unwrap())
        .send()
        .await
        .unwrap()
        .plaintext
        .unwrap();
    assert_eq!(again.as_ref(), plain.as_ref());

    let log = faults.log();
    // The gateway and its read-back helper each initialise the module once;
    // nothing is re-initialised.
    assert!(faults.count("call C_Initialize") >= 1, "{log}");
    assert_eq!(faults.count("call C_Finalize"), 0, "{log}");
    assert_eq!(faults.count("fail"), 0, "{log}");
    assert_eq!(faults.count("stall"), 0, "{log}");
}

#[test]
fn a_failed_generate_random_answers_500_once_and_the_next_request_succeeds() {
    let gw = Gateway::start_faulty();
    let faults = gw.faults();
    assert_random_32(&generate_random(&gw));

    faults.set("C_GenerateRandom fail 0x30 once");
    let failed = generate_random(&gw);
    assert_eq!(failed.status, 500, "{failed:?}");
    assert_eq!(
        faults.count("fail C_GenerateRandom 0x30"),
        1,
        "{}",
        faults.log()
    );

    assert_random_32(&generate_random(&gw));
    assert_random_32(&generate_random(&gw));
    assert_eq!(faults.count("fail C_GenerateRandom"), 1);

    // Writing the same rule again arms it again.
    faults.set("C_GenerateRandom fail 0x30 once");
    assert_eq!(generate_random(&gw).status, 500);
    assert_random_32(&generate_random(&gw));
    assert_eq!(faults.count("fail C_GenerateRandom"), 2);
}

#[test]
fn a_stalled_generate_random_answers_late_and_then_succeeds() {
    let gw = Gateway::start_faulty();
    let faults = gw.faults();
    faults.set("C_GenerateRandom stall 1s once");

    let start = Instant::now();
    let r = generate_random(&gw);
    let took = start.elapsed();
    assert_random_32(&r);
    assert!(took >= Duration::from_millis(900), "took {took:?}");
    assert_eq!(
        faults.count("stall C_GenerateRandom"),
        1,
        "{}",
        faults.log()
    );

    // Only one call stalls.
    assert_random_32(&generate_random(&gw));
    assert_eq!(faults.count("stall C_GenerateRandom"), 1);
}

#[test]
fn rules_may_hold_for_a_while_or_until_removed_and_unknown_lines_are_logged() {
    let gw = Gateway::start_faulty();
    let faults = gw.faults();

    faults.set("# a comment\nC_GenerateRandom fail 5 forever # CKR_GENERAL_ERROR\nno such rule");
    assert_eq!(generate_random(&gw).status, 500);
    assert_eq!(generate_random(&gw).status, 500);
    assert_eq!(
        faults.count("fail C_GenerateRandom 0x5"),
        2,
        "{}",
        faults.log()
    );
    assert_eq!(faults.count("ignore line 3:"), 1, "{}", faults.log());
    faults.clear();
    assert_random_32(&generate_random(&gw));

    faults.set("* fail 0x30 for 1s");
    assert_eq!(generate_random(&gw).status, 500);
    std::thread::sleep(Duration::from_secs(1));
    assert_random_32(&generate_random(&gw));
    // Which call met the fault first depends on what the gateway was doing
    // (after the re-initialisations above, opening a session).
    assert!(
        faults
            .log()
            .lines()
            .any(|l| l.starts_with("fail C_") && l.ends_with(" 0x30")),
        "{}",
        faults.log()
    );
}

#[test]
fn a_call_stalled_until_further_notice_goes_on_when_the_rule_is_removed() {
    let gw = Gateway::start_faulty();
    let faults = gw.faults();
    faults.set("C_GenerateRandom stall forever");

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| tx.send(generate_random(&gw)).unwrap());
        assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
        assert_eq!(
            faults.count("stall C_GenerateRandom"),
            1,
            "{}",
            faults.log()
        );
        faults.clear();
        let r = rx.recv_timeout(Duration::from_secs(5)).expect("answered");
        assert_random_32(&r);
    });
}
