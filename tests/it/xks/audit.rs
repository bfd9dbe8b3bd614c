//! Every XKS request, accepted or refused, is audited in the gateway's
//! chain: the store, kmsRequestId, kmsOperation, awsPrincipalArn,
//! kmsKeyArn, kmsViaService, the external key and the kmsgate key and
//! version, the access key id, the status and duration; a plaintext, an
//! AAD or a ciphertext metadata value never. `kmsgate audit verify` still
//! passes.

use serde_json::{Value, json};

use super::client::{Sealed, XksClient, b64};
use super::*;

#[tokio::test]
async fn accepted_and_refused_xks_requests_are_audited_without_secrets() {
    let token = Token::with_config(&usual_store());
    let audit = token.path().join("audit.jsonl");
    let mut config = std::fs::read_to_string(token.config()).unwrap();
    config.push_str(&format!("\n[audit]\npath = \"{}\"\n", audit.display()));
    std::fs::write(token.config(), config).unwrap();
    // The token (and its directory, with the audit file) outlives the
    // gateway.
    let gw = start_on(token.clone());
    let kms = gw.client();
    let id = key_with_alias(&kms, "alias/xks-both").await;
    let c = client(&gw, "/xks");

    let plaintext = b"AUDIT-PLAINTEXT-never-logged";
    let aad = b"AUDIT-AAD-never-logged";
    let mut body = XksClient::encrypt_body(plaintext, Some(aad), true);
    body["requestMetadata"]["kmsRequestId"] = "kms-request-accepted".into();
    let r = c.post("/keys/ek-both/encrypt", &body);
    let sealed = Sealed::of(&r);
    // Refused: a usage the store does not allow, and a bad signature.
    let mut refused = XksClient::encrypt_body(b"x", None, false);
    refused["requestMetadata"]["kmsRequestId"] = "kms-request-refused".into();
    c.post("/keys/ek-none/encrypt", &refused)
        .assert_error(404, "KeyNotFoundException");
    let mut wrong = c.clone();
    wrong.secret = "another0Secret0123456789abcdefghijklmnopqrstu".into();
    wrong
        .health()
        .assert_error(401, "AuthenticationFailedException");
    let d = c.decrypt("ek-both", &sealed, Some(aad));
    d.assert_ok();
    drop(gw);

    let text = std::fs::read_to_string(&audit).unwrap();
    for secret in [
        b64(plaintext),
        b64(aad),
        b64(&sealed.metadata),
        b64(&sealed.ciphertext),
        String::from_utf8_lossy(plaintext).into_owned(),
        String::from_utf8_lossy(aad).into_owned(),
    ] {
        assert!(!text.contains(&secret), "{secret} is in the audit log");
    }
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["eventSource"] == "kms-xks-proxy")
        .collect();
    let find = |f: &dyn Fn(&Value) -> bool| -> Value {
        records
            .iter()
            .find(|v| f(v))
            .cloned()
            .unwrap_or_else(|| panic!("no such record in {records:#?}"))
    };
    let enc = find(&|v| v["requestParameters"]["kmsRequestId"] == "kms-request-accepted");
    assert_eq!(enc["eventName"], "Encrypt");
    assert_eq!(enc["httpStatus"], 200);
    assert_eq!(enc["awsRegion"], XKS_REGION);
    assert_eq!(enc["userIdentity"]["accessKeyId"], XKS_ACCESS_KEY);
    let p = &enc["requestParameters"];
    assert_eq!(p["xksStore"], "main");
    assert_eq!(p["externalKeyId"], "ek-both");
    assert_eq!(p["kmsOperation"], "Encrypt");
    assert_eq!(p["awsPrincipalArn"], "arn:aws:iam::123456789012:user/Alice");
    assert_eq!(p["kmsViaService"], "ebs");
    assert!(p["kmsKeyArn"].as_str().unwrap().starts_with("arn:aws:kms:"));
    assert_eq!(enc["additionalEventData"]["keyId"], id.as_str());
    assert_eq!(enc["additionalEventData"]["keyVersion"], 1);
    assert_eq!(enc["resources"][0]["ARN"], key_arn(&id));
    assert!(enc["durationMicros"].as_u64().unwrap() > 0);

    let no = find(&|v| v["requestParameters"]["kmsRequestId"] == "kms-request-refused");
    assert_eq!(no["errorCode"], "KeyNotFoundException");
    assert_eq!(no["httpStatus"], 404);
    let unsigned = find(&|v| v["errorCode"] == "AuthenticationFailedException");
    assert_eq!(unsigned["eventName"], "GetHealthStatus");
    assert_eq!(unsigned["httpStatus"], 401);
    assert_eq!(unsigned["userIdentity"], Value::Null);
    let dec = find(&|v| v["eventName"] == "Decrypt");
    assert_eq!(
        dec["additionalEventData"],
        json!({"keyId": id, "keyVersion": 1})
    );

    let out = std::process::Command::new(kmsgate_bin())
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// DESIGN.md decision 22: a request that has reached the token finishes,
/// and is audited, whatever the client does. Here AWS KMS's connection
/// goes away while the token is still encrypting.
#[tokio::test]
async fn a_client_that_hangs_up_mid_encrypt_still_gets_its_request_audited() {
    let token = Token::with_faulty_config(&usual_store());
    let audit = token.path().join("audit.jsonl");
    let mut config = std::fs::read_to_string(token.config()).unwrap();
    config.push_str(&format!("\n[audit]\npath = \"{}\"\n", audit.display()));
    std::fs::write(token.config(), config).unwrap();
    let gw = Gateway::start_faulty_on_with_env(token.clone(), &[(XKS_SECRET_ENV, XKS_SECRET)]);
    key_with_alias(&gw.client(), "alias/xks-both").await;
    let c = client(&gw, "/xks");
    let faults = gw.faults();
    faults.set("C_Encrypt stall forever");
    let mut body = XksClient::encrypt_body(b"abandoned", None, false);
    body["requestMetadata"]["kmsRequestId"] = "kms-request-abandoned".into();
    let hung = {
        let c = c.clone();
        std::thread::spawn(move || {
            // A read timeout far shorter than the stall: the client gives
            // up and closes its connection.
            c.post_with_timeout(
                "/keys/ek-both/encrypt",
                &body,
                std::time::Duration::from_millis(300),
            )
        })
    };
    assert!(faults.wait_for_count("stall C_Encrypt", 1, std::time::Duration::from_secs(20)) >= 1);
    let answered = hung.join().unwrap();
    assert_eq!(answered.status, 0, "the client left before the answer");
    faults.clear();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let record = loop {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("kms-request-abandoned")) {
            break serde_json::from_str::<Value>(line).unwrap();
        }
        assert!(
            std::time::Instant::now() < until,
            "no record of the abandoned request"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(record["eventName"], "Encrypt");
    assert_eq!(record["httpStatus"], 200, "{record}");
    assert_eq!(record["additionalEventData"]["keyVersion"], 1);
    drop(gw);
    let out = std::process::Command::new(kmsgate_bin())
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
